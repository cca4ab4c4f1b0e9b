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
/// `None` if lengths differ, the mask selects nothing, the total is 0
/// (no attribution to distribute), or any value is NaN.
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
    let r = inside / total;
    (total > 0.0 && r.is_finite()).then_some(r)
}

/// Top-k intersection: with `k = |mask|`, the fraction of the k positions of
/// largest `|attr|` that lie inside the mask. Ties in `|attr|` are broken by
/// index (lower index first), so the result is deterministic.
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
    let mut idx: Vec<usize> = (0..attr.len()).collect();
    // sort_by is stable, so equal magnitudes keep index order.
    idx.sort_by(|&i, &j| {
        attr[j]
            .abs()
            .partial_cmp(&attr[i].abs())
            .unwrap_or(Ordering::Equal)
    });
    let hits = idx[..k].iter().filter(|&&i| mask[i]).count();
    Some(hits as f64 / k as f64)
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
mod tests {
    use super::*;

    fn close(got: Option<f64>, want: f64) {
        let g = got.unwrap_or_else(|| panic!("expected {want}, got None"));
        assert!((g - want).abs() < 1e-12, "got {g}, want {want}");
    }

    // scipy.stats.pearsonr([1,2,3],[2,4,6]) = 1; with [6,4,2] = -1
    #[test]
    fn pearson_perfect() {
        close(pearson(&[1., 2., 3.], &[2., 4., 6.]), 1.0);
        close(pearson(&[1., 2., 3.], &[6., 4., 2.]), -1.0);
    }

    // r = sum(dx dy) / sqrt(sum dx^2 sum dy^2); dx = [-1.5,-.5,.5,1.5],
    // dy = [-.5,-1.5,1.5,.5] -> 3 / sqrt(5*5) = 0.6
    #[test]
    fn pearson_worked_example() {
        close(pearson(&[1., 2., 3., 4.], &[2., 1., 4., 3.]), 0.6);
    }

    #[test]
    fn pearson_undefined() {
        assert_eq!(pearson(&[0.1, 0.1, 0.1], &[1., 2., 3.]), None);
        assert_eq!(pearson(&[1., 2., 3.], &[5., 5., 5.]), None);
        assert_eq!(pearson(&[1., 2.], &[1., 2., 3.]), None);
        assert_eq!(pearson(&[], &[]), None);
        assert_eq!(pearson(&[1., f32::NAN, 3.], &[1., 2., 3.]), None);
    }

    // scipy.stats.spearmanr([1,2,2,3],[1,3,2,4]): ranks [1,2.5,2.5,4] vs [1,3,2,4]
    // -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    #[test]
    fn spearman_with_ties() {
        close(
            spearman(&[1., 2., 2., 3.], &[1., 3., 2., 4.]),
            0.9f64.sqrt(),
        );
        // monotone but non-linear: spearmanr([1,2,3,4],[1,8,27,1000]) = 1
        close(spearman(&[1., 2., 3., 4.], &[1., 8., 27., 1000.]), 1.0);
        assert_eq!(spearman(&[2., 2.], &[1., 2.]), None);
        assert_eq!(spearman(&[1., 2.], &[f32::NAN, 2.]), None);
    }

