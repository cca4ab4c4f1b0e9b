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

/// Training or explain stopped on SIGINT, SIGTERM, SIGUSR1 or SIGHUP after keeping its work
/// (members' checkpoints, explain's finished packs): exit code 3, so a scheduler (Slurm's
/// requeue) can tell "stopped cleanly, run me again" from a failure.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted: work so far kept (checkpoints, finished packs), run the same command again to resume")
    }
}

impl std::error::Error for Interrupted {}

/// A panic's message in one line. libtorch's errors surface through tch as panics whose text is
/// `called Result::unwrap() on an Err value: Torch("<what>\nframe #0: ...")`: keep `<what>`.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
    let text = text.unwrap_or("a panic without a message");
    let text = text.split_once("Torch(\"").map_or(text, |(_, torch)| torch);
    let line = text.split("\\n").next().and_then(|t| t.lines().next()).unwrap_or_default();
    line.strip_suffix("\")").unwrap_or(line).to_string()
}

/// Panics print one line naming where (the full report with RUST_BACKTRACE set): libtorch's
/// errors carry a C++ backtrace of forty frames that would bury the error agra reports.
pub fn short_panics() {
    let full = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            return full(info);
        }
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("agra: panic{at}: {}", panic_text(info.payload()));
    }));
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn a_libtorch_error_is_cut_to_its_message() {
        let torch = String::from("called `Result::unwrap()` on an `Err` value: Torch(\"out of memory (12)\\nframe #0: c10::...\")");
        assert_eq!(super::panic_text(&torch), "out of memory (12)");
        assert_eq!(super::panic_text(&String::from("Torch(\"short (1)\")")), "short (1)");
        assert_eq!(super::panic_text(&"plain\nsecond line"), "plain");
    }
}
