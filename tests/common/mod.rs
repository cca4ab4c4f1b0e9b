//! Helpers for the end-to-end tests: run the real binary on tiny configs in temp directories.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn agra() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agra"));
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// The quick preset at the suite's small sizes (64 training signals, 10 epochs: members that
/// have not learned the score, which these tests do not need), so a whole pipeline runs in a
/// second and each training run in a fraction of one.
pub const SMALL: &[&str] =
    &["--preset", "quick", "--set", "data.signals=96", "--set", "data.train=64", "--set", "train.epochs=10", "--set", "train.lr=1e-3"];

/// SMALL on the CPU, quietly.
pub fn tiny() -> Vec<&'static str> {
    [SMALL, &["--devices", "cpu", "-q"]].concat()
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = agra();
    cmd.arg("--run-dir").arg(dir).args(tiny()).args(args);
    cmd.output().expect("agra runs")
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(out.status.success(), "agra {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn status_json(dir: &Path) -> serde_json::Value {
    let out = agra().arg("--run-dir").arg(dir).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// member index -> weights hash, for every finished member.
pub fn weight_hashes(dir: &Path) -> BTreeMap<u64, String> {
    let status = status_json(dir);
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "finished")
        .map(|m| (m["index"].as_u64().unwrap(), m["weights_hash"].as_str().unwrap().to_string()))
        .collect()
}

/// Path -> content of every file below `dir` (for "nothing changed" checks).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Member m's final weights, read from its newest checkpoint with the safetensors crate.
pub fn member_weights(dir: &Path, member: usize) -> Vec<f32> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("members/m{member:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("epoch-"))
        .collect();
    files.sort();
    let bytes = std::fs::read(files.last().unwrap()).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = tensors.names().into_iter().filter(|n| n.starts_with("w.")).cloned().collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| tensors.tensor(n).unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>())
        .collect()
}
