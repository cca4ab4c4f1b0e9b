//! The command-line contract: help, exit codes, and at least 30 bad inputs that must each give
//! a one-line error with exit code 2 and leave an existing run directory untouched.

mod common;
use common::*;

#[test]
fn help_shows_the_contract() {
    let out = agra().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["data", "train", "explain", "evaluate", "report", "run", "status", "--run-dir", "--preset", "--config", "--set", "--devices", "--quiet", "--json"] {
        assert!(text.contains(word), "help lacks {word}");
    }
    let out = agra().args(["train", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--shard"));
    // Without a command: the help with its list of commands, as a usage error.
    let out = agra().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Commands:"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn status_works_on_a_missing_and_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing");
    let out = agra().arg("--run-dir").arg(&missing).arg("status").output().unwrap();
    assert!(out.status.success());
    assert!(!missing.exists(), "status writes nothing");
    let s = status_json(dir.path());
    assert_eq!(s["stages"]["train"], "missing");
}

#[test]
fn a_reader_that_has_left_ends_nothing_early() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // Both ends of every pipe are closed before agra starts, so each of its writes meets a
    // broken pipe, as under `agra --json run | head -1` once head has its line.
    let gone = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    let cases: [&[&str]; 4] = [&["status"], &["--json", "status"], &["data"], &["--json", "data"]];
    for args in cases {
        let mut cmd = agra();
        cmd.arg("--run-dir").arg(&run_dir).args(["--preset", "quick", "--devices", "cpu"]).args(args);
        let status = cmd.stdout(gone()).stderr(gone()).status().unwrap();
        assert!(status.success(), "{args:?}: {status}");
    }
    assert_eq!(status_json(&run_dir)["stages"]["data"], "complete", "the work was done and recorded");
}

