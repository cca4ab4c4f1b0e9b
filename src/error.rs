//! The two kinds of failure and their exit codes: a user's mistake (2) and a runtime failure (1).

use std::fmt;

/// A mistake in what the user asked for: a bad flag, key, value or path. Exit code 2.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    /// Messages are kept to one line (parsers' multi-line messages are joined with "; ").
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        UsageError(lines.join("; "))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Training or explain stopped on SIGINT, SIGTERM or SIGUSR1 after keeping its work (members'
/// checkpoints, explain's finished packs): exit code 3, so a scheduler (Slurm's requeue) can
/// tell "stopped cleanly, run me again" from a failure.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted: work so far kept (checkpoints, finished packs), run the same command again to resume")
    }
}

impl std::error::Error for Interrupted {}

pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 3;

/// The exit code for an error: the first usage or interruption marker in its chain decides.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return EXIT_USAGE;
        }
        if cause.is::<Interrupted>() {
            return EXIT_INTERRUPTED;
        }
    }
    EXIT_RUNTIME
}
