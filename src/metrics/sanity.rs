//! The model-randomisation sanity check (Adebayo et al., 2018): an explanation that survives
//! replacing the trained weights by random ones explains the input, not the model. We compare
//! the saliency maps of trained members with those of randomly initialised copies: their
//! similarity must be far below the similarity between two trained members.

use super::stats;
use crate::config::splitmix;
use crate::data::Split;
use crate::config::Config;
use crate::farm::Worker;
use crate::model::{init, Architecture};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sanity {
    pub members: usize,
    /// Mean Spearman correlation of |saliency| between trained member i and a random network.
    #[serde(deserialize_with = "super::nan::f64")]
    pub trained_vs_random: f64,
    /// The same between trained members i and i+1 (what "similar" looks like).
    #[serde(deserialize_with = "super::nan::f64")]
    pub trained_vs_trained: f64,
    /// Unsigned Pearson with the ground truth, trained and random.
    #[serde(deserialize_with = "super::nan::f64")]
    pub truth_trained: f64,
    #[serde(deserialize_with = "super::nan::f64")]
    pub truth_random: f64,
    /// None where the trained members' saliency maps are constant over every signal (networks
    /// that score every input alike): they rank nothing to compare.
    pub passed: Option<bool>,
}

pub fn check(config: &Config, worker: &Worker, trained: &[Vec<f32>], truth: &Split) -> Result<Option<Sanity>> {
    let n = trained.len();
    if n < 2 {
        return Ok(None);
    }
    let arch = Architecture::new(&config.model, config.data.dims, config.data.length);
    let random: Vec<Tensor> = (0..n).map(|i| init::member_weights(&arch, splitmix(config.seed ^ 0xbad_5eed ^ i as u64))).collect();
    let trained: Vec<Tensor> = trained.iter().map(|w| Tensor::from_slice(w)).collect();
    let a_trained = saliency(config, &arch, worker, &trained, truth)?;
    let a_random = saliency(config, &arch, worker, &random, truth)?;
    let per = truth.dims * truth.length;
    let (mut tr, mut tt, mut gt_t, mut gt_r) = (vec![], vec![], vec![], vec![]);
    let magnitude = |a: &[f32]| a.iter().map(|v| v.abs()).collect::<Vec<f32>>();
    for i in 0..truth.len() {
        let row = |all: &[f32], m: usize| all[(m * truth.len() + i) * per..(m * truth.len() + i + 1) * per].to_vec();
        let gt_norm = super::signal::norms(&truth.attribution[i * per..(i + 1) * per], truth.dims, truth.length);
        for m in 0..n {
            let (t, r) = (row(&a_trained, m), row(&a_random, m));
            tr.extend(stats::spearman(&magnitude(&t), &magnitude(&r)));
            tt.extend(stats::spearman(&magnitude(&t), &magnitude(&row(&a_trained, (m + 1) % n))));
            // Scored as evaluate scores an explanation: a constant map correlates 0.
            gt_t.extend(super::signal::correlation(&gt_norm, &super::signal::norms(&t, truth.dims, truth.length)));
            gt_r.extend(super::signal::correlation(&gt_norm, &super::signal::norms(&r, truth.dims, truth.length)));
        }
    }
    let mean = |v: &[f64]| stats::mean_std(v).0;
    let (trained_vs_random, trained_vs_trained) = (mean(&tr), mean(&tt));
    Ok(Some(Sanity {
        members: n,
        trained_vs_random,
        trained_vs_trained,
        truth_trained: mean(&gt_t),
        truth_random: mean(&gt_r),
        passed: match (trained_vs_random.is_finite(), trained_vs_trained.is_finite()) {
            (true, true) => Some(trained_vs_random < trained_vs_trained),
            // Only the random networks' maps are flat: the trained ones' cannot come from them.
            (false, true) => Some(true),
            _ => None,
        },
    }))
}

/// Saliency of every member on every signal, [P, S, dims, T] on the host: explain's own pack
/// path, so the check is chunked like the explanations it checks.
fn saliency(config: &Config, arch: &Architecture, worker: &Worker, weights: &[Tensor], truth: &Split) -> Result<Vec<f32>> {
    let mut config = config.clone();
    config.explain.methods = vec!["saliency".into()];
    let job: Vec<(usize, usize, Tensor)> = weights.iter().enumerate().map(|(i, w)| (i, i, w.shallow_clone())).collect();
    let max_batch = crate::farm::default_max_batch(worker.device, arch.activations());
    let (mut result, _) = crate::explain::explain_pack(&config, arch, worker, &job, truth, max_batch)?;
    Ok(result.methods.remove(0).1.members)
}