    // -0.0 and 0.0 must tie, as in scipy.stats.rankdata([-0.0, 0.0, 1.0]) = [1.5, 1.5, 3]
    #[test]
    fn ranks_signed_zero_tie() {
        assert_eq!(average_ranks(&[-0.0, 0.0, 1.0]), vec![1.5, 1.5, 3.0]);
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    // AUROC = U / (n_pos n_neg), U = R_pos - n_pos(n_pos+1)/2
    // (= sklearn.metrics.roc_auc_score(labels, scores))
    #[test]
    fn auroc_extremes() {
        let l = [false, false, true, true];
        close(auroc(&[0.1, 0.2, 0.3, 0.4], &l), 1.0);
        close(auroc(&[0.4, 0.3, 0.2, 0.1], &l), 0.0);
        close(auroc(&[0.5; 4], &l), 0.5);
    }

    // scores [.1,.4,.4,.8], labels [F,T,F,T]: pos {.4,.8} vs neg {.1,.4}
    // pairs: 1 + 1/2 + 1 + 1 = 3.5 of 4 -> 0.875; ranks [1,2.5,2.5,4],
    // U = (2.5+4) - 3 = 3.5
    #[test]
    fn auroc_ties_hand_example() {
        close(
            auroc(&[0.1, 0.4, 0.4, 0.8], &[false, true, false, true]),
            0.875,
        );
    }

    #[test]
    fn auroc_undefined() {
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(auroc(&[0.1, 0.2], &[true]), None);
        assert_eq!(auroc(&[f32::NAN, 0.2], &[true, false]), None);
    }

    // AP = sum_n (R_n - R_{n-1}) P_n  (sklearn.metrics.average_precision_score)
    #[test]
    fn auprc_perfect() {
        close(
            auprc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
            1.0,
        );
    }

    // sklearn docstring: average_precision_score([0,0,1,1], [.1,.4,.35,.8]) = 0.8333
    // thresholds .8: P=1, R=.5; .4: R unchanged; .35: P=2/3, R=1
    // AP = .5*1 + .5*2/3 = 5/6
    #[test]
    fn auprc_sklearn_example() {
        close(
            auprc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            5.0 / 6.0,
        );
    }

    // Tied scores are one threshold: average_precision_score([1,0,1], [.5,.5,.2])
    // threshold .5: P=1/2, R=1/2; .2: P=2/3, R=1 -> .25 + 1/3 = 7/12
    // (scoring the tied positive first would wrongly give 5/6)
    #[test]
    fn auprc_tied_threshold() {
        close(auprc(&[0.5, 0.5, 0.2], &[true, false, true]), 7.0 / 12.0);
        close(auprc(&[0.5, 0.5, 0.2], &[false, true, true]), 7.0 / 12.0);
        assert_eq!(auprc(&[0.5, 0.2], &[false, false]), None);
    }

    // sum_{mask}|a| / sum|a| = (2 + 4) / (1 + 2 + 3 + 4) = 0.6
    #[test]
    fn relevance_mass_hand_example() {
        close(
            relevance_mass(&[1., -2., 3., -4.], &[false, true, false, true]),
            0.6,
        );
        assert_eq!(relevance_mass(&[0., 0.], &[true, false]), None);
        assert_eq!(relevance_mass(&[1., 2.], &[false, false]), None);
        assert_eq!(relevance_mass(&[1., f32::NAN], &[true, false]), None);
    }

    // k = 2; |a| desc = idx 0 (3), then idx 1 and 2 tie at 2 -> lower index 1 wins.
    // top-2 = {0, 1}, mask = {0, 2} -> 1/2 (would be 1 if the tie broke the other way)
    #[test]
    fn topk_hand_example() {
        close(
            topk_intersection(&[3., -2., 2., 0.], &[true, false, true, false]),
            0.5,
        );
        close(
            topk_intersection(&[-5., 0.1, 4.], &[true, false, true]),
            1.0,
        );
        assert_eq!(topk_intersection(&[1., 2.], &[false, false]), None);
    }

    // mean([2,4,4,4,5,5,7,9]) = 5, sum sq dev = 32, std(ddof=1) = sqrt(32/7)
    #[test]
    fn mean_std_values() {
        let (m, s) = mean_std(&[2., 4., 4., 4., 5., 5., 7., 9.]);
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.5]), (3.5, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }

