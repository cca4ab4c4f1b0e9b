//! SIGINT, SIGTERM and SIGUSR1 ask the farm to stop: each pack finishes its epoch, checkpoints
//! and returns, and the process exits with code 3. So does SIGHUP (a closed terminal or ssh
//! session), unless agra started with it ignored (`nohup`), which then stays ignored. A second
//! Ctrl-C (SIGINT) exits at once with 130 (the atomic checkpoint writes make even that safe); a
//! repeated SIGTERM does not, because Slurm and the batch script forwarding it may both send one.
//! SIGUSR1 is what Slurm sends before a time limit with `--signal=B:USR1@120`.
//!
//! Only training and explain have work worth finishing (`polling`); in the other stages
//! (data, evaluate, report: seconds, written atomically, done again whole) a signal exits at
//! once with code 3 rather than being held until the stage ends.
//!
//! The flags are process-wide state by nature: a signal is delivered to the process.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

fn flag() -> &'static Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// True while no stage polls `stop_requested`.
fn unheeded() -> &'static Arc<AtomicBool> {
    static UNHEEDED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    UNHEEDED.get_or_init(|| Arc::new(AtomicBool::new(true)))
}

/// Installs the handlers (idempotent enough: registering twice only adds a second setter).
pub fn install() -> Result<()> {
    // Order matters: the shutdown checks run before this signal sets the flag.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(flag()))
        .context("installing signal handlers")?;
    let hangup = (!ignored(SIGHUP)).then_some(SIGHUP);
    for sig in [SIGINT, SIGTERM, SIGUSR1].into_iter().chain(hangup) {
        let unheeded_now = Arc::clone(unheeded());
        let say = move || {
            if unheeded_now.load(Ordering::SeqCst) {
                const MESSAGE: &[u8] = b"agra: interrupted: this stage is done again whole by the next run\n";
                // SAFETY: write(2) is async-signal-safe; a short or failed write loses only the note.
                let _ = unsafe { libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len()) };
            }
        };
        // SAFETY: the action only loads an atomic and calls write(2), both async-signal-safe.
        unsafe { signal_hook::low_level::register(sig, say) }.context("installing signal handlers")?;
        signal_hook::flag::register_conditional_shutdown(sig, crate::error::EXIT_INTERRUPTED, Arc::clone(unheeded()))
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(flag())).context("installing signal handlers")?;
    }
    Ok(())
}

/// Whether `sig` arrived ignored from the parent (as `nohup` leaves SIGHUP).
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// While the guard lives, a signal sets the flag for the stage to poll instead of exiting.
pub fn polling() -> Polling {
    unheeded().store(false, Ordering::SeqCst);
    Polling
}

pub struct Polling;

impl Drop for Polling {
    fn drop(&mut self) {
        unheeded().store(true, Ordering::SeqCst);
    }
}

pub fn stop_requested() -> bool {
    flag().load(Ordering::Relaxed)
}
