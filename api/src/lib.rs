//! Tollgate report API (JSON) and the server that hosts the dashboards.

pub mod config;
