//! The event contract: versioned types, the JSON Schema generated from them,
//! and validation that names the field and the reason.

pub mod batch;
pub mod event;
pub mod schema;
pub mod validate;

pub use batch::{split_body, BatchItem, BodyFormat};
pub use event::*;
pub use schema::event_schema;
pub use validate::{parse_event, Limits, Rejection};
