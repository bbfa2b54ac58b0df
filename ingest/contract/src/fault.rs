//! Whose fault an error is: the one classification every Tollgate error
//! reports, so an HTTP status, a CLI exit message and a retry decision all
//! read the same answer.

use std::fmt;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller must change something: a request with bad input, a
    /// configuration or command that cannot work. The same thing fails again.
    Caller,
    /// A service we depend on (Kafka, ClickHouse, PostgreSQL, an upstream)
    /// failed or is unreachable; a retry may succeed.
    External,
    /// A bug or broken invariant in Tollgate itself.
    Internal,
}

impl Fault {
    /// Whether trying the same thing again later can succeed.
    pub fn is_retryable(self) -> bool {
        self == Fault::External
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Caller => "caller",
            Fault::External => "external",
            Fault::Internal => "internal",
        })
    }
}
