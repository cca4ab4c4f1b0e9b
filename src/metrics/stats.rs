//! Scalar statistics used to score an attribution map against ground truth.
//!
//! Everything here is a pure function over `f32` slices (the dtype the
//! gradients come in) that accumulates and returns `f64`, so that summing
//! millions of pixels does not lose precision. Each metric matches a
//! reference implementation (scipy / scikit-learn / Arras et al.), and the
//! test module cross-checks them against `scripts/check_metrics.py`.
//!
//! Undefined results are `None` rather than NaN so callers must decide how to
//! report them: mismatched or empty inputs, constant vectors for the
//! correlations, a missing class for AUROC/AUPRC, an empty mask, and any NaN
//! in the inputs (a NaN has no rank and would poison every sum silently).

use std::cmp::Ordering;

fn has_nan(x: &[f32]) -> bool {
    x.iter().any(|v| v.is_nan())
}

/// Pearson correlation of two equal-length series.
///
/// `None` if lengths differ, the input is empty, either series is constant,
/// or any value is NaN (or an infinity makes the result non-finite).
pub fn pearson(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() || has_nan(a) || has_nan(b) {
        return None;
    }
    let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    pearson_f64(&wide(a), &wide(b))
}

/// Two-pass Pearson on f64: centring first avoids the catastrophic
/// cancellation of the one-pass `sum(xy) - n*mx*my` form.
fn pearson_f64(a: &[f64], b: &[f64]) -> Option<f64> {
    // Test constancy exactly: a computed mean of identical values can be off
    // by an ulp and leave a spurious non-zero variance.
    if a.iter().all(|&v| v == a[0]) || b.iter().all(|&v| v == b[0]) {
        return None;
    }
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    let r = sab / (saa.sqrt() * sbb.sqrt());
    // Rounding can push |r| a hair past 1; scipy clips the same way.
    r.is_finite().then(|| r.clamp(-1.0, 1.0))
}

/// 1-based ranks with ties given their mean rank (scipy `rankdata(method="average")`).
/// Caller guarantees no NaN.
fn average_ranks(x: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    // partial_cmp (not total_cmp) so that -0.0 and 0.0 tie, as in numpy.
    idx.sort_by(|&i, &j| x[i].partial_cmp(&x[j]).unwrap_or(Ordering::Equal));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < idx.len() {
        let mut end = start + 1;
        while end < idx.len() && x[idx[end]] == x[idx[start]] {
            end += 1;
        }
        // positions start..end hold ranks start+1..=end; their mean:
        let r = (start + 1 + end) as f64 / 2.0;
        for &i in &idx[start..end] {
            ranks[i] = r;
        }
        start = end;
    }
    ranks
}

/// Spearman rank correlation: Pearson of average ranks (scipy `spearmanr`).
/// `None` under the same conditions as [`pearson`].
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() || has_nan(a) || has_nan(b) {
        return None;
    }
    pearson_f64(&average_ranks(a), &average_ranks(b))
}

/// Area under the ROC curve: P(score of a random positive > that of a random
/// negative), ties counting 1/2. Computed as Mann-Whitney U / (n_pos n_neg)
/// with average ranks, O(n log n).
///
/// `None` if lengths differ, there are no positives or no negatives, or a
/// score is NaN.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() || has_nan(scores) {
        return None;
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let r_pos: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    let (p, q) = (n_pos as f64, n_neg as f64);
    let u = r_pos - p * (p + 1.0) / 2.0;
    Some(u / (p * q))
}

/// Average precision exactly as scikit-learn's `average_precision_score`:
/// `AP = sum_n (R_n - R_{n-1}) P_n` over thresholds taken at each distinct
/// score, descending (tied scores enter together as one threshold), with
/// `R_0 = 0`. Not the trapezoidal area, which is optimistic.
///
/// `None` if lengths differ, there are no positives, or a score is NaN.
pub fn auprc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() || has_nan(scores) {
        return None;
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(Ordering::Equal));
    let (mut tp, mut fp, mut tp_prev) = (0usize, 0usize, 0usize);
    let mut ap = 0.0;
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        // Close a threshold only after the last of a run of equal scores.
        let last_of_run = idx.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_run && tp > tp_prev {
            let precision = tp as f64 / (tp + fp) as f64;
            ap += (tp - tp_prev) as f64 / n_pos as f64 * precision;
            tp_prev = tp;
        }
    }
    Some(ap)
}

/// Relevance mass accuracy (Arras et al., 2022): share of total absolute
/// attribution that falls inside the ground-truth mask,
/// `sum_{i in mask} |a_i| / sum_i |a_i|`.
///
/// An attribution of zeros puts its (no) mass nowhere in particular: it scores
/// the mask's share of the positions, what a constant attribution scores.
///
/// `None` if lengths differ, the mask selects nothing, or any value is NaN.
pub fn relevance_mass(attr: &[f32], mask: &[bool]) -> Option<f64> {
    if attr.len() != mask.len() || has_nan(attr) || !mask.iter().any(|&m| m) {
        return None;
    }
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    for (&a, &m) in attr.iter().zip(mask) {
        let a = f64::from(a.abs());
        total += a;
        if m {
            inside += a;
        }
    }
    if total == 0.0 {
        return Some(mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64);
    }
    let r = inside / total;
    r.is_finite().then_some(r)
}

/// Top-k intersection: with `k = |mask|`, the fraction of the k positions of
/// largest `|attr|` that lie inside the mask. Positions tied at the k-th
/// magnitude share the remaining places in expectation (a random order of the
/// ties, as AUROC's average ranks do): breaking them by index would make a
/// constant attribution score by where the mask happens to lie.
///
/// `None` if lengths differ, the mask is empty (k = 0), or any value is NaN.
pub fn topk_intersection(attr: &[f32], mask: &[bool]) -> Option<f64> {
    if attr.len() != mask.len() || has_nan(attr) {
        return None;
    }
    let k = mask.iter().filter(|&&m| m).count();
    if k == 0 {
        return None;
    }
    let mut magnitudes: Vec<f32> = attr.iter().map(|a| a.abs()).collect();
    magnitudes.sort_by(|a, b| b.total_cmp(a));
    let kth = magnitudes[k - 1];
    let (mut above, mut hits_above, mut tied, mut hits_tied) = (0usize, 0usize, 0usize, 0usize);
    for (a, &m) in attr.iter().zip(mask) {
        let a = a.abs();
        if a > kth {
            above += 1;
            hits_above += m as usize;
        } else if a == kth {
            tied += 1;
            hits_tied += m as usize;
        }
    }
    let hits = hits_above as f64 + (k - above) as f64 * hits_tied as f64 / tied as f64;
    Some(hits / k as f64)
}

/// Mean and sample standard deviation (denominator n-1), two-pass.
/// `(NaN, NaN)` for an empty slice; std is 0 for a single value.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let ss: f64 = values.iter().map(|&v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests;
