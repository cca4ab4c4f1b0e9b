//! Scores of one attribution of one signal against the ground truth: reconstruction MSE,
//! unsigned and signed Pearson, and localisation (AUROC, AUPRC, relevance mass, top-k).

use super::stats;
use crate::data::Split;

/// The metrics, each None where it is undefined for this signal (no perturbation) or not
/// meaningful for the method (MSE of a non-reconstructing method). A constant attribution
/// scores chance: correlation 0, AUROC 0.5, the mask's share for AUPRC, relevance mass and top-k.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub mse: Option<f64>,
    pub pearson_unsigned: Option<f64>,
    pub pearson_signed: Option<f64>,
    pub auroc: Option<f64>,
    pub auprc: Option<f64>,
    pub relevance_mass: Option<f64>,
    pub topk: Option<f64>,
}

pub const NAMES: [&str; 7] = ["mse", "pearson_unsigned", "pearson_signed", "auroc", "auprc", "relevance_mass", "topk"];

impl Scores {
    pub fn values(&self) -> [Option<f64>; 7] {
        [self.mse, self.pearson_unsigned, self.pearson_signed, self.auroc, self.auprc, self.relevance_mass, self.topk]
    }
}

/// Whether a method's attribution is x0 minus a reconstruction of the signal (grad and
/// smoothgrad descend to one), so the reconstruction MSE and the signed Pearson apply to it.
pub fn reconstructs(method: &str) -> bool {
    matches!(method, "grad" | "smoothgrad")
}

/// What to compute: everything, or only the cheap correlation metrics (for Figure 4 curves).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanted {
    /// The attribution is x0 - reconstruction (grad, smoothgrad): MSE and signed Pearson apply.
    pub reconstructs: bool,
    pub localisation: bool,
}

/// Scores signal `i` of `truth` given its attribution `attr` ([dims, T]).
pub fn score(truth: &Split, i: usize, attr: &[f32], wanted: Wanted) -> Scores {
    let (d, t) = (truth.dims, truth.length);
    let row = i * d * t..(i + 1) * d * t;
    let gt = &truth.attribution[row.clone()];
    let mut s = Scores {
        pearson_unsigned: correlation(&norms(gt, d, t), &norms(attr, d, t)),
        ..Scores::default()
    };
    if wanted.reconstructs {
        let (x0, ideal) = (&truth.perturbed[row.clone()], &truth.ideal[row.clone()]);
        let se: f64 = (0..d * t).map(|j| (ideal[j] as f64 - (x0[j] - attr[j]) as f64).powi(2)).sum();
        s.mse = Some(se / (d * t) as f64);
        // Per dimension, then the mean over the dimensions where it is defined (a dimension
        // without a bump has a constant ground truth and no correlation).
        let per_dim: Vec<f64> = (0..d).filter_map(|k| correlation(&gt[k * t..(k + 1) * t], &attr[k * t..(k + 1) * t])).collect();
        s.pearson_signed = (!per_dim.is_empty()).then(|| per_dim.iter().sum::<f64>() / per_dim.len() as f64);
    }
    if wanted.localisation {
        let mask: Vec<bool> = truth.mask[row].iter().map(|&m| m != 0).collect();
        let magnitude: Vec<f32> = attr.iter().map(|a| a.abs()).collect();
        s.auroc = stats::auroc(&magnitude, &mask);
        s.auprc = stats::auprc(&magnitude, &mask);
        s.relevance_mass = stats::relevance_mass(attr, &mask);
        s.topk = stats::topk_intersection(attr, &mask);
    }
    s
}

/// Pearson of an attribution with the truth. A constant attribution (a descent that had nothing
/// to do: the signal already scored optimal) points nowhere and scores 0, as the localisation
/// metrics score it at chance, so that every metric of a member covers the same signals; a
/// constant truth (no bump in that dimension) leaves nothing to find: None.
pub(super) fn correlation(truth: &[f32], attr: &[f32]) -> Option<f64> {
    let constant = |x: &[f32]| x.iter().all(|&v| v == x[0]);
    stats::pearson(truth, attr).or_else(|| (!constant(truth) && constant(attr)).then_some(0.0))
}

/// Doing nothing: the MSE between the perturbed input and the ideal signal.
pub fn identity_mse(truth: &Split, i: usize) -> f64 {
    let n = truth.dims * truth.length;
    let row = i * n..(i + 1) * n;
    truth.perturbed[row.clone()].iter().zip(&truth.ideal[row]).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() / n as f64
}

/// Per-timestep L2 norm over the dimensions: [dims, T] -> [T]. Squared in f64: in f32 any
/// value past 1.8e19 squared to infinity and the signal scored NA.
pub fn norms(a: &[f32], d: usize, t: usize) -> Vec<f32> {
    (0..t).map(|j| (0..d).map(|k| f64::from(a[k * t + j]).powi(2)).sum::<f64>().sqrt() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_signal(gt: Vec<f32>, d: usize, t: usize) -> Split {
        let ideal = vec![0.5f32; d * t];
        let perturbed: Vec<f32> = ideal.iter().zip(&gt).map(|(a, b)| a + b).collect();
        let mask = gt.iter().map(|&g| (g != 0.0) as u8).collect();
        Split { dims: d, length: t, perturbed, ideal, attribution: gt, mask, scores: vec![5.0], perturbations: vec![vec![]] }
    }

    #[test]
    fn the_true_attribution_scores_perfectly() {
        let gt = vec![0., 1., 0., 0., 0., 0., -2., 0.];
        let truth = one_signal(gt.clone(), 2, 4);
        let s = score(&truth, 0, &gt, Wanted { reconstructs: true, localisation: true });
        assert_eq!(s.mse, Some(0.0));
        assert!((s.pearson_unsigned.unwrap() - 1.0).abs() < 1e-12);
        assert!((s.pearson_signed.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!((s.auroc, s.auprc, s.relevance_mass, s.topk), (Some(1.0), Some(1.0), Some(1.0), Some(1.0)));
    }

    #[test]
    fn zero_attribution_reconstructs_nothing_and_scores_chance() {
        let gt = vec![0., 1., 0., 0., 0., 0., 0., 0.];
        let truth = one_signal(gt, 2, 4);
        let s = score(&truth, 0, &[0.0; 8], Wanted { reconstructs: true, localisation: true });
        assert!((s.mse.unwrap() - identity_mse(&truth, 0)).abs() < 1e-12);
        assert_eq!(s.mse, Some(1.0 / 8.0));
        assert_eq!(s.pearson_unsigned, Some(0.0));
        assert_eq!(s.pearson_signed, Some(0.0), "dimension 1 has no bump and no correlation to score");
        assert_eq!((s.auroc, s.auprc, s.relevance_mass, s.topk), (Some(0.5), Some(1.0 / 8.0), Some(1.0 / 8.0), Some(1.0 / 8.0)));
    }

    #[test]
    fn norms_are_per_timestep_over_dimensions() {
        assert_eq!(norms(&[3., 0., 4., 1.], 2, 2), vec![5.0, 1.0]);
        assert_eq!(norms(&[3e20, 4e20], 2, 1), vec![5e20], "no overflow in the squares");
    }
}
