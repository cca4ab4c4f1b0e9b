//! `agra report`: turns `evaluate/metrics.json`, the data and the explanations into
//! `report/report.md` with its tables (Markdown, CSV, JSON) and figures (SVG and PNG): the
//! paper's Figure 1 (data), Figures 2, 3, 5 (signals and attributions), Figure 4 (metrics
//! against the number of averaged members) and the training curves.

pub mod plot;
mod tables;

use crate::explain::load_methods;
use crate::metrics::{self, Evaluation};
use crate::progress::Progress;
use crate::store::checkpoint::EpochLog;
use crate::train::TestQuality;
use crate::store::rundir::Stage;
use crate::store::RunDir;
use anyhow::Result;
use plot::{Series, SignalPanel};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub report: String,
    pub figures: usize,
    pub claims: Vec<(String, bool)>,
    pub seconds: f64,
}

impl crate::status::Human for Summary {
    fn human(&self) -> String {
        let held = self.claims.iter().filter(|(_, ok)| *ok).count();
        format!("{} ({} figures; {held} of {} paper claims hold)", self.report, self.figures, self.claims.len())
    }
}

pub fn run(run: &RunDir, ui: &Progress) -> Result<Summary> {
    let started = Instant::now();
    let _lock = run.stage_lock("report")?;
    crate::store::remove_stale_temps([run.report_dir(), run.report_dir().join("figures")])?;
    run.stage_started(Stage::Report, &[])?;
    let e = metrics::load(run)?;
    let dir = run.report_dir();
    let figs = dir.join("figures");
    let methods: Vec<String> = e.explain.iter().map(|m| m.method.clone()).collect();
    let explained = load_methods(run, &methods)?;
    if let (Some(now), Some(then)) = (explained.first().map(|a| &a.manifest), e.explain.first()) {
        if (&now.split, &now.members) != (&then.split, &then.members) {
            anyhow::bail!(
                "the explanations ({} split, members {:?}) were computed again after evaluate/metrics.json ({} split, members {:?}); run `agra evaluate` again",
                now.split,
                now.members,
                then.split,
                then.members
            );
        }
    }
    let truth = crate::explain::load_signals(run, &e.split)?;
    let examples: Vec<usize> = run.config.evaluate.examples.iter().copied().filter(|&i| i < truth.len()).collect();
    let mut figures = Vec::new();

    ui.note("report: figures");
    let bumps: Vec<Vec<(f32, usize)>> = truth.perturbations.iter().map(|ps| ps.iter().map(|p| (p.position, p.dim)).collect()).collect();
    let per = truth.dims * truth.length;
    let row = |v: &[f32], i: usize| -> Vec<f32> { v[i * per..(i + 1) * per].to_vec() };
    let panel = |i: usize, title: String| SignalPanel {
        title,
        ideal: &truth.ideal[i * per..(i + 1) * per],
        perturbed: truth.signal(i),
        bumps: &bumps[i],
        attribution: None,
        spread: None,
        reconstruction: None,
    };
    let data_panels: Vec<SignalPanel> = examples.iter().map(|&i| panel(i, format!("signal {i}: score {:.2}", truth.scores[i]))).collect();
    plot::signals(&figs.join("fig1_data"), truth.dims, truth.length, &data_panels)?;
    figures.push(("Figure 1: ideal and perturbed signals, bumps marked".to_string(), "fig1_data".to_string()));

    for (name, arrays) in methods.iter().zip(&explained) {
        let reconstructs = crate::metrics::signal::reconstructs(name);
        for &i in &examples {
            let single = arrays.members.as_ref().map(|m| row(m, i));
            let (agra, spread) = (row(&arrays.ensemble, i), row(&arrays.std, i));
            let recon = |a: &[f32]| -> Vec<f32> { truth.signal(i).iter().zip(a).map(|(x, a)| x - a).collect() };
            let (r_single, r_agra) = (single.as_deref().map(recon), recon(&agra));
            let mut panels = Vec::new();
            if let Some(s) = &single {
                panels.push(SignalPanel {
                    attribution: Some(s),
                    reconstruction: if reconstructs { r_single.as_deref() } else { None },
                    ..panel(i, format!("{name}, member {}", arrays.manifest.members[0]))
                });
            }
            panels.push(SignalPanel {
                attribution: Some(&agra),
                spread: Some(&spread),
                reconstruction: if reconstructs { Some(&r_agra) } else { None },
                ..panel(i, format!("agra-{name} ({} members, band: ±std)", arrays.manifest.members.len()))
            });
            let stem = format!("example_{name}_{i}");
            plot::signals(&figs.join(&stem), truth.dims, truth.length, &panels)?;
            let shows = if reconstructs { "attribution and reconstruction" } else { "attribution" };
            let whose = if single.is_some() { "one member and the AGRA average" } else { "the AGRA average" };
            figures.push((format!("{name} on {} signal {i}: {whose}, {shows}", e.split), stem));
        }
    }
    for c in &e.curves {
        let series = vec![
            Series { name: "training order".into(), x: k_axis(&c.k), y: c.ordered.clone(), spread: None },
            Series {
                name: format!("random orders (mean ± std, {})", run.config.evaluate.random_orders),
                x: k_axis(&c.k),
                y: c.random_mean.clone(),
                spread: Some(c.random_std.clone()),
            },
        ];
        let stem = format!("fig4_{}_{}", c.method, c.metric);
        plot::curves(&figs.join(&stem), &format!("agra-{}: {} vs members averaged", c.method, c.metric), "members averaged (k)", &c.metric, &series)?;
        let label = tables::METRICS.iter().find(|m| m.0 == c.metric).map_or(c.metric.as_str(), |m| m.1);
        figures.push((format!("Figure 4: agra-{} against the number of members averaged ({label})", c.method), stem));
    }
    for &(key, label, _) in tables::METRICS {
        let bars: Vec<(String, f64, f64)> = e
            .rows
            .iter()
            .filter_map(|r| r.metrics.get(key).map(|s| (r.method.clone(), s.mean, if s.std.is_finite() { s.std } else { 0.0 })))
            .collect();
        if !bars.is_empty() {
            let stem = format!("bars_{key}");
            plot::bars(&figs.join(&stem), label, label, &bars)?;
            figures.push((format!("Methods compared: {label}"), stem));
        }
    }
    let histories = member_histories(run)?;
    if let Some(stem) = training_curves(&histories, &figs)? {
        figures.push(("Training: mean MSE over members per epoch".to_string(), stem));
    }
    let test_scores = crate::data::read(run, "test")?.scores;
    let quality = quality(&histories, run.config.train.epochs, &test_scores);

    let (markdown, claims) = markdown(run, &e, &methods, &figures, quality);
    std::fs::create_dir_all(&dir)?;
    crate::store::write_atomic(&dir.join("report.md"), markdown.as_bytes())?;
    crate::store::write_atomic(&dir.join("tables.csv"), tables::csv(&e).as_bytes())?;
    crate::store::write_atomic(&dir.join("tables.json"), serde_json::to_string_pretty(&e.rows)?.as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    run.stage_finished(Stage::Report, seconds)?;
    Ok(Summary { report: dir.join("report.md").display().to_string(), figures: figures.len(), claims, seconds })
}

/// A value to three decimals, or NA where it is undefined.
fn na(v: f64) -> String {
    if v.is_finite() { format!("{v:.3}") } else { "NA".into() }
}

fn k_axis(k: &[usize]) -> Vec<f64> {
    k.iter().map(|&k| k as f64).collect()
}

/// Every member's per-epoch log, from its newest checkpoint.
fn member_histories(run: &RunDir) -> Result<Vec<Vec<EpochLog>>> {
    let arch = crate::model::Architecture::new(&run.config.model, run.config.data.dims, run.config.data.length);
    let mut histories = Vec::new();
    for m in 0..run.config.train.members {
        if let Some(c) = crate::train::member_state(run, &arch, m)?.checkpoint {
            histories.push(c.header.history);
        }
    }
    Ok(histories)
}

/// How well the finished members predict the score, with their count: every table reads
/// differently for members that barely learned it.
fn quality(histories: &[Vec<EpochLog>], epochs: usize, test_scores: &[f32]) -> Option<(usize, TestQuality)> {
    let finished = histories.iter().filter_map(|h| h.last()).filter(|l| l.epoch == epochs);
    let mse: Vec<f64> = finished.map(|l| l.test_mse).collect();
    (!mse.is_empty()).then(|| (mse.len(), TestQuality::of(&mse, test_scores)))
}

/// Mean train and test MSE over members per epoch.
fn training_curves(histories: &[Vec<EpochLog>], figs: &Path) -> Result<Option<String>> {
    let epochs = histories.iter().map(Vec::len).min().unwrap_or(0);
    if epochs == 0 {
        return Ok(None);
    }
    let curve = |pick: fn(&crate::store::checkpoint::EpochLog) -> f64| -> (Vec<f64>, Vec<f64>) {
        (0..epochs).map(|e| metrics::stats::mean_std(&histories.iter().map(|h| pick(&h[e])).collect::<Vec<_>>())).unzip()
    };
    let x: Vec<f64> = (1..=epochs).map(|e| e as f64).collect();
    let (train, train_std) = curve(|l| l.train_mse);
    let (test, test_std) = curve(|l| l.test_mse);
    let series = [
        Series { name: "train MSE (with dropout)".into(), x: x.clone(), y: train, spread: Some(train_std) },
        Series { name: "test MSE".into(), x, y: test, spread: Some(test_std) },
    ];
    plot::curves(&figs.join("training"), "Training (mean ± std over members)", "epoch", "MSE", &series)?;
    Ok(Some("training".into()))
}

fn markdown(
    run: &RunDir,
    e: &Evaluation,
    methods: &[String],
    figures: &[(String, String)],
    quality: Option<(usize, TestQuality)>,
) -> (String, Vec<(String, bool)>) {
    let mut md = String::new();
    let c = &run.config;
    let _ = writeln!(md, "# agra report\n");
    let _ = writeln!(
        md,
        "Config hash `{}`; {} members; {} {} signals explained ({} without a perturbation, left out of every metric but MSE). \
         Doing nothing (the perturbed input itself) has MSE {:.5} against the ideal signal.\n",
        c.hash(), e.members, e.signals, e.split, e.excluded_unperturbed, e.identity_mse
    );
    if let Some((members, q)) = quality {
        let _ = writeln!(
            md,
            "The {} finished members predict the test scores with MSE {:.4} ± {:.4}: {}{}.\n",
            members,
            q.test_mse_mean,
            q.test_mse_std,
            q.r2_text(" ± "),
            if q.scores_vary { " (1 - MSE / variance of the test scores)" } else { "" }
        );
    }
    let reconstructing: Vec<String> = methods.iter().filter(|m| tables::applies(m, "mse")).cloned().collect();
    let _ = writeln!(md, "## Table I: reconstruction MSE (lower is better; only grad and smoothgrad reconstruct)\n");
    let _ = writeln!(md, "{}", tables::single_vs_agra(e, "mse", &reconstructing));
    let _ = writeln!(md, "## Table II: unsigned Pearson correlation with the ground truth\n");
    let _ = writeln!(md, "{}", tables::single_vs_agra(e, "pearson_unsigned", methods));
    let _ = writeln!(md, "## Table III: signed Pearson correlation (per dimension, averaged)\n");
    let _ = writeln!(md, "{}", tables::single_vs_agra(e, "pearson_signed", &reconstructing));
    let _ = writeln!(md, "## Table IV: each AGRA version against its single-member method\n");
    let (table, verdicts) = tables::agra_wins(e, methods);
    let _ = writeln!(md, "{table}");
    let _ = writeln!(md, "## Localisation against the perturbation mask\n\n{}", tables::localisation(e, methods));
    let _ = writeln!(md, "## Explanation cost and convergence\n\n{}", tables::explain_stats(e));
    if let Some(s) = &e.sanity {
        let _ = writeln!(
            md,
            "## Model-randomisation sanity check\n\nSpearman similarity of |saliency| between trained and randomly \
             initialised members: {}; between two trained members: {}; unsigned Pearson with the ground truth: \
             trained {}, random {} ({} members). {}\n",
            na(s.trained_vs_random),
            na(s.trained_vs_trained),
            na(s.truth_trained),
            na(s.truth_random),
            s.members,
            match s.passed {
                Some(true) => "Passed: the explanations depend on the trained weights.",
                Some(false) => "FAILED: explanations barely change when the weights are randomised.",
                None => "Undefined: the trained members' saliency maps are the same at every position (networks that score every input alike), so there is nothing to compare.",
            }
        );
        if let Some((_, q)) = quality.filter(|(_, q)| s.passed == Some(false) && q.r2_mean < 0.5) {
            let _ = writeln!(
                md,
                "The members' mean test R² is {:.2}: networks that have not learned the score explain little \
                 more than random ones; train longer (more epochs or signals) before reading this check.\n",
                q.r2_mean
            );
        }
    }
    let mut claims = Vec::new();
    // A claim over nothing, or over members whose average is themselves, would hold vacuously,
    // and one over methods that could not be scored would hold only over the rest: say what was
    // not tested instead.
    let mut untested = Vec::new();
    if e.members < 2 {
        untested.push(format!("whether AGRA versions beat their single-member methods: with {} member the average is that member", e.members));
    } else if verdicts.iter().all(|v| v.2.is_none()) {
        untested.push(
            "whether every AGRA version beats its single-member method (Table IV has no pair of metrics to compare: \
             single-member metrics need explain.keep_members, and every metric needs perturbed signals)"
                .to_string(),
        );
    } else {
        let mut judge = |what: String, set: Vec<&tables::Verdict>| {
            let unscored: Vec<String> = set.iter().filter(|v| v.2.is_none()).map(|v| format!("{} {}", v.0, v.1)).collect();
            if set.iter().any(|v| v.2 == Some(false)) {
                claims.push((what, false));
            } else if unscored.is_empty() {
                claims.push((what, true));
            } else {
                untested.push(format!("whether {what}: undefined (NA) for {}", unscored.join(", ")));
            }
        };
        for &(key, _, _) in &tables::METRICS[..3] {
            let set: Vec<&tables::Verdict> = verdicts.iter().filter(|v| v.1 == key).collect();
            if !set.is_empty() {
                judge(format!("each AGRA version beats its single-member method on {key}"), set);
            }
        }
        judge("every AGRA version beats its single-member method on every metric (Table IV)".into(), verdicts.iter().collect());
    }
    // The curve reaches all of its gain at its last k, so with 20 members or fewer "by k = 20"
    // holds whatever the curve's shape: not a claim such a run can test.
    let mut short = Vec::new();
    for c in e.curves.iter().filter(|c| c.metric == "pearson_unsigned") {
        if c.random_mean.len() <= FLATTENS_BY {
            short.push(format!("agra-{}", c.method));
        } else if let Some(k) = flattening_k(&c.random_mean) {
            let claim = format!("Figure 4 curve of agra-{} flattens by k = {FLATTENS_BY} (95% of the gain reached at k = {k})", c.method);
            claims.push((claim, k <= FLATTENS_BY));
        }
    }
    let _ = writeln!(md, "## The paper's claims on this run\n");
    for (claim, ok) in &claims {
        let _ = writeln!(md, "- {} {claim}", if *ok { "holds:" } else { "does not hold:" });
    }
    if !short.is_empty() {
        untested.push(format!(
            "whether the Figure 4 curves ({}) flatten by k = {FLATTENS_BY}; this run averages {} members, and the test needs more than {FLATTENS_BY}",
            short.join(", "),
            e.curves.iter().map(|c| c.random_mean.len()).max().unwrap_or(0)
        ));
    }
    for what in untested {
        let _ = writeln!(md, "- not tested: {what}");
    }
    let _ = writeln!(md, "\n## Figures\n");
    for (caption, stem) in figures {
        let _ = writeln!(md, "### {caption}\n\n![{stem}](figures/{stem}.svg) ([PNG](figures/{stem}.png))\n");
    }
    (md, claims)
}

/// The paper's Figure 4 claim: the member-count curve has made most of its gain by this k.
const FLATTENS_BY: usize = 20;

/// The smallest k whose value reaches 95% of the curve's total change from k = 1.
fn flattening_k(curve: &[f64]) -> Option<usize> {
    let (first, last) = (*curve.first()?, *curve.last()?);
    let gain = last - first;
    if !gain.is_finite() || gain.abs() < 1e-12 {
        return None;
    }
    curve.iter().position(|v| (v - first) / gain >= 0.95).map(|i| i + 1)
}
