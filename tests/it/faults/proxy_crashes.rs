//! Faults: proxies killed under load (tests to come).
