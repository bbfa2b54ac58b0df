//! Faults: a Kafka outage under ingest and the proxy (tests to come).
