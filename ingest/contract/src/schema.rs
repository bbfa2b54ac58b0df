//! The published JSON Schema of the event contract, generated from the types.

use schemars::schema_for;

use super::event::Event;

/// JSON Schema (draft 2020-12) of [`Event`].
pub fn event_schema() -> serde_json::Value {
    schema_for!(Event).to_value()
}
