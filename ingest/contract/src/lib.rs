//! The contract every Tollgate process speaks, with no I/O of its own:
//!
//! - the event (`event`): the versioned types of one AI call or
//!   control-plane change on `tollgate.events`, the JSON Schema generated
//!   from them (`schema`), validation that names the field and the reason
//!   (`validate`), and splitting a request body into events (`batch`);
//! - prices (`catalog`, `aliases`) and the exact cost of one call (`cost`):
//!   the processors' cost fold stores each call's cost with them and the
//!   proxy reserves and settles budgets with the same catalog and formula,
//!   so both agree to the last digit. Money is exact: `rust_decimal`, never
//!   a float;
//! - decisions (`decisions`): the records on the compacted decisions topic
//!   that the budget watcher publishes and the proxy enforces;
//! - alerting (`alerts`): rules, silences and receivers as an SRE states
//!   them, with the validation that names the field;
//! - error signatures (`signature`): which failure pattern a failed call
//!   belongs to, computed alike by the error-pattern fold and the proxy;
//!   a provider's error as a call records it (`provider_error`), alike from
//!   the proxy and the OTLP receiver;
//! - alert notifications (`notification`): what delivery sends to a
//!   receiver, with the stable id receivers deduplicate on.
//!
//! Reading and writing these records (Kafka, PostgreSQL, ClickHouse) lives
//! in the crates above; this one only says what they are.

pub mod admin;
pub mod alert_lifecycle;
pub mod alerts;
pub mod aliases;
pub mod audit;
pub mod batch;
pub mod catalog;
pub mod cost;
pub mod decisions;
pub mod duplicate_keys;
pub mod event;
pub mod fault;
pub mod json_body;
pub mod kind;
pub mod notification;
pub mod provider_error;
pub mod schema;
pub mod signature;
pub mod validate;

pub use batch::{check_item_count, split_body, split_items, BatchItem, BodyFormat};
pub use catalog::{NewPrice, PriceCatalog, PriceTier, PriceVersion, SharedCatalog};
pub use cost::{call_cost, BillableUsage, CostOverflow, COST_SCALE};
pub use event::*;
pub use fault::Fault;
pub use kind::{
    is_billable, EventKind, CALL_KINDS, KIND_ADMIN_PREFIX, KIND_CALL_BLOCKED, KIND_CALL_COMPLETED,
    KIND_CALL_FAILED, KIND_CALL_FIRST_TOKEN, KIND_CALL_STARTED,
};
pub use schema::event_schema;
pub use validate::{check_event, parse_event, parse_event_json, JsonEventError, Limits, Rejection};