#[test]
fn a_run_directory_goes_on_with_its_own_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    ok(&run_dir, &["--set", "train.members=2", "--set", "train.epochs=2", "--set", "train.lr_decay_epochs=0", "data"]);
    // No --preset, --config or --set: the run's own config, not the paper preset's.
    let out = agra().arg("--run-dir").arg(&run_dir).args(["--devices", "cpu", "-q", "train"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = status_json(&run_dir);
    assert_eq!(status["stages"]["train"], "complete");
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    // Naming a config that differs is still refused, with the way out, by status too (Slurm's
    // submit.sh checks a sweep with it before queueing anything).
    for command in ["train", "status"] {
        let out = agra().arg("--run-dir").arg(&run_dir).args(["--preset", "quick", "-q", command]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("without --preset, --config or --set"), "{command}");
    }
}

#[test]
fn a_split_of_another_config_is_refused_and_a_deleted_one_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, other) = (dir.path().join("run"), dir.path().join("other"));
    let short = ["--set", "train.members=1", "--set", "train.epochs=2", "--set", "train.lr_decay_epochs=0"];
    ok(&run_dir, &[&short[..], &["data"]].concat());
    ok(&other, &[&short[..], &["--set", "data.length=32", "data"]].concat());
    let split = run_dir.join("data/train.safetensors");
    std::fs::copy(other.join("data/train.safetensors"), &split).unwrap();
    let out = run(&run_dir, &[&short[..], &["train"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("train.safetensors holds 64 signals of 2 x 32"), "{stderr}");
    // Same shape, another seed: the split's recorded origin tells them apart.
    let seeded = dir.path().join("seeded");
    ok(&seeded, &[&short[..], &["--set", "seed=99", "data"]].concat());
    std::fs::copy(seeded.join("data/train.safetensors"), &split).unwrap();
    let out = run(&run_dir, &[&short[..], &["train"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("train.safetensors was made by another config"), "{stderr}");
    std::fs::remove_file(&split).unwrap();
    // What a kill during the split's writing leaves is swept when it is made again.
    let stale = run_dir.join("data/.train.agra.Ab3xYz.tmp.safetensors");
    std::fs::write(&stale, b"partial").unwrap();
    ok(&run_dir, &[&short[..], &["train"]].concat());
    assert!(split.exists() && !stale.exists());
}

/// Edited or foreign outputs of a finished run are refused with their path, never followed
/// out of the run directory, never a panic (an audit found each of these panicking or writing
/// figures outside the run).
#[test]
fn damaged_outputs_are_named_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    ok(&run_dir, &["--set", "train.members=2", "--set", "train.epochs=2", "--set", "train.lr_decay_epochs=0", "run"]);
    let outside = dir.path().join("outside");
    let cases = [
        ("explain/grad/manifest.json", "evaluate", "/shape", serde_json::json!([])),
        ("explain/grad/manifest.json", "evaluate", "/members", serde_json::json!([])),
        ("explain/grad/manifest.json", "report", "/split", serde_json::json!("train")),
        ("evaluate/metrics.json", "report", "/curves/0/method", serde_json::json!(format!("../../{}", outside.display()))),
        ("evaluate/metrics.json", "report", "/curves/0/metric", serde_json::json!("../../x")),
        ("evaluate/metrics.json", "report", "/rows/0/method", serde_json::json!("foo")),
    ];
    for (file, command, key, changed) in cases {
        let path = run_dir.join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&original).unwrap();
        *value.pointer_mut(key).unwrap() = changed;
        std::fs::write(&path, value.to_string()).unwrap();
        let out = agra().arg("--run-dir").arg(&run_dir).args(["-q", command]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}{key} {command}: {stderr}");
        assert!(stderr.contains(file), "{file}{key} {command}: {stderr}");
        std::fs::write(&path, original).unwrap();
    }
    assert!(!outside.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 1, "nothing written outside the run");
    // However a file is damaged, one exit code: an output 1 (its stage is to run again, as
    // above), a split 2 (the user's to delete, as one of another config); a missing output 2.
    let damaged: [(&str, &str, &[u8], i32); 5] = [
        ("explain/grad/manifest.json", "evaluate", b"\xff\xfe", 1),
        ("explain/grad/manifest.json", "evaluate", b"", 1),
        ("evaluate/metrics.json", "report", b"\xff", 1),
        ("data/test.safetensors", "explain", b"\x10\0\0\0\0\0\0\0{", 2),
        ("data/test.safetensors", "explain", b"not a split", 2),
    ];
    for (file, command, bytes, code) in damaged {
        let path = run_dir.join(file);
        let original = std::fs::read(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let out = agra().arg("--run-dir").arg(&run_dir).args(["-q", command]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{file} as {bytes:?}, {command}: {stderr}");
        assert!(stderr.contains(file) && stderr.lines().count() == 1, "{file}, {command}: {stderr}");
        std::fs::remove_file(&path).unwrap();
        if code == 1 {
            let out = agra().arg("--run-dir").arg(&run_dir).args(["-q", command]).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{file} missing, {command}");
        }
        std::fs::write(&path, original).unwrap();
    }
    // A metrics.json cut short (a full disk, an editor) is made again by `run`, not skipped as
    // complete for report to fail on every call.
    let run_again = || {
        let out = agra().arg("--run-dir").arg(&run_dir).args(["-q", "run"]).output().unwrap();
        assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    };
    run_again();
    let metrics = run_dir.join("evaluate/metrics.json");
    let text = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, &text[..text.len() / 2]).unwrap();
    assert_eq!(status_json(&run_dir)["stages"]["evaluate"], "incomplete", "a damaged metrics.json");
    run_again();
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(status_json(&run_dir)["stages"]["report"], "complete");
    // Explanations of another split than the one evaluated are not drawn over the wrong
    // signals, nor one method's folder of the test split scored among the others' of all.
    let (grad, test_grad) = (run_dir.join("explain/grad"), dir.path().join("grad-test"));
    std::fs::create_dir(&test_grad).unwrap();
    for file in std::fs::read_dir(&grad).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, test_grad.join(file.file_name().unwrap())).unwrap();
    }
    let again = |args: &[&str]| agra().arg("--run-dir").arg(&run_dir).args(["-q", "--devices", "cpu"]).args(args).output().unwrap();
    assert!(again(&["explain", "--split", "all"]).status.success());
    for (command, expected) in [("report", "run `agra evaluate` again"), ("evaluate", "were computed apart")] {
        if command == "evaluate" {
            std::fs::remove_dir_all(&grad).unwrap();
            std::fs::rename(&test_grad, &grad).unwrap();
        }
        let out = again(&[command]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains(expected), "{command}: {stderr}");
        assert_eq!(status_json(&run_dir)["stages"]["evaluate"], "incomplete", "a new explain leaves evaluate to be done again");
    }
    // The configuration the run records: edited, or gone, is named rather than taken for
    // another run's (status listed every member missing, run refused what was typed).
    let config = run_dir.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original.replace("seed = ", "seed = 1")).unwrap();
    let refused = |expected: &str| {
        for command in ["status", "run"] {
            let out = agra().arg("--run-dir").arg(&run_dir).arg(command).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
            assert!(stderr.contains("config.toml") && stderr.contains(expected), "{command}: {stderr}");
        }
    };
    refused("was edited");
    std::fs::remove_file(&config).unwrap();
    refused("is missing");
}

