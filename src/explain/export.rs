//! Combining the packs' results and writing them: per method a folder under `explain/` with
//! `ensemble.npy` (the AGRA mean over members), `std.npy`, `members.npy` (with keep_members),
//! iteration and completeness statistics, and `manifest.json`.

use super::{MethodPart, PackResult};
use crate::cli::ExplainArgs;
use crate::error::UsageError;
use crate::store::{npy, RunDir};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: String,
    pub members: Vec<usize>,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub split: String,
    pub config_hash: String,
    pub parameters: serde_json::Value,
    pub files: Vec<String>,
    pub seconds: f64,
    pub gradient_evaluations: f64,
    pub evaluations_per_second: f64,
    /// grad and smoothgrad: pairs that did not reach the tolerance, and mean iterations.
    pub not_converged: Option<usize>,
    /// grad and smoothgrad: pairs already below the tolerance at the start, whose attribution
    /// is zero (the member scores the signal optimal as it is). Absent from older manifests.
    #[serde(default)]
    pub already_optimal: Option<usize>,
    pub mean_iterations: Option<f64>,
    /// ig: mean |sum(A) - (L(x) - L(0))| over pairs.
    pub completeness_gap: Option<f64>,
}

/// Every array file a method's folder can hold.
const OUTPUTS: [&str; 7] =
    ["ensemble.npy", "std.npy", "members.npy", "iterations.npy", "converged.npy", "completeness_gap.npy", "attributions.safetensors"];

pub fn write_all(
    run: &RunDir,
    ids: &[usize],
    shape: &[usize; 3],
    split: &str,
    args: &ExplainArgs,
    results: Vec<PackResult>,
) -> Result<Vec<MethodSummary>> {
    let names: Vec<String> = results.first().map(|r| r.methods.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
    let mut summaries = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let parts: Vec<(&[usize], &MethodPart)> = results.iter().map(|r| (r.positions.as_slice(), &r.methods[index].1)).collect();
        summaries.push(write_method(run, name, ids, shape, split, args, &parts)?);
    }
    Ok(summaries)
}

