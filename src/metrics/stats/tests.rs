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
    close(relevance_mass(&[0., 0., 0., 0.], &[true, false, false, false]), 0.25);
    assert_eq!(relevance_mass(&[1., 2.], &[false, false]), None);
    assert_eq!(relevance_mass(&[1., f32::NAN], &[true, false]), None);
}

// k = 2; |a| desc = idx 0 (3), then idx 1 and 2 tie at 2 for the last place: idx 2 (in the
// mask) takes it half the time -> (1 + 0.5) / 2
#[test]
fn topk_hand_example() {
    close(
        topk_intersection(&[3., -2., 2., 0.], &[true, false, true, false]),
        0.75,
    );
    // A constant attribution scores the mask's share wherever the mask lies.
    for mask in [[true, false, false, false], [false, false, false, true]] {
        close(topk_intersection(&[0.; 4], &mask), 0.25);
    }
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
        crate::store::npy::write(&d.join(format!("{name}_a.npy")), &[a.len()], a)
            .unwrap();
        crate::store::npy::write(&d.join(format!("{name}_b.npy")), &[b.len()], b)
            .unwrap();
        crate::store::npy::write(&d.join(format!("{name}_mask.npy")), &[mask.len()], mask)
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
