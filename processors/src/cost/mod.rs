//! The cost fold and everything it needs: the versioned price catalog
//! ([`prices`]: types and in-memory lookup by provider, model and time), the
//! LiteLLM price-file format ([`litellm`]), the PostgreSQL store of price
//! versions ([`store`]), the pure per-call cost computation ([`fold`]) and
//! repricing of stored calls after a price correction ([`reprice`]).
//!
//! Money is exact: `rust_decimal::Decimal` in Rust, `NUMERIC` in PostgreSQL,
//! `Decimal(38,12)` in ClickHouse (sent in RowBinary as the `i128` mantissa at
//! scale 12). No floating point touches a price or a cost. The formula is
//! documented in `docs/cost.md`.

pub mod budget_watcher;
pub mod fold;
pub mod reprice;
pub mod rollup;

/// The price catalog types (they live in `tollgate-contract`, shared with the
/// proxy).
pub use tollgate_contract::catalog as prices;

pub use fold::{call_cost, price_row, BillableUsage, COST_SCALE};
pub use prices::{NewPrice, PriceCatalog, PriceVersion, SharedCatalog};