    /// Deterministic LCG (Numerical Recipes constants); no rand dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next_f32(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32) / (1u64 << 24) as f32 // uniform in [0, 1)
        }
    }

    // Reference: scripts/check_metrics.py -- scipy.stats.pearsonr, scipy.stats.spearmanr,
    // mannwhitneyu(pos, neg).statistic / (n_pos n_neg), a numpy port of
    // sklearn average_precision_score, and the relevance-mass / top-k definitions.
    #[test]
    fn cross_check_against_scipy() {
        use std::process::Command;

        let (python, required) = match std::env::var("AGRA_PYTHON") {
            Ok(p) if !p.is_empty() => (p, true),
            _ => ("python3".to_string(), false),
        };
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_metrics.py");
        let dir = tempfile::tempdir().unwrap();

        let mut rng = Lcg(0x5eed);
        type Case = (String, Vec<f32>, Vec<f32>, Vec<bool>); // name, a, b, mask
        let mut cases: Vec<Case> = Vec::new();
        for (c, &n) in [7usize, 50, 333, 2000].iter().enumerate() {
            for quantized in [false, true] {
                let mut a = Vec::with_capacity(n);
                let mut b = Vec::with_capacity(n);
                let mut mask = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut x = rng.next_f32() * 2.0 - 1.0;
                    if quantized {
                        // few levels -> many ties in values and |values| (incl. ±0)
                        x = (x * 4.0).round() / 4.0;
                    }
                    let noise = rng.next_f32() - 0.5;
                    let m = rng.next_f32() < 0.3;
                    // b correlated with a; mask mildly informative about |a|
                    b.push(if quantized {
                        (x + noise).round()
                    } else {
                        x + noise
                    });
                    a.push(if m { x * 1.5 } else { x });
                    mask.push(m);
                }
                cases.push((
                    format!("case{c}{}", if quantized { "q" } else { "" }),
                    a,
                    b,
                    mask,
                ));
            }
        }
        // Degenerate cases: both sides must agree on None.
        cases.push((
            "const".into(),
            vec![0.25; 9],
            (0..9).map(|i| i as f32).collect(),
            vec![false; 9],
        ));
        cases.push((
            "allpos".into(),
            vec![0.5, -1.0, 0.5, 2.0],
            vec![1., 2., 3., 3.],
            vec![true; 4],
        ));

        for (name, a, b, mask) in &cases {
            let d = dir.path();
            crate::store::npy::write(&d.join(format!("{name}_a.npy")), &[a.len()], &a)
                .unwrap();
            crate::store::npy::write(&d.join(format!("{name}_b.npy")), &[b.len()], &b)
                .unwrap();
            crate::store::npy::write(&d.join(format!("{name}_mask.npy")), &[mask.len()], &mask)
            .unwrap();
        }

        let out = match Command::new(&python).arg(&script).arg(dir.path()).output() {
            Ok(o) => o,
            Err(e) if !required => {
                eprintln!(
                    "skipped: cannot run {python} ({e}); set AGRA_PYTHON to require this test"
                );
                return;
            }
            Err(e) => panic!("cannot run AGRA_PYTHON={python}: {e}"),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if out.status.code() == Some(2) && !required {
            eprintln!("skipped: {python} lacks numpy/scipy ({stderr}); set AGRA_PYTHON to require this test");
            return;
        }
        assert!(
            out.status.success(),
            "{} failed: {stderr}",
            script.display()
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

        for (name, a, b, mask) in &cases {
            let want = &json[name.as_str()];
            let got = [
                ("pearson", pearson(a, b)),
                ("spearman", spearman(a, b)),
                ("auroc", auroc(a, mask)),
                ("auprc", auprc(a, mask)),
                ("relevance_mass", relevance_mass(a, mask)),
                ("topk_intersection", topk_intersection(a, mask)),
            ];
            for (metric, g) in got {
                let w = want
                    .get(metric)
                    .unwrap_or_else(|| panic!("{name}: no {metric} in output"));
                match (g, w.as_f64()) {
                    (Some(g), Some(w)) => {
                        assert!(
                            (g - w).abs() < 1e-9,
                            "{name} {metric}: rust {g} vs scipy {w}"
                        )
                    }
                    (None, None) if w.is_null() => {}
                    _ => panic!("{name} {metric}: rust {g:?} vs scipy {w}"),
                }
            }
        }
    }
}
