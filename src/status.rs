//! `agra status`, and the one-line human form of each stage's summary. Status only reads: it
//! works on a missing, empty, partial or finished run directory and changes nothing.

use crate::model::Architecture;
use crate::progress;
use crate::store::lock::Lock;
use crate::config::Config;
use crate::store::rundir::{Meta, Stage};
use crate::store::RunDir;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;

/// A stage summary's line for people (the JSON form comes from Serialize).
pub trait Human {
    fn human(&self) -> String;
}

impl Human for crate::data::Summary {
    fn human(&self) -> String {
        format!(
            "{} train + {} test signals, mean score {:.2}, mean {:.2} perturbations; {}",
            self.train, self.test, self.mean_score, self.mean_perturbations, self.files.join(", ")
        )
    }
}

impl Human for crate::train::Summary {
    fn human(&self) -> String {
        let failed = if self.failed.is_empty() { String::new() } else { format!(", failed {:?}", self.failed) };
        if self.finished == 0 {
            return format!("0 of {} members finished{failed}; {:.1} s", self.members.len(), self.seconds);
        }
        format!(
            "{} of {} members finished{failed}; test MSE {:.3} +/- {:.3}, {}; {:.1} s",
            self.finished,
            self.members.len(),
            self.quality.test_mse_mean,
            self.quality.test_mse_std,
            self.quality.r2_text(" +/- "),
            self.seconds
        )
    }
}

impl Human for crate::explain::Summary {
    fn human(&self) -> String {
        let methods: Vec<String> = self
            .methods
            .iter()
            .map(|m| {
                let conv = m.not_converged.map(|n| format!(", {n} not converged")).unwrap_or_default();
                let idle = m.already_optimal.filter(|&n| n > 0).map(|n| format!(", {n} already optimal")).unwrap_or_default();
                let gap = m.completeness_gap.map(|g| format!(", completeness gap {g:.4}")).unwrap_or_default();
                format!("{} {:.1} worker-s {:.0} grad/worker-s{conv}{idle}{gap}", m.method, m.seconds, m.evaluations_per_second)
            })
            .collect();
        let memory = &self.memory;
        let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64);
        let mut held = vec![format!("{} rows a pass at most", memory.peak_rows), format!("{} resident", mib(memory.peak_host_bytes))];
        held.extend(memory.peak_device_bytes.iter().map(|(device, &bytes)| format!("{} on {device}", mib(bytes))));
        format!(
            "{} members x {} {} signals: {}; {}; {:.1} s",
            self.members.len(),
            self.signals,
            self.split,
            methods.join("; "),
            held.join(", "),
            self.seconds
        )
    }
}

/// Describes the run at `root`; a directory not started yet is described with `config`
/// (every stage and member missing), so a job script can count members before submitting.
pub fn run(root: &Path, config: &Config, as_json: bool) -> Result<()> {
    crate::store::rundir::refuse_file(root)?;
    let report = match RunDir::inspect(root)? {
        Some((run, meta)) => {
            // A config named on the command line that is not the run's is refused here as by
            // every other command (Slurm's submit.sh checks a run with status before queueing).
            if !meta.config_hash.is_empty() {
                RunDir::unopened(root, config).check_same_config(&meta)?;
            }
            describe(&run, Some(&meta))?
        }
        None => describe(&RunDir::unopened(root, config), None)?,
    };
    if as_json {
        return progress::say(report);
    }
    let mut lines = vec![
        format!("run directory {}", root.display()),
        format!("config hash   {}", report["config_hash"].as_str().unwrap_or("(none: not started)")),
    ];
    if let Some(stages) = report["stages"].as_object() {
        for (name, state) in stages {
            let kept = match report["explain_packs_kept"].as_u64() {
                Some(n) if name == "explain" && n > 0 && state != "complete" => format!(" ({n} finished packs kept; explain goes on from them)"),
                _ => String::new(),
            };
            lines.push(format!("  {name:<9} {}{kept}", state.as_str().unwrap_or("?")));
        }
    }
    let members = report["members"].as_array().cloned().unwrap_or_default();
    if !members.is_empty() {
        let count = |state: &str| members.iter().filter(|m| m["state"] == state).count();
        lines.push(format!(
            "members       {} finished, {} in progress, {} failed, {} missing (of {})",
            count("finished"),
            count("in_progress"),
            count("failed"),
            count("missing"),
            members.len()
        ));
        // A member missing for no reason but not having started is in the count only: a run not
        // started would otherwise list every member.
        let plain_missing = |m: &&Value| m["state"] == "missing" && m["passed_over"].as_array().is_none_or(|p| p.is_empty());
        for m in members.iter().filter(|m| m["state"] != "finished" && !plain_missing(m)) {
            let running = if m["running"] == true { ", running now" } else { "" };
            let index = m["index"].as_u64().unwrap_or_default();
            lines.push(format!("  member {index:>4}  {}{running}", m["described"].as_str().unwrap_or("?")));
        }
    }
    progress::say(lines.join("\n"))
}

