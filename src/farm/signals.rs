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
//!
//! libtorch's static initialisers take about 0.4 s before `main`; a stop signal in that window
//! would kill agra with the signal's default action (exit 138 for USR1, which train.sbatch
//! cannot tell from a crash). So the stop signals are blocked before any library initialises
//! (`.preinit_array`) and released once `install` has put the handlers in place: one that came
//! in between is then handled like any other.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// The signals that ask agra to stop.
const STOP: [libc::c_int; 4] = [SIGINT, SIGTERM, SIGUSR1, SIGHUP];

/// Which of `STOP` (bit i for `STOP[i]`) `hold` blocked: those the parent had not blocked.
static HELD: AtomicU32 = AtomicU32::new(0);

// Not in the test harness, whose Ctrl-C must keep working: it never calls `install`.
#[cfg(not(test))]
#[used]
#[link_section = ".preinit_array"]
static HOLD: extern "C" fn() = hold;

/// Blocks the stop signals until `install` releases them. Runs before any shared library's
/// initialisers, so it only calls syscall wrappers and stores an atomic.
#[cfg(not(test))]
extern "C" fn hold() {
    let mut old = stop_set(0);
    // SAFETY: both sets are initialised; sigprocmask reads one and writes the other.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &stop_set(u32::MAX), &mut old) } == 0 {
        // SAFETY: `old` was just filled in by sigprocmask.
        let held = STOP.iter().enumerate().filter(|&(_, &sig)| unsafe { libc::sigismember(&old, sig) } == 0);
        HELD.store(held.fold(0, |bits, (i, _)| bits | 1 << i), Ordering::SeqCst);
    }
}

/// Unblocks what `hold` blocked; a signal pending since then is delivered now.
fn release() {
    let held = stop_set(HELD.swap(0, Ordering::SeqCst));
    // SAFETY: `held` is an initialised set; a null old set is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &held, std::ptr::null_mut()) };
}

/// The signals of `STOP` whose bit is set in `bits` (bit i for `STOP[i]`), as a signal set.
fn stop_set(bits: u32) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, and sigemptyset initialises it before any use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (i, sig) in STOP.into_iter().enumerate() {
            if bits & 1 << i != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// Installs the handlers, then lets through a signal that came while agra was starting.
/// Called once, first thing in `main`.
pub fn install() -> Result<()> {
    // Order matters: the shutdown checks run before this signal sets the flag.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(flag()))
        .context("installing signal handlers")?;
    let hangup = (!ignored(SIGHUP)).then_some(SIGHUP);
    for sig in [SIGINT, SIGTERM, SIGUSR1].into_iter().chain(hangup) {
        let unheeded_now = Arc::clone(unheeded());
        let say = move || {
            if unheeded_now.load(Ordering::SeqCst) {
                const MESSAGE: &[u8] = b"agra: interrupted: nothing half-written is kept; run the command again\n";
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
    release();
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
