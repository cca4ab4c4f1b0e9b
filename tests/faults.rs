//! Surviving faults: signals, kill -9 at random moments, damaged checkpoints and diverging
//! members. The reference is always an uninterrupted run of the same config on CPU, and the
//! bar is bit-identical final weights.

mod common;
use common::*;
use std::time::{Duration, Instant};

const LONG: &[&str] = &["--set", "train.epochs=8", "--set", "train.members=3"];

/// Long enough that a dozen kills land before the run can finish.
const LONGER: &[&str] = &["--set", "train.epochs=1000", "--set", "train.members=3"];

fn reference_with(dir: &std::path::Path, sets: &[&str]) -> std::collections::BTreeMap<u64, String> {
    let path = dir.join("reference");
    ok(&path, &[sets, &["train"]].concat());
    weight_hashes(&path)
}

fn reference(dir: &std::path::Path) -> std::collections::BTreeMap<u64, String> {
    reference_with(dir, LONG)
}

/// Member 1's loss turns NaN 300 epochs in, so kills also land in a retry and in the rounds
/// around it.
const DIVERGING: (&str, &str) = ("AGRA_INJECT_NAN", "1:300");

fn train_diverging(dir: &std::path::Path, sets: &[&str]) -> std::process::Command {
    let mut cmd = agra();
    cmd.env(DIVERGING.0, DIVERGING.1).arg("--run-dir").arg(dir).args(tiny()).args(sets).arg("train");
    cmd
}

/// Long enough (about 0.3 s of training) that the signal, sent at the first checkpoint, nearly
/// always lands before the end (with LONG's 8 epochs about one run in six finished first).
const SIGNALLED: &[&str] = &["--set", "train.epochs=40", "--set", "train.members=3"];

/// 16-channel layers, so conv2-4 run on the CPU's Winograd kernels as the paper preset's do
/// (quick's narrow layers take the direct ones).
const WIDE: &[&str] = &["--set", "model.channels=[16,16,16,16]"];

#[test]
fn a_signal_checkpoints_exits_3_and_the_resumed_run_is_bit_identical() {
    signal_then_resume(SIGNALLED, "-USR1"); // as Slurm sends it
}

/// SIGHUP (a closed terminal) too.
#[test]
fn a_signal_then_resume_is_bit_identical_with_winograd_layers() {
    signal_then_resume(&[SIGNALLED, WIDE].concat(), "-HUP");
}

/// Under `nohup` (SIGHUP ignored when agra starts) a hangup changes nothing.
#[test]
fn a_hangup_under_nohup_is_ignored() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut cmd = agra();
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe { cmd.pre_exec(|| (libc::signal(libc::SIGHUP, libc::SIG_IGN) != libc::SIG_ERR).then_some(()).ok_or_else(std::io::Error::last_os_error)) };
    let args = [SIGNALLED, &["train"]].concat();
    let mut child = cmd.arg("--run-dir").arg(&run_dir).args(tiny()).args(&args).spawn().unwrap();
    wait_for_a_checkpoint(&run_dir);
    assert!(std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "the hangup stopped a run under nohup");
}

/// libtorch's static initialisers take about 0.4 s before agra's `main`: a stop signal then is
/// held until the handlers are in place, not met with its default action (USR1 killed agra
/// with 138, which train.sbatch took for a crash instead of requeueing).
#[test]
fn a_stop_signal_while_agra_starts_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    // SIGHUP, SIGINT, SIGUSR1 and SIGTERM in /proc's SigBlk mask (bit n - 1 for signal n).
    const STOP_BITS: u64 = 1 << 0 | 1 << 1 | 1 << 9 | 1 << 14;
    for signal in ["-USR1", "-TERM", "-HUP", "-INT"] {
        let child = agra().arg("--run-dir").arg(dir.path()).arg("status").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // Once the loader has mapped the libraries (tens of ms warm, more from a cold cache) the
        // mask holds the stop signals until the handlers are in place: signal inside that window.
        let status = format!("/proc/{}/status", child.id());
        let blocked = || {
            let text = std::fs::read_to_string(&status).unwrap_or_default();
            let mask = text.lines().find_map(|l| l.strip_prefix("SigBlk:")).map(|m| u64::from_str_radix(m.trim(), 16).unwrap());
            mask.is_some_and(|m| m & STOP_BITS == STOP_BITS)
        };
        let started = Instant::now();
        while !blocked() {
            assert!(started.elapsed() < Duration::from_secs(20), "{signal}: the stop signals were never blocked while agra started");
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{signal}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "{signal}: {out:?}");
    }
}

