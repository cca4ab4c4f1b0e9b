//! Range checks on a parsed configuration. Every message names the key, the value and what is
//! allowed, because that is all a user needs to fix it.

use super::Config;
use crate::error::UsageError;
use anyhow::Result;

pub const METHODS: &[&str] = &["grad", "smoothgrad", "saliency", "gxi", "ig"];
pub const SPLITS: &[&str] = &["train", "test", "all"];

pub fn check(c: &Config) -> Result<()> {
    let d = &c.data;
    positive("data.signals", d.signals)?;
    positive("data.train", d.train)?;
    positive("data.test", d.test)?;
    if d.train + d.test != d.signals {
        return bad(format!(
            "data.train + data.test = {} + {} must equal data.signals = {}",
            d.train, d.test, d.signals
        ));
    }
    positive("data.length", d.length)?;
    if !d.length.is_multiple_of(16) {
        return bad(format!(
            "data.length = {} must be a multiple of 16 (the network halves it four times)",
            d.length
        ));
    }
    positive("data.dims", d.dims)?;
    range_pair("data.period", d.period, 1e-3)?;
    non_negative("data.noise", d.noise)?;
    range_pair("data.amplitude", d.amplitude, 0.0)?;
    if d.amplitude[1] == 0.0 {
        return bad("data.amplitude = [0, 0] makes every bump flat: nothing to explain".to_string());
    }
    range_pair("data.width", d.width, 1e-3)?;
    finite_positive("data.mse_ref", d.mse_ref)?;
    finite_positive("data.optimal_score", d.optimal_score)?;
    finite_positive("data.mask_widths", d.mask_widths)?;
    limit("data.signals", d.signals, 10_000_000)?;
    limit("data.length", d.length, 1 << 20)?;
    limit("data.dims", d.dims, 64)?;
    // Without bumps there is nothing to explain and every score is the optimum.
    positive("data.max_perturbations", d.max_perturbations)?;
    limit("data.max_perturbations", d.max_perturbations, 10_000)?;

    let m = &c.model;
    if m.kernel.is_multiple_of(2) || m.kernel > 63 {
        return bad(format!("model.kernel = {} must be odd and at most 63 (same padding)", m.kernel));
    }
    if m.channels.len() != 4 {
        return bad(format!(
            "model.channels has {} entr{}; the network has exactly 4 convolution layers",
            m.channels.len(),
            if m.channels.len() == 1 { "y" } else { "ies" }
        ));
    }
    for &ch in &m.channels {
        positive("model.channels", ch)?;
        limit("model.channels", ch, 4096)?;
    }
    positive("model.hidden", m.hidden)?;
    limit("model.hidden", m.hidden, 65536)?;
    if !(m.dropout.is_finite() && (0.0..1.0).contains(&m.dropout)) {
        return bad(format!("model.dropout = {:?} must be in [0, 1)", m.dropout));
    }
    if !m.score_offset.is_finite() {
        return bad(format!("model.score_offset = {:?} must be a finite number", m.score_offset));
    }
    // Sizes each within its limit can still multiply past any machine's memory, which libtorch
    // answers with an abort, not an error: bound a member's parameters and a signal's activations.
    let arch = crate::model::Architecture::new(m, d.dims, d.length);
    let (params, activations) = (arch.numel(), arch.activations());
    if params > MAX_PARAMS {
        return bad(format!("model.channels, model.hidden and data.length make {params} parameters per member (at most {MAX_PARAMS})"));
    }
    if activations > MAX_ACTIVATIONS {
        return bad(format!("model.channels and data.length make {activations} activations per signal (at most {MAX_ACTIVATIONS})"));
    }

    let t = &c.train;
    positive("train.members", t.members)?;
    limit("train.members", t.members, 100_000)?;
    positive("train.epochs", t.epochs)?;
    limit("train.epochs", t.epochs, 1_000_000)?;
    positive("train.batch_size", t.batch_size)?;
    if t.batch_size > d.train {
        return bad(format!(
            "train.batch_size = {} exceeds data.train = {}",
            t.batch_size, d.train
        ));
    }
    finite_positive("train.lr", t.lr)?;
    probability("train.beta1", t.beta1)?;
    probability("train.beta2", t.beta2)?;
    finite_positive("train.eps", t.eps)?;
    if t.lr_decay_epochs > t.epochs {
        return bad(format!("train.lr_decay_epochs = {} exceeds train.epochs = {}", t.lr_decay_epochs, t.epochs));
    }
    if !(t.lr_final.is_finite() && t.lr_final > 0.0 && t.lr_final <= 1.0) {
        return bad(format!("train.lr_final = {:?} must be in (0, 1]", t.lr_final));
    }
    positive("train.checkpoint_every", t.checkpoint_every)?;
    limit("train.nan_retries", t.nan_retries, 100)?;

    let e = &c.explain;
    if e.methods.is_empty() {
        return bad("explain.methods is empty; list at least one of ".to_string() + &METHODS.join(", "));
    }
    for (i, method) in e.methods.iter().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            return bad(format!("explain.methods: unknown method {method:?} (one of {})", METHODS.join(", ")));
        }
        if e.methods[..i].contains(method) {
            return bad(format!("explain.methods lists {method:?} twice"));
        }
    }
    if !SPLITS.contains(&e.split.as_str()) {
        return bad(format!("explain.split = {:?} must be one of {}", e.split, SPLITS.join(", ")));
    }
    finite_positive("explain.eta", e.eta)?;
    finite_positive("explain.tol", e.tol)?;
    positive("explain.max_iter", e.max_iter)?;
    limit("explain.max_iter", e.max_iter, 1_000_000)?;
    positive("explain.smooth_samples", e.smooth_samples)?;
    limit("explain.smooth_samples", e.smooth_samples, 10_000)?;
    finite_positive("explain.smooth_sigma", e.smooth_sigma)?;
    positive("explain.ig_steps", e.ig_steps)?;
    limit("explain.ig_steps", e.ig_steps, 100_000)?;

    let v = &c.evaluate;
    positive("evaluate.random_orders", v.random_orders)?;
    limit("evaluate.random_orders", v.random_orders, 10_000)?;
    limit("evaluate.sanity_members", v.sanity_members, 10_000)?;
    let explained = d.split_len(&e.split).unwrap_or(d.signals);
    if let Some(&i) = v.examples.iter().find(|&&i| i >= explained) {
        return bad(format!(
            "evaluate.examples contains {i}, but the {} split has {explained} signals",
            e.split
        ));
    }
    Ok(())
}

