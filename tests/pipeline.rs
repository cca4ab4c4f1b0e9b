//! The whole pipeline on the quick preset: every stage's outputs, idempotent re-runs, shards,
//! the multi-device path on CPU workers, and `status` on partial and finished runs.

mod common;
use common::*;

#[test]
fn agra_run_produces_every_output_and_a_second_run_skips_everything() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let out = agra().arg("--run-dir").arg(&run_dir).args(["--preset", "quick", "--devices", "cpu,cpu", "--json", "run"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stages: Vec<&str> = lines.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["data", "train", "explain", "evaluate", "report", "run"]);
    assert_eq!(lines[1]["finished"], 4);
    // A first look with the quick preset shows members that have learned the score.
    assert!(lines[1]["r2_min"].as_f64().unwrap() > 0.5, "{}", lines[1]);
    let memory = &lines[2]["memory"];
    assert!(memory["peak_rows"].as_u64().is_some_and(|r| (1..=256).contains(&r)), "--max-batch's default bounds a pass: {memory}");
    assert!(memory["peak_host_bytes"].as_u64().unwrap() > 1 << 20, "{memory}");

    for method in ["grad", "smoothgrad", "saliency", "gxi", "ig"] {
        let d = run_dir.join("explain").join(method);
        for f in ["ensemble.npy", "std.npy", "members.npy", "manifest.json"] {
            assert!(d.join(f).exists(), "{method}/{f}");
        }
    }
    let report = std::fs::read_to_string(run_dir.join("report/report.md")).unwrap();
    assert!(report.contains("Table I") && report.contains("Table IV"));
    // With 4 members a curve always makes its whole gain by k = 20: not counted as holding.
    assert!(report.contains("- not tested: whether the Figure 4 curves") && !report.contains("flattens by k = 20"), "{report}");
    let r2 = format!("R² {:.3} ± {:.3}", lines[1]["r2_mean"].as_f64().unwrap(), lines[1]["r2_std"].as_f64().unwrap());
    assert!(report.contains(&r2), "the report states the members' quality as train did: {r2}");
    for link in report.lines().filter_map(|l| l.split("](").nth(1)).map(|l| l.split(')').next().unwrap()) {
        assert!(run_dir.join("report").join(link).exists(), "broken link {link}");
    }
    assert!(run_dir.join("report/figures/fig1_data.png").exists());
    let status = status_json(&run_dir);
    for stage in ["data", "train", "explain", "evaluate", "report"] {
        assert_eq!(status["stages"][stage], "complete");
    }
    check_against_numpy(&run_dir);
    check_against_pytorch(&run_dir);
    let before = snapshot(&run_dir.join("members"));
    let again = agra().arg("--run-dir").arg(&run_dir).args(["--preset", "quick", "--devices", "cpu", "run"]).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already complete"));
    assert_eq!(before, snapshot(&run_dir.join("members")));
    // A stage whose outputs were deleted is done again, not skipped on run.json's word.
    let report = run_dir.join("report/report.md");
    std::fs::remove_file(&report).unwrap();
    assert_eq!(status_json(&run_dir)["stages"]["report"], "incomplete");
    let third = agra().arg("--run-dir").arg(&run_dir).args(["--devices", "cpu", "-q", "run"]).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert!(report.exists());
}

