//! Figure 4: a metric of the AGRA average against the number of averaged members k = 1..M,
//! in training order and as mean +/- std over random member orders.

use super::signal::{self, Wanted};
use crate::data::Split;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    pub method: String,
    pub metric: String,
    pub k: Vec<usize>,
    /// Members averaged in training order (member index order).
    #[serde(deserialize_with = "super::nan::vec")]
    pub ordered: Vec<f64>,
    /// Mean and std over random orders.
    #[serde(deserialize_with = "super::nan::vec")]
    pub random_mean: Vec<f64>,
    #[serde(deserialize_with = "super::nan::vec")]
    pub random_std: Vec<f64>,
}

/// Curves of unsigned Pearson (and, for reconstructing methods, signed Pearson and MSE).
/// `members`: [M, S, dims, T].
pub fn curves(method: &str, truth: &Split, members: &[f32], m: usize, reconstructs: bool, orders: usize, seed: u64) -> Vec<Curve> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut all_orders: Vec<Vec<usize>> = vec![(0..m).collect()];
    for _ in 0..orders {
        let mut o: Vec<usize> = (0..m).collect();
        o.shuffle(&mut rng);
        all_orders.push(o);
    }
    // [order][k] -> mean metric values (mse, unsigned, signed) over signals
    let per_order: Vec<Vec<[f64; 3]>> = all_orders.par_iter().map(|o| running(truth, members, o, reconstructs)).collect();
    let metrics: &[(&str, usize)] = if reconstructs {
        &[("pearson_unsigned", 1), ("pearson_signed", 2), ("mse", 0)]
    } else {
        &[("pearson_unsigned", 1)]
    };
    metrics
        .iter()
        .map(|&(name, idx)| {
            let ordered = per_order[0].iter().map(|v| v[idx]).collect();
            let (mut random_mean, mut random_std) = (Vec::new(), Vec::new());
            for k in 0..m {
                let values: Vec<f64> = per_order[1..].iter().map(|o| o[k][idx]).collect();
                let (mean, std) = super::stats::mean_std(&values);
                random_mean.push(mean);
                random_std.push(std);
            }
            Curve { method: method.to_string(), metric: name.to_string(), k: (1..=m).collect(), ordered, random_mean, random_std }
        })
        .collect()
}

/// Mean over signals of (MSE, unsigned Pearson, signed Pearson) of the running average of the
/// members in `order`, for every k.
fn running(truth: &Split, members: &[f32], order: &[usize], reconstructs: bool) -> Vec<[f64; 3]> {
    let per_member = members.len() / order.len().max(1);
    let per_signal = truth.dims * truth.length;
    let mut sum = vec![0f32; per_member];
    let mut out = Vec::with_capacity(order.len());
    for (k, &member) in order.iter().enumerate() {
        for (s, v) in sum.iter_mut().zip(&members[member * per_member..(member + 1) * per_member]) {
            *s += v;
        }
        let scale = 1.0 / (k + 1) as f32;
        let wanted = Wanted { reconstructs, localisation: false };
        let mut acc = [(0.0, 0usize); 3];
        for i in 0..truth.len() {
            let avg: Vec<f32> = sum[i * per_signal..(i + 1) * per_signal].iter().map(|v| v * scale).collect();
            let s = signal::score(truth, i, &avg, wanted);
            for (slot, value) in acc.iter_mut().zip([s.mse, s.pearson_unsigned, s.pearson_signed]) {
                if let Some(v) = value {
                    slot.0 += v;
                    slot.1 += 1;
                }
            }
        }
        out.push(acc.map(|(total, n)| if n == 0 { f64::NAN } else { total / n as f64 }));
    }
    out
}
