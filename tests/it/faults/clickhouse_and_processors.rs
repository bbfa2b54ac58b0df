//! Faults: ClickHouse outages and processor crashes (tests to come).