/// Shards give bit-identical members to one process with the same packing; another pack size
/// gives the same members within 1e-4 relative (different kernels round differently).
#[test]
fn shards_and_pack_sizes_give_the_same_members_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (one, sharded, packed) = (dir.path().join("one"), dir.path().join("sharded"), dir.path().join("packed"));
    ok(&one, &["train", "--pack", "1"]);
    let fresh = agra().arg("--run-dir").arg(&sharded).args(tiny()).args(["status", "--json"]).output().unwrap();
    let fresh: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(fresh["members"].as_array().unwrap().len(), 4, "a fresh run lists its members as missing");
    assert!(!sharded.exists());
    ok(&sharded, &["train", "--shard", "1/2", "--pack", "1"]);
    let partial = status_json(&sharded);
    let states: Vec<&str> = partial["members"].as_array().unwrap().iter().map(|m| m["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["missing", "finished", "missing", "finished"]);
    assert_eq!(partial["stages"]["train"], "incomplete");
    let out = run(&sharded, &["explain"]);
    assert_eq!(out.status.code(), Some(2), "missing members refuse explain");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 (missing)"));
    // A job array's task running the whole pipeline stops after its shard's training.
    ok(&sharded, &["run", "--shard", "1/2", "--pack", "1"]);
    assert_eq!(status_json(&sharded)["stages"]["explain"], "missing");
    ok(&sharded, &["explain", "--allow-partial"]);
    assert_eq!(status_json(&sharded)["stages"]["explain"], "complete");
    ok(&sharded, &["train", "--shard", "0/2", "--pack", "1"]);
    assert_eq!(status_json(&sharded)["stages"]["train"], "complete");
    // The partial ensemble is stale now that every member has finished: `run` explains again.
    assert_eq!(status_json(&sharded)["stages"]["explain"], "incomplete");
    ok(&sharded, &["run"]);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(sharded.join("explain/grad/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["members"].as_array().unwrap().len(), 4);
    let reference = weight_hashes(&one);
    assert_eq!(reference.len(), 4);
    assert_eq!(reference, weight_hashes(&sharded), "members do not depend on the shard");

    ok(&packed, &["train", "--pack", "4"]);
    for m in 0..4 {
        let (a, b) = (member_weights(&one, m), member_weights(&packed, m));
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff / scale < 1e-4, "member {m}: relative difference {}", diff / scale);
    }
}

#[test]
fn data_export_writes_npy_for_python() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["data", "--export", "npy", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["train"], 64);
    assert!(dir.path().join("data/npy").read_dir().unwrap().count() >= 6);
}

/// The evaluation agrees with numpy and scipy recomputing it from the exported arrays
/// (scripts/check_evaluation.py), which also proves the exports load in Python.
fn check_against_numpy(run_dir: &std::path::Path) {
    let Some(numpy) = python_check("check_evaluation.py", run_dir) else { return };
    let ours: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("evaluate/metrics.json")).unwrap()).unwrap();
    let mut compared = 0;
    for row in ours["rows"].as_array().unwrap().iter().filter(|r| r["variant"] == "agra") {
        let method = row["method"].as_str().unwrap();
        for (metric, theirs) in numpy[method].as_object().unwrap() {
            let mine = row["metrics"][metric]["mean"].as_f64();
            match (mine, theirs.as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-5 * b.abs().max(1e-3), "{method} {metric}: {a} vs {b}"),
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{method} {metric}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 9, "5 unsigned Pearson, and signed Pearson and MSE of grad and smoothgrad");
}

/// Every member's saliency, ig, grad and gxi recomputed in float64 with PyTorch and Captum from
/// the checkpoints (scripts/check_explain.py). Pairs agree to float32 rounding but for a few:
/// a max-pool tie broken the other way, or a descent that passes a ReLU or max-pool kink on
/// its other side and ends elsewhere (0-5% of grad's pairs on quick runs). A wrong definition
/// moves nearly all of them (eta 0.1% off: 249 of 256).
fn check_against_pytorch(run_dir: &std::path::Path) {
    let Some(torch) = python_check("check_explain.py", run_dir) else { return };
    let count = |method: &str, key: &str| torch[method][key].as_u64().unwrap_or_else(|| panic!("{method} {key}: {torch}")) as f64;
    for method in ["saliency", "ig", "grad", "gxi"] {
        let (pairs, apart) = (count(method, "pairs"), count(method, "pairs_apart"));
        assert_eq!(pairs, 4.0 * 32.0, "{method}: every member and test signal");
        let (most_apart, most_off) = if matches!(method, "saliency" | "ig") { (pairs / 100.0, 0.05) } else { (0.15 * pairs, 0.25) };
        assert!(apart <= most_apart.max(1.0), "{method}: {torch}");
        assert!(torch[method]["max_rel_diff_together"].as_f64().unwrap() < 1e-5, "{method}: {torch}");
        assert!(torch[method]["max_rel_diff"].as_f64().unwrap() < most_off, "{method}: {torch}");
    }
    let (iterations, converged) = (count("grad", "iterations_differ"), count("grad", "converged_differ"));
    assert!(iterations <= count("grad", "pairs_apart").min(0.05 * count("grad", "pairs")), "grad: {torch}");
    assert!(converged <= count("grad", "pairs_apart"), "grad: {torch}");
}