#[test]
fn bad_inputs_are_one_line_usage_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    ok(&run_dir, &["data"]);
    let before = snapshot(&run_dir);
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[train]\nepochs = \"many\"\n").unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[train\n").unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let cases: Vec<Vec<String>> = [
        vec!["--set", "train.epoch=3", "data"],
        vec!["--set", "train.epochs=abc", "data"],
        vec!["--set", "train.epochs=-1", "data"],
        vec!["--set", "train.epochs=0", "data"],
        vec!["--set", "train.lr=nan", "data"],
        vec!["--set", "train.lr=inf", "data"],
        vec!["--set", "train.lr=1e300", "data"],
        vec!["--set", "model.dropout=1.5", "data"],
        vec!["--set", "data.length=100", "data"],
        vec!["--set", "data.train=5", "data"],
        vec!["--set", "data.noise=-1", "data"],
        vec!["--set", "data.period=[5]", "data"],
        vec!["--set", "data.width=[3, 1]", "data"],
        vec!["--set", "model.channels=[]", "data"],
        vec!["--set", "model.kernel=2", "data"],
        vec!["--set", "train.members=1000000000", "data"],
        vec!["--set", "explain.methods=[\"shap\"]", "data"],
        vec!["--set", "explain.split=validation", "data"],
        vec!["--set", "novalue", "data"],
        vec!["--set", "seed=-5", "data"],
        vec!["--set", "train.batch_size=100000", "data"],
        vec!["--set", "explain.max_iter=0", "data"],
        vec!["--config", "/nonexistent/agra.toml", "data"],
        vec!["--config", "/dev/zero", "data"],
        vec!["--set", "seed=-1", "data"],
        vec!["--config", bad_toml.to_str().unwrap(), "data"],
        vec!["--config", broken.to_str().unwrap(), "data"],
        vec!["--devices", "cuda:9", "data"],
        vec!["--devices", "tpu", "data"],
        vec!["--devices", "", "data"],
        vec!["train", "--shard", "5/4"],
        vec!["train", "--shard", "1/0"],
        vec!["train", "--shard", "x"],
        vec!["train", "--pack", "0"],
        vec!["run", "--pack", "0"],
        vec!["explain", "--max-batch", "0"],
        vec!["explain", "--split", "nope"],
        vec!["--set", "train.epochs=9", "data"], // a different config on an existing run
        vec!["frobnicate"],
        vec!["--bogus", "status"],
        vec!["train", "--pack", "-1"],
        // Accepted once, then broke the run: 0 in f32 (Adam divided 0 by 0, or nothing
        // trained), bumps flat in f32, a figure twice, a check that needs two members.
        vec!["--set", "train.eps=1e-50", "data"],
        vec!["--set", "train.lr=1e-300", "data"],
        vec!["--set", "data.amplitude=[1e-50, 1e-50]", "data"],
        vec!["--set", "evaluate.examples=[1, 1]", "data"],
        vec!["--set", "evaluate.sanity_members=1", "data"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    assert!(cases.len() >= 30);
    for case in &cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let mut cmd = agra();
        cmd.arg("--run-dir").arg(&run_dir).args(SMALL).arg("-q");
        if !args.contains(&"--devices") {
            cmd.args(["--devices", "cpu"]);
        }
        let out = cmd.args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case:?}: {stderr}");
        // clap's own messages (unknown subcommand or flag value) too.
        assert_eq!(stderr.trim().lines().count(), 1, "{case:?}: {stderr}");
        assert!(stderr.starts_with("agra: "), "{case:?}: {stderr}");
        assert!(!stderr.contains("panic"), "{case:?}: {stderr}");
        if let ["--set", setting, ..] = args.as_slice() {
            let key = setting.split('=').next().unwrap();
            assert!(!setting.contains('=') || stderr.contains(key), "{case:?} names its key: {stderr}");
        }
    }
    // Places that are not a usable run directory.
    let under_a_file = empty.join("run");
    for place in [foreign.as_path(), empty.as_path(), std::path::Path::new("/proc/agra-run"), &under_a_file] {
        let out = agra().arg("--run-dir").arg(place).args(tiny()).arg("data").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}: {}", place.display(), String::from_utf8_lossy(&out.stderr));
    }
    let status = |place: &std::path::Path, extra: &[&str]| agra().arg("--run-dir").arg(place).args(extra).arg("status").output().unwrap();
    assert_eq!(status(&run_dir, &["--devices", "gpu"]).status.code(), Some(2), "status checks --devices too");
    for place in [empty.as_path(), &under_a_file] {
        let out = status(place, &[]);
        assert_eq!(out.status.code(), Some(2), "status {}: {}", place.display(), String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "mine");
    assert_eq!(before, snapshot(&run_dir), "no file of the run directory changed");
}
