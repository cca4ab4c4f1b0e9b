//! `agra evaluate`: scores every method and its AGRA version against the ground truth the data
//! set knows. Single-member methods are scored per member, then mean +/- std over members, as
//! the paper does; the AGRA version is the score of the member average. Writes
//! `evaluate/metrics.json`, which `agra report` turns into tables and figures.

pub mod curve;
mod nan;
pub mod sanity;
pub mod signal;
pub mod stats;

use crate::data::Split;
use crate::explain::{load_methods, MethodArrays};
use crate::farm::Devices;
use crate::progress::Progress;
use crate::store::rundir::Stage;
use crate::store::RunDir;
use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use signal::{Scores, Wanted, NAMES};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stat {
    #[serde(deserialize_with = "nan::f64")]
    pub mean: f64,
    /// NaN (null in JSON) for AGRA rows, which are one number.
    #[serde(deserialize_with = "nan::f64")]
    pub std: f64,
    /// Values averaged: members for single-member rows, signals for AGRA rows.
    pub n: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub method: String,
    /// "single" (mean +/- std over members) or "agra" (the member average).
    pub variant: String,
    pub metrics: BTreeMap<String, Stat>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub split: String,
    pub signals: usize,
    /// Signals without a perturbation: no correlation is defined for them, so they are left
    /// out of every Pearson and localisation mean (but not of MSE).
    pub excluded_unperturbed: usize,
    /// MSE between the perturbed input and the ideal signal: what doing nothing scores.
    #[serde(deserialize_with = "nan::f64")]
    pub identity_mse: f64,
    pub members: usize,
    pub rows: Vec<Row>,
    pub curves: Vec<curve::Curve>,
    pub sanity: Option<sanity::Sanity>,
    pub explain: Vec<crate::explain::export::MethodSummary>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub rows: Vec<Row>,
    /// None where there was no check (fewer than 2 members) or its answer is undefined.
    pub sanity_passed: Option<bool>,
    /// Whether the check ran, to tell those two apart.
    pub sanity_ran: bool,
    pub file: String,
    pub seconds: f64,
}

