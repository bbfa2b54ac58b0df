//! Cost beyond the calls fold's cost step (`folds/calls/cost.rs`, re-exported
//! here): the versioned price catalog ([`prices`]: types and in-memory
//! lookup by provider, model and time), repricing of stored calls after a
//! price correction ([`reprice`]) and the budget watcher
//! ([`budget_watcher`]). The rollups are the `cost_rollup` fold
//! (`folds/cost_rollup/`).
//!
//! Money is exact: `rust_decimal::Decimal` in Rust, `NUMERIC` in PostgreSQL,
//! `Decimal(38,12)` in ClickHouse (sent in RowBinary as the `i128` mantissa at
//! scale 12). No floating point touches a price or a cost. The formula is
//! documented in `docs/cost.md`.

pub mod budget_watcher;
pub mod reprice;
pub mod rollup_check;

/// The price catalog types (they live in `tollgate-contract`, shared with the
/// proxy).
pub use tollgate_contract::catalog as prices;

pub use crate::folds::calls::cost::{call_cost, price_row, BillableUsage, COST_SCALE};
pub use prices::{NewPrice, PriceCatalog, PriceVersion, SharedCatalog};
