//! What `tollgate show-config` may print of a setting that holds a
//! secret: that it is set and how long it is, never its value. Settings
//! are recognised by their key (`password`, `signing_key`,
//! `client_secret`, `api_key`, any `*_password`, `*_secret`, `*_token`),
//! and any URL's password (`postgres://user:***@host/db`) wherever it
//! appears, so a secret-bearing setting added later is hidden without
//! being listed here.

use toml::Value;

/// `value` (the configuration as TOML) with every secret hidden.
pub fn hide_secrets(value: &mut Value) {
    match value {
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                if is_secret_key(key) {
                    hide_whole(item);
                } else {
                    hide_secrets(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hide_secrets),
        Value::String(text) => {
            if let Some(hidden) = url_without_password(text) {
                *text = hidden;
            }
        }
        _ => {}
    }
}

/// Whether the setting named `key` holds key material or a password.
/// Paths to secrets (`signing_key_file`, `master_key_file`) and names of
/// variables holding them (`api_key_env`) are not secrets.
fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "signing_key" | "api_key" | "token" | "private_key" | "secret_key"
    ) || key.ends_with("password")
        || key.ends_with("secret")
        || key.ends_with("_token")
}

/// A secret's value replaced by what may be said of it: an empty one is
/// shown (it says no secret is set), any other as
/// `<set, N characters, hidden>`.
fn hide_whole(value: &mut Value) {
    match value {
        Value::String(text) if text.is_empty() => {}
        Value::String(text) => {
            *text = format!("<set, {} characters, hidden>", text.chars().count());
        }
        Value::Array(items) => items.iter_mut().for_each(hide_whole),
        Value::Table(table) => table.iter_mut().for_each(|(_, item)| hide_whole(item)),
        other => *other = Value::String("<set, hidden>".into()),
    }
}

/// `text` with its secrets replaced by `***` when it is a URL holding any:
/// the password of its credentials (`scheme://user:password@host...`), a
/// user alone (`https://TOKEN@host`: a token sent as the user), and the
/// value of a query parameter whose name says secret (`password`, `pass`,
/// `token`, `secret`, `key`: ClickHouse's `?user=u&password=x`). `None`
/// when it holds none. Only those change, so the rest reads as written.
fn url_without_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last `@` ends the credentials: a password may hold an `@`.
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((_, "")) => authority.to_string(),
            Some((user, _)) => format!("{user}:***{}", &authority[at..]),
            None if at > 0 => format!("***{}", &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, format!("#{f}")),
                None => (query, String::new()),
            };
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, value)) if !value.is_empty() && secret_parameter(name) => {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}{fragment}", pairs.join("&"))
        }
        None => tail.to_string(),
    };
    let hidden = format!("{scheme}://{authority}{tail}");
    (hidden != text).then_some(hidden)
}

/// Whether a URL's query parameter `name` holds a secret.
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "token", "secret", "key"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            url_without_password("postgres://tollgate:s3cr@t@db:5433/tollgate?sslmode=require")
                .as_deref(),
            Some("postgres://tollgate:***@db:5433/tollgate?sslmode=require")
        );
        assert_eq!(
            url_without_password("http://default:pw@127.0.0.1:8123").as_deref(),
            Some("http://default:***@127.0.0.1:8123")
        );
        assert_eq!(url_without_password("http://127.0.0.1:8123"), None);
        // A user alone may be a token; query parameters that say secret.
        assert_eq!(
            url_without_password("https://ghp_abc123@host/").as_deref(),
            Some("https://***@host/")
        );
        assert_eq!(
            url_without_password("http://h:8123/?user=u&password=x&database=d#f").as_deref(),
            Some("http://h:8123/?user=u&password=***&database=d#f")
        );
        assert_eq!(
            url_without_password("postgres://h/db?sslmode=require&PGPASSWORD=x&api_key=k")
                .as_deref(),
            Some("postgres://h/db?sslmode=require&PGPASSWORD=***&api_key=***")
        );
        assert_eq!(url_without_password("http://h/?password="), None);
        assert_eq!(url_without_password("https://h/path?next=a:b@c"), None);
        assert_eq!(url_without_password("127.0.0.1:9092"), None);
    }

    #[test]
    fn secret_keys_are_told_from_paths_and_variable_names() {
        for key in [
            "signing_key",
            "password",
            "client_secret",
            "api_key",
            "auth_token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "signing_key_file",
            "master_key_file",
            "api_key_env",
            "max_tokens",
            "key_cache_secs",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn secrets_anywhere_in_the_tree_are_hidden() {
        let mut value: Value = toml::from_str(
            r#"
            [audit]
            signing_key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            signing_key_file = "/etc/tollgate/audit.key"
            [clickhouse]
            password = ""
            [[proxy.providers]]
            api_key = "sk-live"
            base_url = "https://u:p@example.com/v1"
            "#,
        )
        .unwrap();
        hide_secrets(&mut value);
        let text = toml::to_string(&value).unwrap();
        assert!(
            text.contains(r#"signing_key = "<set, 64 characters, hidden>""#),
            "{text}"
        );
        assert!(text.contains("/etc/tollgate/audit.key"), "{text}");
        assert!(text.contains(r#"password = """#), "{text}");
        assert!(
            text.contains(r#"api_key = "<set, 7 characters, hidden>""#),
            "{text}"
        );
        assert!(text.contains("https://u:***@example.com/v1"), "{text}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("sk-live"), "{text}");
    }
}