pub fn run(run: &RunDir, devices: &Devices, ui: &Progress) -> Result<Summary> {
    let started = Instant::now();
    let _lock = run.stage_lock("evaluate")?;
    crate::store::remove_stale_temps([run.evaluate_dir()])?;
    run.stage_started(Stage::Evaluate, &devices.names())?;
    let config = &run.config;
    let methods: Vec<MethodArrays> = load_methods(run, &config.explain.methods)?;
    let split = methods[0].manifest.split.clone();
    let truth = crate::explain::load_signals(run, &split)?;
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for arrays in &methods {
        let name = &arrays.manifest.method;
        ui.note(&format!("evaluate: {name}"));
        let wanted = Wanted { reconstructs: signal::reconstructs(name), localisation: true };
        let m = arrays.manifest.members.len();
        if let Some(members) = &arrays.members {
            let per_member = members.len() / m;
            let means: Vec<[Option<f64>; 7]> = (0..m)
                .map(|k| mean_scores(&truth, &members[k * per_member..(k + 1) * per_member], wanted).0)
                .collect();
            rows.push(Row { method: name.clone(), variant: "single".into(), metrics: over_members(&means) });
            curves.extend(curve::curves(name, &truth, members, m, wanted.reconstructs, config.evaluate.random_orders, config.seed));
        }
        let (means, counts) = mean_scores(&truth, &arrays.ensemble, wanted);
        let metrics = NAMES
            .iter()
            .zip(means.iter().zip(counts))
            .filter_map(|(name, (v, n))| v.map(|mean| (name.to_string(), Stat { mean, std: f64::NAN, n })))
            .collect();
        rows.push(Row { method: format!("agra-{name}"), variant: "agra".into(), metrics });
    }
    let sanity = sanity_check(run, devices, &truth, ui)?;
    let evaluation = Evaluation {
        split,
        signals: truth.len(),
        excluded_unperturbed: truth.perturbations.iter().filter(|p| p.is_empty()).count(),
        identity_mse: (0..truth.len()).map(|i| signal::identity_mse(&truth, i)).sum::<f64>() / truth.len() as f64,
        members: methods[0].manifest.members.len(),
        rows: rows.clone(),
        curves,
        sanity: sanity.clone(),
        explain: methods.iter().map(|m| m.manifest.clone()).collect(),
    };
    let path = run.evaluate_dir().join("metrics.json");
    crate::store::write_atomic(&path, serde_json::to_string_pretty(&evaluation)?.as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    run.stage_finished(Stage::Evaluate, seconds)?;
    let (sanity_passed, sanity_ran) = (sanity.as_ref().and_then(|s| s.passed), sanity.is_some());
    Ok(Summary { rows, sanity_passed, sanity_ran, file: path.display().to_string(), seconds })
}

pub fn load(run: &RunDir) -> Result<Evaluation> {
    let path = run.evaluate_dir().join("metrics.json");
    let evaluation: Evaluation = crate::store::read_output(&path, "evaluate")?;
    if let Some(why) = foreign_name(&evaluation, &run.config) {
        anyhow::bail!("{} is damaged; run `agra evaluate` again ({why})", path.display());
    }
    Ok(evaluation)
}

/// A split, method or metric name the report would not know, if there is one. The report
/// reads the split and each method's arrays, and names figure files, by these names; one
/// such as "../x" would write outside the run directory.
fn foreign_name(e: &Evaluation, config: &crate::config::Config) -> Option<String> {
    let known = |m: &str| config.explain.methods.iter().any(|k| k == m);
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if config.data.split_len(&e.split).is_none() {
        return Some(format!("split {:?}", e.split));
    }
    let rows = e.rows.iter().map(|r| r.method.strip_prefix("agra-").unwrap_or(&r.method));
    let methods = e.explain.iter().map(|m| m.method.as_str()).chain(e.curves.iter().map(|c| c.method.as_str())).chain(rows);
    if let Some(m) = methods.into_iter().find(|m| !known(m)) {
        return Some(format!("method {m:?}"));
    }
    let metrics = e.rows.iter().flat_map(|r| r.metrics.keys()).find(|k| !NAMES.contains(&k.as_str()));
    metrics.or_else(|| e.curves.iter().map(|c| &c.metric).find(|m| !plain(m))).map(|m| format!("metric {m:?}"))
}

/// Mean of each metric over the signals where it is defined, and how many those were.
/// `attributions`: [S, dims, T].
fn mean_scores(truth: &Split, attributions: &[f32], wanted: Wanted) -> ([Option<f64>; 7], [usize; 7]) {
    let per = truth.dims * truth.length;
    let scores: Vec<Scores> =
        (0..truth.len()).into_par_iter().map(|i| signal::score(truth, i, &attributions[i * per..(i + 1) * per], wanted)).collect();
    let mut totals = [(0.0, 0usize); 7];
    for s in &scores {
        for (slot, v) in totals.iter_mut().zip(s.values()) {
            if let Some(v) = v {
                slot.0 += v;
                slot.1 += 1;
            }
        }
    }
    (totals.map(|(t, n)| (n > 0).then(|| t / n as f64)), totals.map(|(_, n)| n))
}

/// Mean +/- std over members of each member's signal-averaged metric.
fn over_members(means: &[[Option<f64>; 7]]) -> BTreeMap<String, Stat> {
    NAMES
        .iter()
        .enumerate()
        .filter_map(|(j, name)| {
            let values: Vec<f64> = means.iter().filter_map(|m| m[j]).collect();
            (!values.is_empty()).then(|| {
                let (mean, std) = stats::mean_std(&values);
                (name.to_string(), Stat { mean, std, n: values.len() })
            })
        })
        .collect()
}

fn sanity_check(run: &RunDir, devices: &Devices, truth: &Split, ui: &Progress) -> Result<Option<sanity::Sanity>> {
    let wanted = run.config.evaluate.sanity_members;
    let arch = crate::model::Architecture::new(&run.config.model, run.config.data.dims, run.config.data.length);
    let mut trained = Vec::new();
    for m in 0..run.config.train.members {
        if trained.len() == wanted {
            break;
        }
        if let crate::train::MemberStanding { state: "finished", checkpoint: Some(c), .. } = crate::train::member_state(run, &arch, m)? {
            trained.push(c.weights);
        }
    }
    ui.note(&format!("evaluate: model-randomisation check with {} members", trained.len()));
    sanity::check(&run.config, &devices.workers[0], &trained, truth)
}