/// With libtorch's kernels a member's rounding depends on its pack's size: a run begun with
/// `--pack 1` and resumed without it must still pack by one (run.json keeps the size).
#[test]
fn a_resumed_run_packs_as_it_began_where_packing_changes_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let first = [SIGNALLED, &["train", "--pack", "1"]].concat();
    let libtorch = |cmd: &mut std::process::Command| {
        cmd.env("AGRA_KERNELS", "libtorch");
    };
    let reference = dir.path().join("reference");
    let mut cmd = agra();
    libtorch(&mut cmd);
    assert!(cmd.arg("--run-dir").arg(&reference).args(tiny()).args(&first).status().unwrap().success());
    let then = [SIGNALLED, &["train"]].concat();
    signal_then_resume_with(dir.path(), &weight_hashes(&reference), (&first, "-USR1"), &then, libtorch);
}

fn signal_then_resume(sets: &[&str], signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference_with(dir.path(), sets);
    let args = [sets, &["train"]].concat();
    signal_then_resume_with(dir.path(), &expected, (&args, signal), &args, |_| {});
}

fn wait_for_a_checkpoint(run_dir: &std::path::Path) {
    let started = Instant::now();
    while !run_dir.join("members/m0000").read_dir().map(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().starts_with("epoch-"))).unwrap_or(false) {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `first` (a train command line) until the first checkpoint, stops it with `signal` (a
/// `kill` option), then runs `then`: the members must end as `expected`.
fn signal_then_resume_with(
    dir: &std::path::Path,
    expected: &std::collections::BTreeMap<u64, String>,
    (first, signal): (&[&str], &str),
    then: &[&str],
    env: impl Fn(&mut std::process::Command),
) {
    let run_dir = dir.join("run");
    let mut cmd = agra();
    env(&mut cmd);
    let mut child = cmd.arg("--run-dir").arg(&run_dir).args(tiny()).args(first).spawn().unwrap();
    // Wait for the first checkpoint, then ask politely.
    wait_for_a_checkpoint(&run_dir);
    let sent = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let code = child.wait().unwrap().code();
    if code == Some(0) {
        // The run finished before the signal landed; nothing to resume, still identical.
        assert_eq!(&weight_hashes(&run_dir), expected);
        return;
    }
    assert_eq!(code, Some(3), "interrupted runs exit 3");
    let status = status_json(&run_dir);
    assert!(status["members"].as_array().unwrap().iter().any(|m| m["state"] == "in_progress"));
    let mut cmd = agra();
    env(&mut cmd);
    let out = cmd.arg("--run-dir").arg(&run_dir).args(tiny()).args(then).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&weight_hashes(&run_dir), expected);
}

/// Data, evaluate and report keep nothing worth finishing: a signal there exits 3 at once
/// instead of being held until the stage ends, and the stage is left to be done again.
#[test]
fn a_signal_during_evaluate_exits_3_without_finishing_it() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // Enough random member orders for evaluate to take seconds.
    let sets = ["--set", "train.members=8", "--set", "evaluate.random_orders=10000"];
    ok(&run_dir, &[&sets[..], &["train"]].concat());
    ok(&run_dir, &[&sets[..], &["explain"]].concat());
    let child = agra().arg("--run-dir").arg(&run_dir).args(tiny()).args(sets).arg("evaluate").stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while status_json(&run_dir)["stages"]["evaluate"] == "missing" {
        assert!(started.elapsed() < Duration::from_secs(60), "evaluate never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "it says why it stopped");
    assert!(!run_dir.join("evaluate/metrics.json").exists(), "it stopped before the end");
    assert_eq!(status_json(&run_dir)["stages"]["evaluate"], "incomplete");
}

#[test]
fn kill_9_at_random_moments_then_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let out = train_diverging(&reference, LONGER).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("sub-seed"));
    let expected = weight_hashes(&reference);
    let run_dir = dir.path().join("run");
    // Deterministic "random" moments spread over a run's length, start-up included.
    let mut state = 0x2545_f491_u64;
    let mut kills = 0;
    for _ in 0..40 {
        if kills >= 12 {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(150 + state % 900);
        let mut child = train_diverging(&run_dir, LONGER).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    assert!(kills >= 10, "only {kills} kills landed before training finished");
    // A kill between a temp file's creation and its rename leaves it behind; the next run
    // clears its members' folders of them (planted here, as no kill is sure to land there).
    std::fs::write(run_dir.join("members/m0000/.epoch-00002.agra.x7Kq2b.tmp.safetensors"), b"partial").unwrap();
    assert!(train_diverging(&run_dir, LONGER).output().unwrap().status.success());
    let temps = (0..3).flat_map(|m| run_dir.join(format!("members/m{m:04}")).read_dir().unwrap());
    let temps: Vec<_> = temps.map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().contains(".tmp.")).collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert_eq!(weight_hashes(&run_dir), expected);
    assert_eq!(status_json(&run_dir)["members"][1]["attempt"], 1);
}

#[test]
fn a_corrupted_checkpoint_is_reported_and_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("reference");
    let expected = reference(dir.path());
    // Damage member 1's newest checkpoint and both of member 2's: 1 falls back to its
    // previous checkpoint, 2 restarts; both must end exactly where they ended before.
    let newest = |m: usize| {
        let mut files: Vec<_> = run_dir.join(format!("members/m{m:04}")).read_dir().unwrap().map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
        files.sort();
        files
    };
    let files1 = newest(1);
    let mut bytes = std::fs::read(files1.last().unwrap()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(files1.last().unwrap(), bytes).unwrap();
    for f in newest(2) {
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 3).unwrap();
    }
    let status = status_json(&run_dir);
    assert_eq!(status["members"][1]["state"], "in_progress", "a flipped bit is detected");
    assert_eq!(status["members"][2]["state"], "missing");
    assert_eq!(status["stages"]["train"], "incomplete", "run.json's word is not enough");
    let newest1 = files1.last().unwrap().to_str().unwrap();
    let passed_over = status["members"][1]["passed_over"].to_string();
    assert!(passed_over.contains(newest1) && passed_over.contains("content hash mismatch"), "{passed_over}");
    assert_eq!(status["members"][2]["passed_over"].as_array().unwrap().len(), newest(2).len());
    // Explain names the damaged file as why a member is not finished.
    let out = run(&run_dir, &[LONG, &["explain"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("1 (in_progress at epoch 7; passed over {newest1}: content hash mismatch")), "{stderr}");
    // `run`, not only `train`, trains them again (it skipped training on run.json's word).
    let out = run(&run_dir, &[LONG, &["run"]].concat());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("content hash mismatch") && stderr.contains(newest1), "{stderr}");
    assert_eq!(weight_hashes(&run_dir), expected);
}

