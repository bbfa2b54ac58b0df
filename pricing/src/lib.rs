//! Prices and the exact cost of a call, shared by the processors (the cost
//! fold stores each call's cost) and the proxy (budget reservations are
//! estimated and settled with the same catalog and formula, so the proxy's
//! view of spend and the processors' agree to the last digit).
//!
//! [`catalog`]: price versions and the in-memory lookup by provider, model
//! and instant; [`aliases`]: how event provider and model names find
//! their catalog entry; [`cost`]: the per-call formula; [`store`]: reading the
//! catalog from PostgreSQL and keeping a copy fresh.
//!
//! Money is exact: `rust_decimal::Decimal`, never a float.

pub mod aliases;
pub mod catalog;
pub mod cost;
pub mod store;

pub use catalog::{NewPrice, PriceCatalog, PriceTier, PriceVersion, SharedCatalog};
pub use cost::{call_cost, BillableUsage, CostOverflow, COST_SCALE};