fn write_method(
    run: &RunDir,
    name: &str,
    ids: &[usize],
    shape: &[usize; 3],
    split: &str,
    args: &ExplainArgs,
    parts: &[(&[usize], &MethodPart)],
) -> Result<MethodSummary> {
    let dir = run.explain_dir().join(name);
    let (m, s) = (ids.len(), shape[0]);
    let per_signal: usize = shape.iter().product();
    let mut members = vec![0f32; m * per_signal];
    let mut iterations = vec![0i64; m * s];
    let mut converged = vec![0u8; m * s];
    let mut gap = vec![0f32; m * s];
    let (mut count, mut mean, mut m2) = (0usize, vec![0f64; per_signal], vec![0f64; per_signal]);
    let (mut seconds, mut evaluations) = (0.0, 0.0);
    for (positions, part) in parts {
        for (i, &pos) in positions.iter().enumerate() {
            members[pos * per_signal..(pos + 1) * per_signal].copy_from_slice(&part.members[i * per_signal..(i + 1) * per_signal]);
            let row = pos * s..(pos + 1) * s;
            if let Some(it) = &part.iterations {
                iterations[row.clone()].copy_from_slice(&it[i * s..(i + 1) * s]);
            }
            if let Some(c) = &part.converged {
                converged[row.clone()].copy_from_slice(&c[i * s..(i + 1) * s]);
            }
            if let Some(g) = &part.gap {
                gap[row].copy_from_slice(&g[i * s..(i + 1) * s]);
            }
        }
        count = chan_combine(count, &mut mean, &mut m2, positions.len(), &part.mean, &part.m2);
        seconds += part.seconds;
        evaluations += part.evaluations;
    }
    let std: Vec<f32> = m2.iter().map(|v| (v / count as f64).sqrt() as f32).collect();
    let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let full = [m, shape[0], shape[1], shape[2]];
    let mut files = vec![];
    let mut put = |file: &str, bytes: Vec<u8>| -> Result<()> {
        debug_assert!(OUTPUTS.contains(&file), "{file} is missing from OUTPUTS, so a stale one would stay");
        crate::store::write_atomic(&dir.join(file), &bytes)?;
        files.push(file.to_string());
        Ok(())
    };
    put("ensemble.npy", npy::to_bytes(shape, &mean)?)?;
    put("std.npy", npy::to_bytes(shape, &std)?)?;
    if run.config.explain.keep_members {
        put("members.npy", npy::to_bytes(&full, &members)?)?;
    }
    let first = parts.first().map(|(_, p)| *p);
    let has = |f: fn(&MethodPart) -> bool| first.is_some_and(f);
    if has(|p| p.iterations.is_some()) {
        put("iterations.npy", npy::to_bytes(&[m, s], &iterations)?)?;
        put("converged.npy", npy::to_bytes(&[m, s], &converged)?)?;
    }
    if has(|p| p.gap.is_some()) {
        put("completeness_gap.npy", npy::to_bytes(&[m, s], &gap)?)?;
    }
    if args.safetensors {
        put("attributions.safetensors", safetensors_bytes(&mean, &std, &members, shape, &full)?)?;
    }
    // What an earlier explain wrote and this one did not (--safetensors is per invocation, and
    // --split changes every shape) would otherwise sit beside the new arrays, stale.
    for old in OUTPUTS.iter().filter(|f| !files.iter().any(|w| w == *f)) {
        crate::store::remove_if_present(&dir.join(old))?;
    }
    let e = &run.config.explain;
    let parameters = match name {
        "grad" | "gxi" => serde_json::json!({"eta": e.eta, "tol": e.tol, "max_iter": e.max_iter}),
        "smoothgrad" => serde_json::json!({"eta": e.eta, "tol": e.tol, "max_iter": e.max_iter, "samples": e.smooth_samples, "sigma": e.smooth_sigma}),
        "ig" => serde_json::json!({"steps": e.ig_steps, "baseline": 0.0}),
        _ => serde_json::json!({}),
    };
    let has_iterations = has(|p| p.iterations.is_some());
    let summary = MethodSummary {
        method: name.to_string(),
        members: ids.to_vec(),
        shape: full.to_vec(),
        dtype: "float32".into(),
        split: split.to_string(),
        config_hash: run.config.hash(),
        parameters,
        files,
        seconds,
        gradient_evaluations: evaluations,
        evaluations_per_second: evaluations / seconds.max(1e-9),
        not_converged: has_iterations.then(|| converged.iter().filter(|&&c| c == 0).count()),
        already_optimal: has_iterations.then(|| iterations.iter().zip(&converged).filter(|&(&n, &c)| n == 0 && c == 1).count()),
        mean_iterations: has_iterations.then(|| iterations.iter().sum::<i64>() as f64 / iterations.len().max(1) as f64),
        completeness_gap: has(|p| p.gap.is_some()).then(|| gap.iter().map(|&g| g as f64).sum::<f64>() / gap.len().max(1) as f64),
    };
    crate::store::write_atomic(&dir.join("manifest.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(summary)
}

/// Chan et al.'s pairwise update: folds a pack's (n_b, mean_b, M2_b) into the running
/// (n_a, mean_a, M2_a):  d = mean_b - mean_a;  mean = mean_a + d n_b / n;
/// M2 = M2_a + M2_b + d^2 n_a n_b / n. Returns n.
pub(super) fn chan_combine(n_a: usize, mean: &mut [f64], m2: &mut [f64], n_b: usize, mean_b: &[f32], m2_b: &[f32]) -> usize {
    let n = n_a + n_b;
    let (fa, fb, fnn) = (n_a as f64, n_b as f64, n as f64);
    for i in 0..mean.len() {
        let d = mean_b[i] as f64 - mean[i];
        mean[i] += d * fb / fnn;
        m2[i] += m2_b[i] as f64 + d * d * fa * fb / fnn;
    }
    n
}

fn safetensors_bytes(mean: &[f32], std: &[f32], members: &[f32], shape: &[usize; 3], full: &[usize; 4]) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    use crate::store::f32_bytes;
    let (a, b, c) = (f32_bytes(mean), f32_bytes(std), f32_bytes(members));
    let views = vec![
        ("ensemble", TensorView::new(Dtype::F32, shape.to_vec(), &a)?),
        ("std", TensorView::new(Dtype::F32, shape.to_vec(), &b)?),
        ("members", TensorView::new(Dtype::F32, full.to_vec(), &c)?),
    ];
    Ok(safetensors::serialize(views, &None)?)
}

/// Why a manifest cannot describe `method`'s arrays for this run, if it cannot: evaluation
/// indexes the split's ground truth and the members by what the manifest says.
fn mismatch(manifest: &MethodSummary, run: &RunDir, method: &str) -> Option<String> {
    let c = &run.config;
    let Some(signals) = c.data.split_len(&manifest.split) else {
        return Some(format!("split {:?}", manifest.split));
    };
    let members = &manifest.members;
    let want = [members.len(), signals, c.data.dims, c.data.length];
    if manifest.method != method {
        Some(format!("method {:?}", manifest.method))
    } else if manifest.config_hash != c.hash() {
        Some(format!("config hash {}, the run's is {}", manifest.config_hash, c.hash()))
    } else if members.is_empty() || members.windows(2).any(|w| w[0] >= w[1]) || members.iter().any(|&m| m >= c.train.members) {
        Some(format!("members {members:?}"))
    } else if manifest.shape != want {
        Some(format!("shape {:?}, expected {want:?}", manifest.shape))
    } else {
        None
    }
}

/// A method's exported arrays, read back for evaluation.
pub struct MethodArrays {
    pub manifest: MethodSummary,
    pub ensemble: Vec<f32>,
    pub std: Vec<f32>,
    pub members: Option<Vec<f32>>,
}

/// Every named method's arrays, refused unless all were computed on one split by the same
/// members: evaluation and the report pair them with one ground truth (`agra explain --split
/// all` after a test-split explain of fewer methods would mix them).
pub fn load_methods(run: &RunDir, names: &[String]) -> Result<Vec<MethodArrays>> {
    let all: Vec<MethodArrays> = names.iter().map(|m| load_method(run, m)).collect::<Result<_>>()?;
    if let Some((first, rest)) = all.split_first() {
        let (a, split, members) = (&first.manifest.method, &first.manifest.split, &first.manifest.members);
        if let Some(other) = rest.iter().map(|r| &r.manifest).find(|m| (&m.split, &m.members) != (split, members)) {
            anyhow::bail!(
                "explain/{a} ({split} split, members {members:?}) and explain/{} ({} split, members {:?}) were computed apart; run `agra explain` again",
                other.method,
                other.split,
                other.members
            );
        }
    }
    Ok(all)
}

fn load_method(run: &RunDir, name: &str) -> Result<MethodArrays> {
    let dir = run.explain_dir().join(name);
    let manifest_path = dir.join("manifest.json");
    let manifest: MethodSummary = crate::store::read_output(&manifest_path, "explain")?;
    for file in &manifest.files {
        if Path::new(file).components().count() != 1 {
            return Err(UsageError::new(format!("{}: file {file:?} lies outside the run directory", manifest_path.display())).into());
        }
    }
    if let Some(why) = mismatch(&manifest, run, name) {
        anyhow::bail!("{} does not belong to this run ({why}); run `agra explain` again", manifest_path.display());
    }
    let read = |file: &str, expect: &[usize]| -> Result<Vec<f32>> {
        let (shape, data) = npy::read::<f32>(&dir.join(file))?;
        anyhow::ensure!(shape == expect, "{}: shape {shape:?}, expected {expect:?}", dir.join(file).display());
        Ok(data)
    };
    let shape = &manifest.shape;
    let ensemble = read("ensemble.npy", &shape[1..])?;
    let std = read("std.npy", &shape[1..])?;
    let members = if manifest.files.iter().any(|f| f == "members.npy") { Some(read("members.npy", shape)?) } else { None };
    Ok(MethodArrays { manifest, ensemble, std, members })
}
