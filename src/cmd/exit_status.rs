//! The exit statuses of the checking commands (`verify-audit`, `rollups
//! check`), for cron and scripts: 1 only when the check ran and found
//! something wrong, 2 for a usage error (as clap's own), 3 when the check
//! could not be made (a server unreachable or failing). An error is tagged
//! with its status where it arises ([`Tag`]); `main` exits with it
//! ([`of`]). Untagged errors exit 1, as anyhow's do.

use std::fmt;

/// Checked, and found broken or disagreeing.
pub const FOUND_WRONG: u8 = 1;
/// Bad arguments or configuration (clap exits 2 for its own).
pub const USAGE: u8 = 2;
/// Could not check: a server is unreachable or failed.
pub const NOT_CHECKED: u8 = 3;

/// The `after_help` table of a checking command's statuses; `found`
/// says what status 1 means for it, `usage` what else 2 means.
pub fn help_table(found: &str, usage: &str) -> String {
    format!(
        "Exit status:\n  \
         0  checked, nothing wrong\n  \
         1  checked, {found}\n  \
         2  usage error: a bad flag, value or configuration{usage}\n  \
         3  could not check: a server (ClickHouse, Kafka, PostgreSQL) is unreachable or failed"
    )
}

/// An error with the status the process exits with.
struct Tagged {
    status: u8,
    error: anyhow::Error,
}

impl fmt::Debug for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The outermost message only: anyhow prints the causes after it.
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Tagged {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let inner: &(dyn std::error::Error + 'static) = &*self.error;
        inner.source()
    }
}

/// `error` exiting with `status`; an error tagged already keeps its status.
pub fn tagged(status: u8, error: anyhow::Error) -> anyhow::Error {
    if error.chain().any(|e| e.is::<Tagged>()) {
        return error;
    }
    anyhow::Error::new(Tagged { status, error })
}

/// The status `error` exits with: its tag's, else 1.
pub fn of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Tagged>())
        .map_or(FOUND_WRONG, |t| t.status)
}

/// Tagging the error of a `Result`.
pub trait Tag<T> {
    /// A usage error: exit 2.
    fn usage(self) -> anyhow::Result<T>;
    /// The check could not be made: exit 3.
    fn not_checked(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Tag<T> for Result<T, E> {
    fn usage(self) -> anyhow::Result<T> {
        self.map_err(|e| tagged(USAGE, e.into()))
    }

    fn not_checked(self) -> anyhow::Result<T> {
        self.map_err(|e| tagged(NOT_CHECKED, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn the_status_survives_context_and_the_message_is_unchanged() {
        let plain: anyhow::Result<()> =
            Err(anyhow::anyhow!("connection refused")).context("cannot read the chain");
        let plain = plain.unwrap_err();
        let expected = format!("{plain:#}");
        assert_eq!(of(&plain), FOUND_WRONG);

        let tagged = Err::<(), _>(plain).not_checked().unwrap_err();
        assert_eq!(of(&tagged), NOT_CHECKED);
        assert_eq!(format!("{tagged:#}"), expected);
        assert_eq!(tagged.to_string(), "cannot read the chain");

        let wrapped = Err::<(), _>(tagged).context("verify-audit").unwrap_err();
        assert_eq!(of(&wrapped), NOT_CHECKED);
        // Tagged once: a later tag does not change it.
        let again = Err::<(), _>(wrapped).usage().unwrap_err();
        assert_eq!(of(&again), NOT_CHECKED);
    }
}
