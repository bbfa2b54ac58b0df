//! The audit chain's records and their cryptography, shared by the audit
//! fold that writes the chain and everyone who verifies it (the read side,
//! `tollgate verify-audit`, an export's reader): which chain an event
//! joins ([`chain_id`]: one per org and team), the entry and its
//! canonical, hashed form ([`entry`]), RFC 6962/9162 Merkle trees, inclusion
//! and consistency proofs ([`merkle`]), and the signed checkpoint, its
//! signer and its anchor line ([`checkpoint`]), the record of an erasure
//! ([`erasure`]). Pure: no I/O. With the
//! `clickhouse-rows` feature the entry and checkpoint rows also derive
//! `clickhouse::Row` (a column list; the derive does no I/O), so the fold
//! and the read side insert and fetch these very types.

pub mod canonical;
pub mod chain_id;
pub mod checkpoint;
pub mod entry;
pub mod erasure;
pub mod merkle;
