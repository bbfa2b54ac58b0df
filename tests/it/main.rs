//! The one integration-test binary: every test against the real Kafka,
//! ClickHouse and PostgreSQL (started by `dev/stack up`), and the checks
//! over the workspace itself. One binary links the workspace once, instead
//! of once per file; run a part with `cargo test --test it <module>::`.
//!
//! [`support`] holds what the tests share: the isolated environment
//! ([`support::TestEnv`]: topics, databases and processes of its own,
//! dropped when it ends), and the builders of events, keys and servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod latency_fixture;
mod support;

mod access;
mod accessibility;
mod admin_api;
mod admin_pages;
mod admin_people;
mod alert_delivery;
mod alert_e2e;
mod alert_evaluator;
mod alert_pages;
mod alert_rules;
mod alert_signals;
mod audit_chain;
mod audit_index;
mod audit_search;
mod bench_ingest;
mod bench_regression;
mod bench_reports;
mod breakers;
mod browser_sign_in;
mod cli;
mod cluster;
mod cost;
mod dashboard_chromium;
mod e2e_latency;
mod erasure;
mod error_patterns;
mod errors_api;
mod event_copies;
mod faults;
mod finance_chromium;
mod fold_models;
mod ingest_api;
mod latency_api;
mod latency_long_window;
mod layering;
mod leases;
mod local_time_chromium;
mod names_not_ids;
mod otlp_clients;
mod otlp_ingest;
mod overview;
mod pipeline_health;
mod processor;
mod prometheus;
mod provider_credentials;
mod proxy;
mod proxy_recovery;
mod proxy_shares;
mod proxy_trace;
mod proxy_vs_litellm;
mod rate_limit_admin;
mod retention;
mod rowbinary;
mod sign_in;
mod sre_layout_chromium;
mod sre_loop;
mod sso;
mod view_repair;
