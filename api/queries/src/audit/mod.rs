//! Reading the audit chain (`docs/audit.md`):
//!
//! - [`verify`]: recomputing chains and checkpoints, locating the first break;
//! - [`search`]: compliance search, one entry, inclusion proofs;
//! - [`trail`]: NDJSON export of whole chains or of a search (with proofs);
//! - [`export_verify`]: verifying an export file offline (signed manifest,
//!   chains or proofs, anchor file);
//! - [`anchor`]: reading the checkpoint anchor topic back;
//! - [`access`]: who may read audit trails (API keys, roles, org scope).

pub mod access;
pub mod anchor;
pub mod export_verify;
pub mod search;
pub mod trail;
pub mod verify;