/// The JSON a script of scripts/ prints about the run, or None without the set-up Python.
fn python_check(script: &str, run_dir: &std::path::Path) -> Option<serde_json::Value> {
    let Some(python) = option_env!("AGRA_PYTHON") else {
        eprintln!("skipped: AGRA_PYTHON is not set (run scripts/setup)");
        return None;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    let out = std::process::Command::new(python).arg(script).arg(run_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// With one member the AGRA average is that member, and without the member arrays there is no
/// single-member side: neither may make the AGRA claims hold (or fail) vacuously, and the
/// evaluate summary still shows the AGRA figures.
#[test]
fn claims_that_a_run_cannot_test_are_said_to_be_untested() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    ok(&one, &["--set", "train.members=1", "--set", "evaluate.sanity_members=0", "run"]);
    let report = std::fs::read_to_string(one.join("report/report.md")).unwrap();
    assert!(report.contains("- not tested: whether AGRA versions beat their single-member methods: with 1 member"), "{report}");
    assert!(!report.contains("holds:"), "{report}");
    let arrays = dir.path().join("arrays");
    let sets = ["--set", "train.members=2", "--set", "explain.keep_members=false"];
    ok(&arrays, &[&sets[..], &["run"]].concat());
    let out = agra().arg("--run-dir").arg(&arrays).args(SMALL).args(sets).args(["--devices", "cpu", "evaluate"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("grad NA -> agra 0."), "{said}");
    let report = std::fs::read_to_string(arrays.join("report/report.md")).unwrap();
    assert!(report.contains("- not tested: whether every AGRA version beats its single-member method"), "{report}");
}

/// `--safetensors` adds the arrays as one safetensors file per method, listed in the manifest;
/// an explain without it (or of another split) removes it rather than leave it stale.
#[test]
fn explain_writes_safetensors_on_request_and_never_leaves_them_stale() {
    let dir = tempfile::tempdir().unwrap();
    let two = ["--set", "train.members=2", "--set", "explain.methods=[\"saliency\"]"];
    ok(dir.path(), &[&two[..], &["train"]].concat());
    ok(dir.path(), &[&two[..], &["explain", "--safetensors"]].concat());
    let folder = dir.path().join("explain/saliency");
    let bytes = std::fs::read(folder.join("attributions.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ensemble = np_shape(&folder.join("ensemble.npy"));
    assert_eq!(file.tensor("ensemble").unwrap().shape(), ensemble.as_slice());
    assert_eq!(file.tensor("members").unwrap().shape(), [&[2][..], &ensemble].concat().as_slice());
    let manifest = std::fs::read_to_string(folder.join("manifest.json")).unwrap();
    assert!(manifest.contains("attributions.safetensors"), "{manifest}");
    ok(dir.path(), &[&two[..], &["explain", "--split", "train"]].concat());
    assert!(!folder.join("attributions.safetensors").exists(), "a stale safetensors file beside the train split's arrays");
}

/// The shape a .npy file's header states.
fn np_shape(path: &std::path::Path) -> Vec<usize> {
    let header = String::from_utf8_lossy(&std::fs::read(path).unwrap()[..128]).into_owned();
    let inside = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    inside.split(',').filter_map(|d| d.trim().parse().ok()).collect()
}
