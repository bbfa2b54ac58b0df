//! The control plane's error type. Every variant knows whose fault it is; the
//! edges (ingest, proxy, api) turn it into their HTTP answers and the CLI
//! into an exit message.

use tollgate_contract::Fault;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Input to a control-plane call (key name, role, tenant) is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    #[error("kafka at {brokers} is unreachable: {reason}; is the broker running (dev/stack up) and is kafka.brokers right?")]
    KafkaUnreachable { brokers: String, reason: String },

    #[error("kafka producer could not be created for {brokers}: {reason}")]
    KafkaConfig { brokers: String, reason: String },

    #[error("cannot connect to postgresql at {address}: {reason}; is it running (dev/stack up) and is postgres.url right?")]
    PostgresUnreachable { address: String, reason: String },

    #[error("postgresql query failed while {doing}: {source}")]
    Postgres {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn postgres(doing: &'static str, source: sqlx::Error) -> Self {
        ControlError::Postgres { doing, source }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ControlError::InvalidInput { .. } => Fault::Caller,
            ControlError::KafkaUnreachable { .. }
            | ControlError::PostgresUnreachable { .. }
            | ControlError::Postgres { .. } => Fault::External,
            ControlError::KafkaConfig { .. } | ControlError::Internal(_) => Fault::Internal,
        }
    }
}
