//! One module per subcommand; each owns its arguments and its `run`.

pub mod api;
pub mod bench;
pub mod ingest;
pub mod keys;
pub mod migrate;
pub mod prices;
pub mod process;
pub mod reprice;
pub mod simulate;
pub mod sql_catalog;
