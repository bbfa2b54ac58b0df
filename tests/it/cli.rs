//! The command line as a shell uses it.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::tollgate_bin;

/// `tollgate … | head` closes the pipe early: the command ends quietly
/// with status 141 (128 + SIGPIPE), as Unix tools do, not with a panic
/// and a backtrace note (`verify-audit | head -1` in a trial).
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let mut child = Command::new(tollgate_bin())
        .arg("sql-catalog")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    // The catalog is far larger than a pipe's buffer: the rest cannot fit.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