fn describe(run: &RunDir, meta: Option<&Meta>) -> Result<Value> {
    let mut stages = serde_json::Map::new();
    for stage in Stage::ALL {
        let state = match meta.and_then(|m| m.stages.get(stage.name())) {
            Some(_) if run.complete_in(meta, stage) => "complete",
            Some(_) if held(run, stage.name()) => "running",
            Some(_) => "incomplete",
            None => "missing",
        };
        stages.insert(stage.name().to_string(), Value::from(state));
    }
    let c = &run.config;
    let arch = Architecture::new(&c.model, c.data.dims, c.data.length);
    let mut members = Vec::new();
    for m in 0..c.train.members {
        let standing = crate::train::member_state(run, &arch, m)?;
        let ckpt = &standing.checkpoint;
        members.push(json!({
            "index": m,
            "state": standing.state,
            "described": standing.describe(),
            "epoch": standing.epoch,
            "attempt": standing.attempt,
            "passed_over": standing.damaged,
            "weights_hash": ckpt.as_ref().map(|c| c.weights_hash()),
            "test_mse": ckpt.as_ref().and_then(|c| c.header.history.last().map(|l| l.test_mse)),
            "running": held(run, &format!("member-{m:04}")),
        }));
    }
    // run.json's word for training holds only while every member's files still say finished.
    if stages["train"] == "complete" && members.iter().any(|m| m["state"] != "finished") {
        stages.insert("train".into(), Value::from("incomplete"));
    }
    Ok(json!({
        "run_dir": run.root(),
        "exists": run.root().exists(),
        "cuda_devices": tch::Cuda::device_count(),
        // What the default CUDA pack is sized from (null where the runtime cannot say).
        "cuda_free_bytes": (0..tch::Cuda::device_count().max(0) as usize).map(crate::farm::cuda_free_bytes).collect::<Vec<_>>(),
        "config_hash": meta.map(|m| m.config_hash.clone()),
        "agra_version": meta.map(|m| m.agra_version.clone()),
        "stages": stages,
        "explain_packs_kept": crate::explain::resume::kept(run),
        "members": members,
    }))
}

/// Whether another process holds this lock now (a lock we can take is not held).
fn held(run: &RunDir, name: &str) -> bool {
    Lock::is_held(&run.lock_path(name))
}

impl Human for crate::metrics::Summary {
    fn human(&self) -> String {
        let pick = |method: &str| {
            self.rows
                .iter()
                .find(|r| r.method == method)
                .and_then(|r| r.metrics.get("pearson_unsigned"))
                .map_or("NA".to_string(), |s| format!("{:.3}", s.mean))
        };
        // From the AGRA rows: without explain.keep_members there are no single-member ones.
        let methods: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.method.strip_prefix("agra-").filter(|_| r.variant == "agra"))
            .map(|method| format!("{method} {} -> agra {}", pick(method), pick(&format!("agra-{method}"))))
            .collect();
        let sanity = match (self.sanity_passed, self.sanity_ran) {
            (Some(true), _) => "sanity check passed",
            (Some(false), _) => "SANITY CHECK FAILED",
            (None, true) => "sanity check undefined (the trained members' saliency maps are constant)",
            (None, false) => "no sanity check",
        };
        format!("unsigned Pearson: {}; {sanity}; {} ({:.1} s)", methods.join(", "), self.file, self.seconds)
    }
}
