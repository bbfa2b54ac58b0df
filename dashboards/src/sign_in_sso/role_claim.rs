//! From the provider's roles claim to Tollgate grants: each claim value is
//! looked up in `[auth.oidc.grants]`, or, when that table is empty, read as
//! a grant itself (`Grant::parse`: `"<org>:<role>"`, `"*:<role>"` for
//! every org). Values
//! that map to nothing are ignored; a person none of whose values maps to a
//! grant is refused at sign-in.

use std::collections::BTreeMap;

use serde_json::Value;

use tollgate_control::accounts::Grant;

/// The roles claim's name and how its values map to grants.
#[derive(Debug, Clone)]
pub struct RoleClaim {
    pub name: String,
    table: BTreeMap<String, Vec<Grant>>,
}

impl RoleClaim {
    pub fn new(name: String, table: BTreeMap<String, Vec<Grant>>) -> Self {
        Self { name, table }
    }

    /// The claim's values: a string is one value, an array of strings its
    /// strings; anything else none.
    pub fn values(claim: Option<&Value>) -> Vec<String> {
        match claim {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The grants the values map to, each once.
    pub fn grants(&self, values: &[String]) -> Vec<Grant> {
        let mut grants: Vec<Grant> = Vec::new();
        let mut add = |grant: Grant| {
            if !grants.contains(&grant) {
                grants.push(grant);
            }
        };
        for value in values {
            if self.table.is_empty() {
                match Grant::parse(value) {
                    Ok(grant) => add(grant),
                    Err(reason) => {
                        tracing::debug!(claim = %self.name, %reason, "claim value grants nothing")
                    }
                }
            } else if let Some(mapped) = self.table.get(value) {
                mapped.iter().cloned().for_each(&mut add);
            }
        }
        grants
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_control::accounts::Role;

    fn grant(org: Option<&str>, role: Role) -> Grant {
        Grant {
            org_id: org.map(String::from),
            role,
        }
    }

    fn direct() -> RoleClaim {
        RoleClaim::new("tollgate_roles".into(), BTreeMap::new())
    }

    #[test]
    fn values_written_as_grants_map_to_those_grants_each_once() {
        let values = RoleClaim::values(Some(&json!([
            "acme:finance",
            "globex:sre",
            "acme:finance",
            "*:admin"
        ])));
        assert_eq!(
            direct().grants(&values),
            vec![
                grant(Some("acme"), Role::Finance),
                grant(Some("globex"), Role::Sre),
                grant(None, Role::Admin),
            ]
        );
    }

    #[test]
    fn values_that_are_not_grants_map_to_nothing() {
        let values = RoleClaim::values(Some(&json!(["initech:janitor", "staff", ":sre", 7])));
        assert_eq!(direct().grants(&values), vec![]);
        assert_eq!(
            RoleClaim::values(Some(&json!({"acme": "sre"}))),
            Vec::<String>::new()
        );
        assert_eq!(RoleClaim::values(None), Vec::<String>::new());
    }

    #[test]
    fn a_single_string_is_one_value() {
        let values = RoleClaim::values(Some(&json!("acme:viewer")));
        assert_eq!(
            direct().grants(&values),
            vec![grant(Some("acme"), Role::Viewer)]
        );
    }

    #[test]
    fn with_a_table_only_its_values_grant_and_written_grants_do_not() -> Result<(), String> {
        let table = BTreeMap::from([(
            "okta-finance".to_string(),
            vec![
                Grant::parse("acme:finance")?,
                Grant::parse("globex:finance")?,
            ],
        )]);
        let claim = RoleClaim::new("groups".into(), table);
        let values = RoleClaim::values(Some(&json!(["okta-finance", "acme:admin"])));
        assert_eq!(
            claim.grants(&values),
            vec![
                grant(Some("acme"), Role::Finance),
                grant(Some("globex"), Role::Finance)
            ]
        );
        Ok(())
    }
}