#[test]
fn a_diverging_member_is_retried_with_a_logged_sub_seed_or_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let retried = dir.path().join("retried");
    let out = agra().arg("--run-dir").arg(&retried).args(tiny()).args(LONG).env("AGRA_INJECT_NAN", "1:2").arg("train").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("member 1: not finite (loss, weights or Adam moments) at epoch") && stderr.contains("sub-seed"), "{stderr}");
    let status = status_json(&retried);
    assert_eq!(status["members"][1]["state"], "finished");
    assert_eq!(status["members"][1]["attempt"], 1);
    resume_a_retry_without_touching_the_finished(&retried);

    let failed = dir.path().join("failed");
    let out = agra().arg("--run-dir").arg(&failed).args(tiny()).args(LONG).args(["--set", "train.nan_retries=0"])
        .env("AGRA_INJECT_NAN", "1:2").arg("train").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed member changes the exit code");
    let status = status_json(&failed);
    assert_eq!(status["members"][1]["state"], "failed");
    assert_eq!(status["members"][1]["epoch"], 3, "the epoch it diverged at (failed.json), not 0");
    assert_eq!(status["members"][0]["state"], "finished", "the others are not stopped");
    let explain = agra().arg("--run-dir").arg(&failed).args(tiny()).args(LONG).args(["--set", "train.nan_retries=0", "explain"]).output().unwrap();
    assert_eq!(explain.status.code(), Some(2), "a failed member is never averaged in silently");
    let stderr = String::from_utf8_lossy(&explain.stderr);
    assert!(stderr.contains("1 (failed at epoch 3); they diverged on every attempt: pass --allow-partial"), "{stderr}");
    // `run --allow-partial` goes on without it to the report, and still exits 1.
    let run = agra().arg("--run-dir").arg(&failed).args(tiny()).args(LONG).args(["--set", "train.nan_retries=0", "run", "--allow-partial"]).output().unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(status_json(&failed)["stages"]["report"], "complete");
    // Two members left, or one: the AGRA claims are tested only over two or more.
    let report = std::fs::read_to_string(failed.join("report/report.md")).unwrap();
    assert!(report.contains("- holds: every AGRA version") || report.contains("- does not hold: every AGRA version"), "{report}");
}

