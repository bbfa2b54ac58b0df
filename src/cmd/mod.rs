//! One module per subcommand; each owns its arguments and its `run`.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod bench;
pub mod budgets;
pub mod erase;
pub mod exit_status;
pub mod ingest;
pub mod keys;
pub mod migrate;
pub mod mock_upstream;
pub mod outbox;
pub mod prices;
pub mod process;
pub mod providers;
pub mod proxy;
pub mod ratelimits;
pub mod reprice;
pub mod retention;
pub mod rollups;
pub mod shutdown;
pub mod simulate;
pub mod sql_catalog;
pub mod users;
pub mod verify_audit;
