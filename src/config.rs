//! The whole configuration of the `tollgate` binary: compiled-in defaults,
//! then a TOML file, then `TOLLGATE_<SECTION>__<KEY>` environment variables.
//! Unknown keys are rejected with a message naming the key.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use tollgate_api::config::ApiConfig;
use tollgate_control::config::{ClickHouseConfig, KafkaConfig, PostgresConfig, SecretsConfig};
use tollgate_ingest::config::IngestConfig;
use tollgate_processors::breakers::config::BreakersConfig;
use tollgate_processors::config::ProcessorConfig;
use tollgate_processors::folds::audit::AuditConfig;
use tollgate_processors::retention::RetentionConfig;
use tollgate_proxy::config::ProxyConfig;

mod redaction;

/// Environment variables with the `TOLLGATE_` prefix that are not settings.
/// (`TOLLGATE_MASTER_KEY` and `TOLLGATE_MASTER_KEY_PREVIOUS` are read by
/// `tollgate_control::provider_credentials::Keyring`, never into the config.)
const NOT_SETTINGS: [&str; 7] = [
    "config",
    "log",
    "state_dir",
    "bin",
    "ingest_key",
    "master_key",
    "master_key_previous",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub clickhouse: ClickHouseConfig,
    pub ingest: IngestConfig,
    pub proxy: ProxyConfig,
    pub processor: ProcessorConfig,
    pub audit: AuditConfig,
    /// Days each partitioned ClickHouse table keeps its rows (docs/processor.md, "Retention").
    pub retention: RetentionConfig,
    pub breakers: BreakersConfig,
    pub alerting: tollgate_alerting::AlertingConfig,
    pub api: ApiConfig,
    /// Sessions, lockout and invitations of people (docs/sign-in.md).
    pub auth: tollgate_control::accounts::AuthPolicy,
    pub telemetry: TelemetryConfig,
    /// Where the master key of provider credentials comes from when not
    /// from `TOLLGATE_MASTER_KEY` (docs/proxy.md, "Provider credentials").
    pub secrets: SecretsConfig,
}

/// The pipeline's own traces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); traces are exported
    /// when set.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Load defaults, then `path` (if given; it must exist), then the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("TOLLGATE_").split("__").filter(|key| {
            // Keys keep the variable's case (`TOLLGATE_LOG` -> `LOG`).
            let key = key.as_str().to_ascii_lowercase();
            !NOT_SETTINGS.contains(&key.as_str()) && !key.starts_with("test_")
        });
        figment
            .merge(env)
            .extract()
            .map_err(|err| anyhow::anyhow!("invalid configuration: {}", describe(err)))
    }
}

impl Config {
    /// The effective configuration as TOML, in the shape of the file it was
    /// loaded from, with every secret hidden (what `tollgate show-config`
    /// prints; it loads back, with the hidden values in place of the
    /// secrets).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let mut value = toml::Value::try_from(self)?;
        redaction::hide_secrets(&mut value);
        Ok(toml::to_string_pretty(&value)?)
    }
}

fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("key `{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every test that loads configuration runs inside `figment::Jail`: it
    // holds a global lock, so a test that sets `TOLLGATE_*` variables cannot
    // leak them into another test running at the same time.

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_key_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[kafka]\nbrokers = \"k:1\"\nbrokerz = \"x\"\n")?;
            let err = Config::load(Some(Path::new("t.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("brokerz"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn non_setting_variables_are_ignored_in_any_case() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_LOG", "debug");
            jail.set_env("TOLLGATE_TEST_EVENTS", "10");
            jail.set_env("TOLLGATE_CLICKHOUSE__DATABASE", "from_env");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.clickhouse.database, "from_env");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn master_keys_in_the_environment_are_not_settings_and_their_file_is() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_MASTER_KEY", "a2V5");
            jail.set_env("TOLLGATE_MASTER_KEY_PREVIOUS", "a2V5");
            jail.create_file(
                "t.toml",
                "[secrets]\nmaster_key_file = \"/etc/tollgate/master.key\"\n",
            )?;
            let config = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                config.secrets.master_key_file.as_deref(),
                Some("/etc/tollgate/master.key")
            );
            // The key itself is never part of the configuration (show-config).
            assert!(!config.to_toml().unwrap().contains("a2V5"));
            Ok(())
        });
    }

    /// A trial found `show-config` printing the audit signing key, the
    /// PostgreSQL password and the ClickHouse password.
    #[test]
    #[allow(clippy::result_large_err)]
    fn show_config_hides_every_secret() {
        figment::Jail::expect_with(|jail| {
            let seed = "9f".repeat(32);
            jail.set_env("TOLLGATE_AUDIT__SIGNING_KEY", &seed);
            jail.set_env(
                "TOLLGATE_POSTGRES__URL",
                "postgres://tollgate:pg-pass-1@db:5432/tollgate",
            );
            jail.set_env("TOLLGATE_CLICKHOUSE__PASSWORD", "ch-pass-2");
            jail.create_file(
                "t.toml",
                "[auth.oidc]\nissuer_url = \"https://idp\"\nclient_id = \"tollgate\"\n\
                 client_secret = \"oidc-secret-3\"\nredirect_url = \"https://t/auth/oidc/callback\"\n",
            )?;
            let config = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            let text = config.to_toml().map_err(|e| e.to_string())?;
            for secret in [seed.as_str(), "pg-pass-1", "ch-pass-2", "oidc-secret-3"] {
                assert!(!text.contains(secret), "{secret} shown in:\n{text}");
            }
            assert!(
                text.contains("signing_key = \"<set, 64 characters, hidden>\""),
                "{text}"
            );
            assert!(
                text.contains("url = \"postgres://tollgate:***@db:5432/tollgate\""),
                "{text}"
            );
            assert!(
                text.contains("password = \"<set, 9 characters, hidden>\""),
                "{text}"
            );
            assert!(
                text.contains("client_secret = \"<set, 13 characters, hidden>\""),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn show_config_prints_toml_that_loads_back_the_same() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[clickhouse]\ndatabase = \"other\"\n")?;
            let config = Config::load(Some(Path::new("t.toml"))).unwrap();
            let text = config.to_toml().unwrap();
            assert!(text.contains("[clickhouse]"), "{text}");
            jail.create_file("shown.toml", &text)?;
            let again = Config::load(Some(Path::new("shown.toml"))).unwrap();
            assert_eq!(again.to_toml().unwrap(), text);
            assert_eq!(again.clickhouse.database, "other");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn breaker_settings_load_from_file_and_environment_and_typos_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[breakers]\nopen_secs = 2\nminimum_calls = 10\n")?;
            jail.set_env("TOLLGATE_BREAKERS__PROBES_PER_PROXY", "5");
            let config = Config::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(config.breakers.open_secs, 2);
            assert_eq!(config.breakers.minimum_calls, 10);
            assert_eq!(config.breakers.probes_per_proxy, 5);
            assert_eq!(config.breakers.failure_rate_percent, 50);
            jail.create_file("bad.toml", "[breakers]\nfailure_rate = 40\n")?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("failure_rate"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_values_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[clickhouse]\ndatabase = \"other\"\n")?;
            let config = Config::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(config.clickhouse.database, "other");
            assert_eq!(config.kafka.events_topic, "tollgate.events");
            Ok(())
        });
    }
}
