//! The versioned price catalog in PostgreSQL: reading it and keeping an
//! in-memory copy fresh ([`read`], used by the proxy and the cost fold),
//! adding versions with their admin events ([`store`], [`admin`]) and the
//! LiteLLM price-file format ([`litellm`]) and what repricing decides per
//! stored call ([`repricing`]). The catalog types and the cost
//! formula are the contract's (`tollgate_contract::catalog`, `::cost`).

pub mod admin;
pub mod litellm;
pub mod read;
pub mod repricing;
pub mod store;

pub use admin::PriceAdmin;
pub use store::{AddOutcome, PriceStore};
