//! The report's tables as Markdown, CSV and JSON: the paper's Tables I-IV (reconstruction
//! MSE, unsigned and signed Pearson, AGRA against each single-member method) and ours.

use crate::metrics::{Evaluation, Row, Stat};
use std::fmt::Write;

/// Metric keys, their headings, and whether larger is better.
pub const METRICS: &[(&str, &str, bool)] = &[
    ("mse", "MSE (ideal vs reconstruction)", false),
    ("pearson_unsigned", "Pearson, unsigned", true),
    ("pearson_signed", "Pearson, signed", true),
    ("auroc", "AUROC", true),
    ("auprc", "AUPRC", true),
    ("relevance_mass", "Relevance mass", true),
    ("topk", "Top-k intersection", true),
];

pub fn fmt_stat(s: Option<&Stat>) -> String {
    match s {
        None => "NA".into(),
        Some(s) if s.std.is_finite() => format!("{:.3} ± {:.3}", s.mean, s.std),
        Some(s) => format!("{:.3}", s.mean),
    }
}

fn find<'a>(rows: &'a [Row], method: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.method == method)
}

/// One table: a row per base method, columns single and AGRA for the given metric.
pub fn single_vs_agra(e: &Evaluation, metric: &str, methods: &[String]) -> String {
    let mut out = String::from("| method | single member (mean ± std over members) | AGRA (member average) |\n|---|---|---|\n");
    for m in methods {
        let single = find(&e.rows, m).and_then(|r| r.metrics.get(metric));
        let agra = find(&e.rows, &format!("agra-{m}")).and_then(|r| r.metrics.get(metric));
        if single.is_none() && agra.is_none() {
            continue;
        }
        let _ = writeln!(out, "| {m} | {} | {} |", fmt_stat(single), fmt_stat(agra));
    }
    out
}

/// Whether a method has a metric: only the methods that reconstruct the signal have a
/// reconstruction MSE and a signed correlation.
pub fn applies(method: &str, key: &str) -> bool {
    crate::metrics::signal::reconstructs(method) || !matches!(key, "mse" | "pearson_signed")
}

/// A Table IV verdict: method, metric key, and whether AGRA is better (None where either side
/// is undefined: no single-member arrays, or a metric that is NA there).
pub type Verdict = (String, String, Option<bool>);

/// Table IV: does each AGRA version beat its single-member method, metric by metric?
pub fn agra_wins(e: &Evaluation, methods: &[String]) -> (String, Vec<Verdict>) {
    let mut out = String::from("| method | metric | single | AGRA | AGRA better |\n|---|---|---|---|---|\n");
    let mut verdicts = Vec::new();
    for m in methods {
        for &(key, label, higher) in METRICS.iter().filter(|(key, ..)| applies(m, key)) {
            let single = find(&e.rows, m).and_then(|r| r.metrics.get(key));
            let agra = find(&e.rows, &format!("agra-{m}")).and_then(|r| r.metrics.get(key));
            let better = match (single, agra) {
                (Some(s), Some(a)) => {
                    let better = if higher { a.mean > s.mean } else { a.mean < s.mean };
                    let _ = writeln!(out, "| {m} | {label} | {} | {} | {} |", fmt_stat(Some(s)), fmt_stat(Some(a)), if better { "yes" } else { "no" });
                    Some(better)
                }
                _ => None,
            };
            verdicts.push((m.clone(), key.to_string(), better));
        }
    }
    (out, verdicts)
}

/// Every row and metric, one line each: method, variant, metric, mean, std, n.
pub fn csv(e: &Evaluation) -> String {
    let mut out = String::from("method,variant,metric,mean,std,n\n");
    for r in &e.rows {
        for (k, s) in &r.metrics {
            let _ = writeln!(out, "{},{},{},{},{},{}", r.method, r.variant, k, s.mean, s.std, s.n);
        }
    }
    out
}

pub fn localisation(e: &Evaluation, methods: &[String]) -> String {
    let mut out = String::from("| method | AUROC | AUPRC | relevance mass | top-k |\n|---|---|---|---|---|\n");
    for m in methods.iter().flat_map(|m| [m.clone(), format!("agra-{m}")]) {
        if let Some(r) = find(&e.rows, &m) {
            let cell = |k: &str| fmt_stat(r.metrics.get(k));
            let _ = writeln!(out, "| {m} | {} | {} | {} | {} |", cell("auroc"), cell("auprc"), cell("relevance_mass"), cell("topk"));
        }
    }
    out
}

pub fn explain_stats(e: &Evaluation) -> String {
    let mut out = String::from(
        "| method | members | worker-seconds | gradient evaluations per worker-second | not converged | already optimal (attribution 0) | mean iterations | completeness gap |\n|---|---|---|---|---|---|---|---|\n",
    );
    for m in &e.explain {
        let opt = |v: Option<f64>, digits: usize| v.map_or("NA".to_string(), |v| format!("{v:.digits$}"));
        let of_pairs = |n: Option<usize>| n.map_or("NA".into(), |n| format!("{n} of {}", m.members.len() * m.shape[1]));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
            m.method,
            m.members.len(),
            m.seconds,
            m.evaluations_per_second,
            of_pairs(m.not_converged),
            of_pairs(m.already_optimal),
            opt(m.mean_iterations, 1),
            opt(m.completeness_gap, 4),
        );
    }
    out
}