/// At lr 50 Adam's second moment overflows (g^2 past f32's range) while the loss stays finite:
/// such a member never recovers, and used to finish with a checkpoint that does not load.
#[test]
fn a_member_whose_state_overflows_under_a_finite_loss_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let sets = ["--set", "train.members=2", "--set", "train.epochs=3", "--set", "train.lr=50", "--set", "train.nan_retries=0"];
    let out = agra().arg("--run-dir").arg(dir.path()).args(tiny()).args(sets).arg("train").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("member 0: not finite (loss, weights or Adam moments) at epoch 1") && stderr.contains("train.lr"), "{stderr}");
    let status = status_json(dir.path());
    assert!(status["members"].as_array().unwrap().iter().all(|m| m["state"] == "failed"), "{status}");
    // Training again cannot help, and explain says so rather than asking for it.
    let out = agra().arg("--run-dir").arg(dir.path()).args(tiny()).args(sets).args(["explain", "--allow-partial"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing to explain") && !stderr.contains("agra train"), "{stderr}");
}

/// A run stopped while member 1's retry had no checkpoint yet (its checkpoints deleted, its
/// `retry.json` kept): the next run starts member 1 on its retry's sub-seed, not on the seed
/// that diverged, ends where the uninterrupted run ended, and leaves the finished members'
/// files alone.
fn resume_a_retry_without_touching_the_finished(run_dir: &std::path::Path) {
    let expected = weight_hashes(run_dir);
    let files = |m: usize| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let dir = run_dir.join(format!("members/m{m:04}"));
        dir.read_dir().unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), p.metadata().unwrap().modified().unwrap())).collect()
    };
    let untouched = [files(0), files(2)];
    for (path, _) in files(1).into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors")) {
        std::fs::remove_file(path).unwrap();
    }
    let member = &status_json(run_dir)["members"][1];
    assert_eq!((&member["state"], &member["attempt"]), (&"in_progress".into(), &1.into()), "a retry begun: {member}");
    let out = agra().arg("--run-dir").arg(run_dir).args(tiny()).args(LONG).env("AGRA_INJECT_NAN", "1:2").arg("train").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not finite"), "member 1 went back to its first attempt: {stderr}");
    assert_eq!(weight_hashes(run_dir), expected);
    assert_eq!([files(0), files(2)], untouched, "finished members were trained again");

    // A damaged retry.json is reported, and the member's checkpoints say which attempt it is on.
    std::fs::write(run_dir.join("members/m0001/retry.json"), "{\"attem").unwrap();
    assert_eq!(status_json(run_dir)["members"][1]["state"], "finished");
    let out = agra().arg("--run-dir").arg(run_dir).args(tiny()).args(LONG).arg("train").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retry.json is damaged") && stderr.contains("going on with attempt 1"), "{stderr}");
    assert_eq!(weight_hashes(run_dir), expected);
}

