//! Progress and messages on stderr: indicatif bars on a terminal, plain lines elsewhere (logs,
//! Slurm output files), nothing but warnings and errors with `--quiet`. Stage summaries go to
//! stdout through [`say`].
//!
//! Neither stream may end the process when its reader has gone (`agra --json run | head -1`,
//! a closed terminal): the work goes on and stays saved, only the unread lines are lost.

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::io::{ErrorKind, IsTerminal, Write};

/// One line on stdout. A reader that has left (a broken pipe) is not an error: the line is
/// dropped, as are the ones after it. Any other failure (a full disk behind a redirect) is.
pub fn say(line: impl Display) -> Result<()> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e).context("writing to standard output"),
        _ => Ok(()),
    }
}

/// One line on stderr, where a failure has nowhere left to be reported.
pub fn tell(line: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub struct Progress {
    multi: MultiProgress,
    quiet: bool,
    terminal: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let target = if quiet || !terminal { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        Progress { multi: MultiProgress::with_draw_target(target), quiet, terminal }
    }

    /// A bar that draws on a terminal and stays silent elsewhere.
    pub fn bar(&self, prefix: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// A line of progress: above the bars on a terminal, a plain line otherwise.
    pub fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        if self.terminal {
            let _ = self.multi.println(message);
        } else {
            tell(message);
        }
    }

    /// Always shown, even with --quiet.
    pub fn warn(&self, message: &str) {
        if self.terminal && !self.quiet {
            let _ = self.multi.println(format!("warning: {message}"));
        } else {
            tell(format_args!("warning: {message}"));
        }
    }
}
