//! API keys as pages name them. Reports carry a key's id (the UUID events
//! carry in `api_key_id`); a page shows `search-svc (tg_abcd1234)`, its
//! name and secret prefix, with the id on hover, and keeps the id in its
//! links, CSV and JSON. The names are read from the key store once per
//! page, for the ids the page shows, and only of keys in the orgs the
//! reader sees: an id of a key unknown, deleted or of another org is
//! shown as it is.

use std::collections::HashMap;

use tollgate_access::{Identity, OrgScope};
use tollgate_control::accounts::Role;
use tollgate_control::keys::ApiKey;
use uuid::Uuid;

use crate::DashboardState;

/// A key's id as a page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    /// `search-svc (tg_abcd1234)`, or the id when the key is not named.
    pub text: String,
    /// The id, for the hover title (`None`: `text` is the id).
    pub title: Option<String>,
}

/// The names of the keys a page shows.
#[derive(Debug, Clone, Default)]
pub struct KeyLabels {
    by_id: HashMap<Uuid, String>,
}

impl KeyLabels {
    /// No names: every key is shown by its id.
    pub fn none() -> Self {
        Self::default()
    }

    /// Names of `keys` (as read from the key store).
    pub fn of(keys: &[ApiKey]) -> Self {
        Self {
            by_id: keys.iter().map(|k| (k.id, k.label())).collect(),
        }
    }

    /// The names of the keys among `ids` that `identity` may see with
    /// `roles`, in one query. Without the key store, or when it cannot be
    /// read, the page shows ids (and the failure is logged): the report
    /// itself is still right.
    pub async fn read<'a>(
        state: &DashboardState,
        identity: &Identity,
        roles: &[Role],
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let Some(store) = &state.keys else {
            return Self::none();
        };
        let orgs = match identity.org_scope(roles) {
            Some(OrgScope::All) => None,
            Some(OrgScope::Only(orgs)) => Some(orgs),
            None => return Self::none(),
        };
        let mut ids: Vec<Uuid> = ids
            .into_iter()
            .filter_map(|id| Uuid::try_parse(id).ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        match store.of_ids(&ids, orgs.as_deref()).await {
            Ok(keys) => Self::of(&keys),
            Err(err) => {
                tracing::warn!(error = %err, "cannot name API keys; pages show their ids");
                Self::none()
            }
        }
    }

    /// How a page shows key `id`.
    pub fn name(&self, id: &str) -> KeyName {
        match Uuid::try_parse(id).ok().and_then(|u| self.by_id.get(&u)) {
            Some(label) => KeyName {
                text: label.clone(),
                title: Some(id.to_string()),
            },
            None => KeyName {
                text: id.to_string(),
                title: None,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key(id: &str, name: &str, prefix: &str) -> ApiKey {
        ApiKey {
            id: Uuid::try_parse(id).unwrap(),
            name: name.into(),
            prefix: prefix.into(),
            org_id: Some("acme".into()),
            role: "proxy".into(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn a_named_key_shows_its_name_and_prefix_with_the_id_on_hover() {
        let id = "01a2517a-7083-7c3e-9d0b-2f1e4c6a8b90";
        let labels = KeyLabels::of(&[key(id, "search-svc", "abcd1234")]);
        assert_eq!(
            labels.name(id),
            KeyName {
                text: "search-svc (tg_abcd1234)".into(),
                title: Some(id.into()),
            }
        );
        // Upper case is the same UUID; the title keeps the id as given.
        let upper = id.to_uppercase();
        assert_eq!(labels.name(&upper).title.as_deref(), Some(upper.as_str()));
        // Unknown, or not a UUID at all: the id itself.
        for other in ["01a2517a-7083-7c3e-9d0b-2f1e4c6a8b91", "team-a-key", ""] {
            assert_eq!(
                labels.name(other),
                KeyName {
                    text: other.into(),
                    title: None
                }
            );
        }
    }
}
