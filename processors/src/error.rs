//! The processors crate's one error type. Every variant says whose fault it
//! is (see [`Error::fault`]) and whether retrying the same work can help
//! (see [`Error::is_retryable`]).

pub use tollgate_contract::Fault;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ClickHouse answered with an error or could not be reached.
    #[error("clickhouse at {url}: {context}: {source}")]
    ClickHouse {
        url: String,
        context: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// Kafka (client creation, admin, produce, consume, commit) failed.
    #[error("kafka at {brokers}: {context}: {source}")]
    Kafka {
        brokers: String,
        context: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A migration file cannot be applied as it is.
    #[error("migration {file}: {reason}")]
    Migration { file: String, reason: String },
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The control plane (PostgreSQL, the price catalog) failed.
    #[error(transparent)]
    Control(#[from] tollgate_control::ControlError),
    /// A fold could not be set up (the price catalog, a producer).
    #[error("{context}: {source}")]
    Setup {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Shutdown was requested while work was still pending; nothing was
    /// acknowledged for that work, so it will be read again from Kafka.
    #[error("interrupted by shutdown: {0}")]
    Interrupted(String),
}

impl Error {
    pub fn setup(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Setup {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::ClickHouse { .. } | Error::Kafka { .. } | Error::Setup { .. } => Fault::External,
            Error::Control(e) => e.fault(),
            Error::Migration { .. } | Error::Config(_) => Fault::Caller,
            Error::Interrupted(_) => Fault::External,
        }
    }

    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.fault(), Fault::External)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
