//! What a member sees in one epoch: its data order, the version of each sample it is shown
//! (with `train.augment`) and its dropout masks, drawn from its own
//! ChaCha stream keyed by (member seed, epoch). Nothing here depends on the pack, the device
//! or on earlier epochs, which is what makes resume exact without saving RNG state.

use crate::config::splitmix;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// One epoch of a pack, laid out for upload in one copy each.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// Sample indices, position-major: entry `i * P + p` is member p's i-th sample, so a batch
    /// of positions [s, s+len) is the contiguous range [s*P, (s+len)*P) and gathers straight
    /// into the [len, P*dims, T] layout of the packed convolution.
    pub order: Vec<i64>,
    /// Dropout masks [P, n, hidden], already scaled by 1/(1-p).
    pub masks: Vec<f32>,
}

/// What a plan is drawn for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSpec {
    /// Training signals n.
    pub samples: usize,
    pub hidden: usize,
    pub dropout: f64,
    /// Draw one of the [`VERSIONS`] per sample: `order` then indexes the augmented bank, whose
    /// entry `v * n + i` is version v of sample i.
    pub augment: bool,
}

/// Versions of a signal with the same score: as is, negated, time-reversed, both.
pub const VERSIONS: usize = 4;

pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix(seed ^ splitmix(epoch as u64 + 1)))
}

pub fn epoch_plan(seeds: &[u64], epoch: usize, spec: &PlanSpec) -> EpochPlan {
    let PlanSpec { samples: n, hidden, dropout, augment } = *spec;
    let p = seeds.len();
    let keep = 1.0 - dropout;
    let scale = (1.0 / keep) as f32;
    // Members draw in parallel (on a GPU this host work would otherwise stall every epoch);
    // each draws from its own stream, so the result does not depend on scheduling.
    let drawn: Vec<(Vec<i64>, Vec<f32>)> = seeds
        .par_iter()
        .map(|&seed| {
            let mut rng = epoch_rng(seed, epoch);
            let mut perm: Vec<i64> = (0..n as i64).collect();
            perm.shuffle(&mut rng);
            let masks = (0..n * hidden).map(|_| if rng.random_bool(keep) { scale } else { 0.0 }).collect();
            if augment {
                for sample in perm.iter_mut() {
                    *sample += (rng.random_range(0..VERSIONS) * n) as i64;
                }
            }
            (perm, masks)
        })
        .collect();
    let mut order = vec![0i64; n * p];
    let mut masks = Vec::with_capacity(p * n * hidden);
    for (member, (perm, m)) in drawn.into_iter().enumerate() {
        for (i, &sample) in perm.iter().enumerate() {
            order[i * p + member] = sample;
        }
        masks.extend(m);
    }
    EpochPlan { order, masks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_plan_does_not_depend_on_its_pack() {
        let spec = PlanSpec { samples: 10, hidden: 4, dropout: 0.2, augment: true };
        let alone = epoch_plan(&[7], 3, &spec);
        let packed = epoch_plan(&[1, 7, 9], 3, &spec);
        let column: Vec<i64> = (0..10).map(|i| packed.order[i * 3 + 1]).collect();
        assert_eq!(column, alone.order);
        assert_eq!(&packed.masks[40..80], &alone.masks[..]);
    }

    #[test]
    fn order_is_a_permutation_and_masks_are_scaled() {
        let spec = PlanSpec { samples: 100, hidden: 8, dropout: 0.25, augment: false };
        let plan = epoch_plan(&[42], 0, &spec);
        let mut sorted = plan.order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert!(plan.masks.iter().all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
        let kept = plan.masks.iter().filter(|&&m| m > 0.0).count() as f64 / 800.0;
        assert!((kept - 0.75).abs() < 0.05, "{kept}");
        assert_ne!(epoch_plan(&[42], 1, &spec).order, plan.order);
    }

    #[test]
    fn augmentation_keeps_the_order_and_masks_and_picks_every_version() {
        let plain = PlanSpec { samples: 100, hidden: 8, dropout: 0.25, augment: false };
        let augmented = epoch_plan(&[42], 0, &PlanSpec { augment: true, ..plain });
        let base = epoch_plan(&[42], 0, &plain);
        assert_eq!(augmented.masks, base.masks);
        let samples: Vec<i64> = augmented.order.iter().map(|&i| i % 100).collect();
        assert_eq!(samples, base.order);
        let mut used = [0usize; VERSIONS];
        augmented.order.iter().for_each(|&i| used[i as usize / 100] += 1);
        assert!(used.iter().all(|&u| u > 10), "{used:?}");
    }
}