/// Checks added after runs were made with what they refuse, applied to configurations built
/// from a preset, file and `--set`s only: a run directory made before them keeps opening (with
/// `status` too) rather than be locked out by its own config.toml.
pub fn check_new(c: &Config) -> Result<()> {
    // Computed in f32, where smaller values are 0: Adam's eps divided 0 by 0, an lr trained
    // nothing, a bump amplitude drew flat bumps.
    let f32_values = [
        ("train.lr", c.train.lr),
        ("train.eps", c.train.eps),
        ("explain.eta", c.explain.eta),
        ("explain.tol", c.explain.tol),
        ("explain.smooth_sigma", c.explain.smooth_sigma),
        ("data.mse_ref", c.data.mse_ref),
        ("data.optimal_score", c.data.optimal_score),
        ("data.mask_widths", c.data.mask_widths),
        ("data.amplitude (its upper end)", c.data.amplitude[1]),
    ];
    if let Some((key, v)) = f32_values.iter().find(|(_, v)| *v < f64::from(f32::MIN_POSITIVE)) {
        return bad(format!("{key} = {v:?} is below {:?}, the smallest normal f32 (agra computes in f32)", f32::MIN_POSITIVE));
    }
    let v = &c.evaluate;
    if v.sanity_members == 1 {
        return bad("evaluate.sanity_members = 1: the check compares two trained members; 0 turns it off".to_string());
    }
    if let Some((_, &i)) = v.examples.iter().enumerate().find(|&(k, i)| v.examples[..k].contains(i)) {
        return bad(format!("evaluate.examples lists {i} twice"));
    }
    Ok(())
}

/// 256 MB of weights per member (a GB with its gradient and Adam's moments); the paper's
/// network has about 40 thousand.
const MAX_PARAMS: i64 = 1 << 26;
/// 16 MB per signal (the paper's network: 11 thousand values), so a CPU chunk of 256 rows stays
/// within 4 GB; CUDA's chunks shrink with it (`farm::default_max_batch`).
const MAX_ACTIVATIONS: i64 = 1 << 22;

fn bad(message: String) -> Result<()> {
    Err(UsageError::new(format!("config: {message}")).into())
}

fn positive(key: &str, v: usize) -> Result<()> {
    if v == 0 {
        return bad(format!("{key} = 0 must be positive"));
    }
    Ok(())
}

fn limit(key: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return bad(format!("{key} = {v} is too large (at most {max})"));
    }
    Ok(())
}

fn non_negative(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return bad(format!("{key} = {v:?} must be a finite number >= 0"));
    }
    Ok(())
}

fn finite_positive(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1e12) {
        return bad(format!("{key} = {v:?} must be a number > 0 and < 1e12"));
    }
    Ok(())
}

fn probability(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return bad(format!("{key} = {v:?} must be in (0, 1)"));
    }
    Ok(())
}

/// A `[lo, hi]` range: finite, lo <= hi, lo >= min.
fn range_pair(key: &str, [lo, hi]: [f64; 2], min: f64) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo >= min && lo <= hi && hi < 1e12) {
        return bad(format!("{key} = [{lo:?}, {hi:?}] must be below 1e12 with {min} <= lo <= hi"));
    }
    Ok(())
}