/// An explain stopped part way keeps the packs it finished; the next explain takes them back
/// and writes exactly what an uninterrupted one writes.
#[test]
fn an_interrupted_explain_resumes_from_its_finished_packs() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let sets = ["--set", "train.members=6", "--set", "train.epochs=3"];
    ok(&run_dir, &[&sets[..], &["train"]].concat());
    let explain = [&sets[..], &["explain", "--pack", "1"]].concat();
    ok(&run_dir, &explain);
    let arrays = |dir: &std::path::Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        snapshot(&dir.join("explain")).into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "npy")).collect()
    };
    let expected = arrays(&run_dir);
    assert!(!expected.is_empty() && !run_dir.join("explain/packs").exists(), "kept packs are removed once written");
    std::fs::remove_dir_all(run_dir.join("explain")).unwrap();

    let mut child = agra().arg("--run-dir").arg(&run_dir).args(tiny()).args(&explain).spawn().unwrap();
    let first = run_dir.join("explain/packs/pack-0000.safetensors");
    let started = Instant::now();
    while !first.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no pack was kept");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let code = child.wait().unwrap().code();
    if code == Some(0) {
        // Finished before the signal landed: nothing to resume.
        assert_eq!(arrays(&run_dir), expected);
        return;
    }
    assert_eq!(code, Some(3), "an interrupted explain exits 3");
    assert!(arrays(&run_dir).is_empty(), "nothing is written before every pack is done");
    assert!(status_json(&run_dir)["explain_packs_kept"].as_u64().unwrap() >= 1);
    // Not quiet, to see the note.
    let out = agra().arg("--run-dir").arg(&run_dir).args(SMALL).args(["--devices", "cpu"]).args(&explain).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("packs kept from an interrupted run"), "{stderr}");
    assert_eq!(arrays(&run_dir), expected);
}

/// A member's lock held elsewhere (on NFS, a dead node's) is waited for `AGRA_LOCK_WAIT`
/// seconds: a stop asked for meanwhile ends the wait with exit 3 at once, and a lock released
/// in time lets the run go on.
#[test]
fn a_lock_wait_ends_at_a_signal_or_when_the_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    ok(&run_dir, &["data"]);
    let path = run_dir.join("locks/member-0000.lock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let held = std::fs::File::create(&path).unwrap();
    held.lock().unwrap();
    let train = || {
        let mut cmd = agra();
        cmd.env("AGRA_LOCK_WAIT", "60").arg("--run-dir").arg(&run_dir).args(tiny()).arg("train").spawn().unwrap()
    };
    let mut child = train();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let stopped = Instant::now();
    assert_eq!(child.wait().unwrap().code(), Some(3), "a stop during the wait");
    assert!(stopped.elapsed() < Duration::from_secs(5), "the wait went on after the stop");
    let mut child = train();
    std::thread::sleep(Duration::from_millis(1500));
    held.unlock().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "a lock released in time");
}
