//! The synthetic AGRA data set: 2-D (or `dims`-D) noisy sinusoids with Gaussian bumps added.
//!
//! Because every bump is drawn by us, the ground-truth explanation of each signal is known
//! exactly: the attribution is the perturbed signal minus its ideal (bump-free) version, and
//! the mask marks the timesteps near each bump. The regression target (the score) depends on
//! nothing but that difference, so a model that learns it must look at the bumps.
//!
//! Determinism: each signal has its own ChaCha8 stream, keyed by the seed and selected by the
//! signal's global index, so signals can be drawn in parallel and the result never depends on
//! thread count or scheduling. Values are drawn and computed in f64 and stored as f32.
//! The one platform dependency left is libm (`sin`, `exp`, and the normal sampler's `exp`/`ln`):
//! results agree to the last f64 bit on the usual glibc targets, and the f32 rounding hides
//! any last-ulp difference in all but vanishingly rare cases.

use crate::config::DataConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// One Gaussian bump `amplitude * exp(-(t - position)^2 / (2 width^2))` on dimension `dim`.
/// `position` is a continuous timestep in `[0, length)`, not snapped to the grid, so bump
/// centres are uniform over the whole signal rather than over a lattice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perturbation {
    pub position: f32,
    pub dim: usize,
    pub amplitude: f32,
    pub width: f32,
}

impl Perturbation {
    /// The bump's value at timestep `t`, from the stored f32 parameters so that anyone
    /// recomputing a bump from a saved file gets the same numbers the generator used.
    pub fn value_at(&self, t: f64) -> f64 {
        let d = t - self.position as f64;
        let w = self.width as f64;
        self.amplitude as f64 * (-(d * d) / (2.0 * w * w)).exp()
    }
}

/// A set of signals with their ground truth; all per-signal arrays are row-major
/// `[n, dims, length]` (or `[n]` for scores), so row `i` is a contiguous slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub dims: usize,
    pub length: usize,
    pub perturbed: Vec<f32>,
    pub ideal: Vec<f32>,
    pub attribution: Vec<f32>,
    pub mask: Vec<u8>,
    pub scores: Vec<f32>,
    pub perturbations: Vec<Vec<Perturbation>>,
}

impl Split {
    /// An empty split of the given shape; `concat` and `select` build on it.
    pub fn empty(dims: usize, length: usize) -> Split {
        Split {
            dims,
            length,
            perturbed: Vec::new(),
            ideal: Vec::new(),
            attribution: Vec::new(),
            mask: Vec::new(),
            scores: Vec::new(),
            perturbations: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Elements per signal row.
    pub fn row_len(&self) -> usize {
        self.dims * self.length
    }
    /// The signals at `indices`, in that order (repeats allowed, e.g. for bootstrapping).
    /// Panics on an out-of-range index, which is a caller bug, not a data problem.
    /// The perturbed signal `i`, `[dims, length]` flattened: what a model sees.
    pub fn signal(&self, i: usize) -> &[f32] {
        let r = self.row_len();
        &self.perturbed[i * r..(i + 1) * r]
    }

    #[cfg(test)]
    pub fn select(&self, indices: &[usize]) -> Split {
        let r = self.row_len();
        let mut out = Split::empty(self.dims, self.length);
        for &i in indices {
            assert!(i < self.len(), "select: index {i} out of range for {} signals", self.len());
            out.perturbed.extend_from_slice(&self.perturbed[i * r..(i + 1) * r]);
            out.ideal.extend_from_slice(&self.ideal[i * r..(i + 1) * r]);
            out.attribution.extend_from_slice(&self.attribution[i * r..(i + 1) * r]);
            out.mask.extend_from_slice(&self.mask[i * r..(i + 1) * r]);
            out.scores.push(self.scores[i]);
            out.perturbations.push(self.perturbations[i].clone());
        }
        out
    }

    /// `a` followed by `b`. Panics if their shapes differ: mixing shapes is a caller bug.
    pub fn concat(a: &Split, b: &Split) -> Split {
        assert!(
            a.dims == b.dims && a.length == b.length,
            "concat: shapes differ ({}x{} vs {}x{})",
            a.dims,
            a.length,
            b.dims,
            b.length
        );
        let mut out = a.clone();
        out.perturbed.extend_from_slice(&b.perturbed);
        out.ideal.extend_from_slice(&b.ideal);
        out.attribution.extend_from_slice(&b.attribution);
        out.mask.extend_from_slice(&b.mask);
        out.scores.extend_from_slice(&b.scores);
        out.perturbations.extend(b.perturbations.iter().cloned());
        out
    }

    fn push(&mut self, s: Signal) {
        self.perturbed.extend(s.perturbed);
        self.ideal.extend(s.ideal);
        self.attribution.extend(s.attribution);
        self.mask.extend(s.mask);
        self.scores.push(s.score);
        self.perturbations.push(s.perturbations);
    }
}

/// One generated signal before it is packed into a split.
struct Signal {
    perturbed: Vec<f32>,
    ideal: Vec<f32>,
    attribution: Vec<f32>,
    mask: Vec<u8>,
    score: f32,
    perturbations: Vec<Perturbation>,
}

/// The train and test splits: global signals `0..train` and `train..train+test`.
pub fn generate(cfg: &DataConfig, seed: u64) -> (Split, Split) {
    let total = cfg.train + cfg.test;
    // An indexed parallel collect keeps index order whatever the scheduling.
    let signals: Vec<Signal> = (0..total)
        .into_par_iter()
        .map(|i| generate_signal(cfg, seed, i as u64))
        .collect();
    let mut train = Split::empty(cfg.dims, cfg.length);
    let mut test = Split::empty(cfg.dims, cfg.length);
    for (i, s) in signals.into_iter().enumerate() {
        if i < cfg.train {
            train.push(s)
        } else {
            test.push(s)
        }
    }
    (train, test)
}

/// The regression target for one signal: `optimal_score * (1 - min(1, MSE / mse_ref))` with
/// MSE the mean squared difference between the perturbed and ideal rows. A bump-free signal
/// scores exactly `optimal_score`, since the difference is then exactly zero.
pub fn score(cfg: &DataConfig, perturbed: &[f32], ideal: &[f32]) -> f32 {
    assert_eq!(perturbed.len(), ideal.len(), "score: row lengths differ");
    if perturbed.is_empty() {
        return cfg.optimal_score as f32;
    }
    let sum: f64 = perturbed
        .iter()
        .zip(ideal)
        .map(|(&p, &i)| {
            let d = p as f64 - i as f64;
            d * d
        })
        .sum();
    let mse = sum / perturbed.len() as f64;
    (cfg.optimal_score * (1.0 - (mse / cfg.mse_ref).min(1.0))) as f32
}

/// The ChaCha8 stream for signal `index`: the key comes from the seed alone (spread by
/// splitmix64 so nearby seeds give unrelated keys) and the index picks the stream, so
/// every signal's draws are independent of every other's and of the order they run in.
fn signal_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut state = seed;
    let mut key = [0u8; 32];
    for chunk in key.chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform on `[lo, hi]`, tolerating `lo == hi` (a fixed value, as in the paper preset).
fn uniform(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    if lo >= hi {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

/// Draw one signal. The order of draws is part of the data format: changing it changes
/// every data set, so add new draws only at the end.
fn generate_signal(cfg: &DataConfig, seed: u64, index: u64) -> Signal {
    let mut rng = signal_rng(seed, index);
    let (dims, length) = (cfg.dims, cfg.length);
    let n = dims * length;

    let waves: Vec<(f64, f64)> = (0..dims)
        .map(|_| {
            let period = uniform(&mut rng, cfg.period);
            let phase = rng.random_range(0.0..std::f64::consts::TAU);
            (period, phase)
        })
        .collect();
    let mut ideal = vec![0f64; n];
    for (d, &(period, phase)) in waves.iter().enumerate() {
        for t in 0..length {
            let clean = (std::f64::consts::TAU * t as f64 / period + phase).sin();
            let noise: f64 = rng.sample(StandardNormal);
            ideal[d * length + t] = clean + cfg.noise * noise;
        }
    }

    // The largest f32 below `length`: an f64 just under `length` can round up to it.
    let last = f32::from_bits((length as f32).to_bits() - 1);
    let count = rng.random_range(0..=cfg.max_perturbations);
    let perturbations: Vec<Perturbation> = (0..count)
        .map(|_| {
            let position = (rng.random_range(0.0..length as f64) as f32).min(last);
            let dim = rng.random_range(0..dims);
            let magnitude = uniform(&mut rng, cfg.amplitude);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let width = uniform(&mut rng, cfg.width);
            Perturbation { position, dim, amplitude: (sign * magnitude) as f32, width: width as f32 }
        })
        .collect();

    let mut bumps = vec![0f64; n];
    let mut mask = vec![0u8; n];
    for p in &perturbations {
        let row = p.dim * length;
        let reach = cfg.mask_widths * p.width as f64;
        // The nearest timestep is always marked so a bump never goes unmasked, even when
        // `mask_widths * width < 0.5` leaves no timestep within reach of the centre.
        let nearest = ((p.position as f64).round() as usize).min(length - 1);
        for t in 0..length {
            bumps[row + t] += p.value_at(t as f64);
            if (t as f64 - p.position as f64).abs() <= reach || t == nearest {
                mask[row + t] = 1;
            }
        }
    }

    let ideal32: Vec<f32> = ideal.iter().map(|&v| v as f32).collect();
    let perturbed: Vec<f32> = ideal.iter().zip(&bumps).map(|(&i, &b)| (i + b) as f32).collect();
    // Taken in f32 from the stored arrays so `attribution == perturbed - ideal` holds exactly
    // for anyone checking the files; it equals the bump sum up to f32 rounding.
    let attribution: Vec<f32> = perturbed.iter().zip(&ideal32).map(|(&p, &i)| p - i).collect();
    let score = score(cfg, &perturbed, &ideal32);
    Signal { perturbed, ideal: ideal32, attribution, mask, score, perturbations }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The quick preset's data at the small sizes the tests below were written for.
    pub(crate) fn quick() -> DataConfig {
        let sets = crate::config::TEST_SIZES.iter().map(|s| s.to_string()).collect();
        let sources = crate::config::Sources { preset: "quick".into(), sets, ..Default::default() };
        crate::config::Config::load(&sources).expect("quick preset").data
    }

    /// Pearson's chi-square statistic against a uniform expectation.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
    }

    fn many_perturbations(cfg: &DataConfig) -> Vec<Vec<Perturbation>> {
        (0..4000).map(|i| generate_signal(cfg, 7, i).perturbations).collect()
    }

    #[test]
    fn counts_cover_range_uniformly() {
        let cfg = quick();
        let mut counts = [0u64; 9];
        for ps in many_perturbations(&cfg) {
            counts[ps.len()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        // Chi-square critical value, 8 degrees of freedom, p = 0.001.
        assert!(chi_square(&counts) < 26.124, "{counts:?}");
    }

    #[test]
    fn positions_and_dims_uniform() {
        let cfg = DataConfig { dims: 4, ..quick() };
        let mut pos = [0u64; 16];
        let mut dim = [0u64; 4];
        let mut sign = [0u64; 2];
        for p in many_perturbations(&cfg).iter().flatten() {
            assert!(p.position >= 0.0 && (p.position as f64) < cfg.length as f64);
            pos[((p.position as f64 / cfg.length as f64 * 16.0) as usize).min(15)] += 1;
            dim[p.dim] += 1;
            sign[(p.amplitude > 0.0) as usize] += 1;
            assert_eq!(p.amplitude.abs(), 1.0);
            assert_eq!(p.width, 2.0);
        }
        // Critical values at p = 0.001 for 15, 3 and 1 degrees of freedom.
        assert!(chi_square(&pos) < 37.697, "{pos:?}");
        assert!(chi_square(&dim) < 16.266, "{dim:?}");
        assert!(chi_square(&sign) < 10.828, "{sign:?}");
    }

    #[test]
    fn ranges_are_respected() {
        let cfg = DataConfig { amplitude: [0.5, 1.5], width: [1.0, 3.0], ..quick() };
        for p in many_perturbations(&cfg).iter().flatten() {
            assert!((0.5..=1.5).contains(&p.amplitude.abs()), "{p:?}");
            assert!((1.0..=3.0).contains(&p.width), "{p:?}");
        }
    }

    #[test]
    fn scores_fall_with_more_or_larger_bumps() {
        let cfg = quick();
        let ideal = generate_signal(&cfg, 3, 0).ideal;
        assert_eq!(score(&cfg, &ideal, &ideal), 10.0);
        let bumped = |ps: &[Perturbation]| -> f32 {
            let mut row = ideal.clone();
            for p in ps {
                for t in 0..cfg.length {
                    row[p.dim * cfg.length + t] += p.value_at(t as f64) as f32;
                }
            }
            score(&cfg, &row, &ideal)
        };
        let small = Perturbation { position: 20.0, dim: 0, amplitude: 0.2, width: 2.0 };
        let large = Perturbation { amplitude: -0.4, ..small };
        let other = Perturbation { position: 40.0, dim: 1, ..small };
        let (one, big, two) = (bumped(&[small]), bumped(&[large]), bumped(&[small, other]));
        assert!(one < 10.0 && big < one && two < one, "{one} {big} {two}");
        // A huge bump saturates the score at zero rather than going negative.
        let huge = Perturbation { amplitude: 20.0, width: 10.0, ..small };
        assert_eq!(bumped(&[huge]), 0.0);
    }

    #[test]
    fn bump_free_signals_score_optimal() {
        let cfg = DataConfig { max_perturbations: 0, ..quick() };
        let (train, _) = generate(&cfg, 1);
        assert!(train.scores.iter().all(|&s| s == 10.0));
        assert!(train.mask.iter().all(|&m| m == 0));
        assert!(train.attribution.iter().all(|&a| a == 0.0));
    }

    #[test]
    fn stored_scores_match_score_fn() {
        let cfg = quick();
        let (train, _) = generate(&cfg, 5);
        let r = train.row_len();
        for i in 0..train.len() {
            let s = score(&cfg, train.signal(i), &train.ideal[i * r..(i + 1) * r]);
            assert_eq!(s, train.scores[i]);
        }
    }

    #[test]
    fn mask_covers_every_centre_and_attribution_is_exact() {
        let cfg = quick();
        let (train, test) = generate(&cfg, 11);
        for split in [&train, &test] {
            let (l, r) = (split.length, split.row_len());
            for i in 0..split.len() {
                for p in &split.perturbations[i] {
                    let nearest = ((p.position as f64).round() as usize).min(l - 1);
                    let floor = p.position as usize;
                    assert_eq!(split.mask[i * r + p.dim * l + nearest], 1, "{p:?}");
                    assert_eq!(split.mask[i * r + p.dim * l + floor], 1, "{p:?}");
                }
            }
            for k in 0..split.perturbed.len() {
                assert_eq!(split.attribution[k], split.perturbed[k] - split.ideal[k]);
            }
        }
    }

    #[test]
    fn tiny_masks_still_cover_centres() {
        let cfg = DataConfig { mask_widths: 0.01, width: [0.5, 0.5], ..quick() };
        let (train, _) = generate(&cfg, 2);
        let (l, r) = (train.length, train.row_len());
        for i in 0..train.len() {
            for p in &train.perturbations[i] {
                let nearest = ((p.position as f64).round() as usize).min(l - 1);
                assert_eq!(train.mask[i * r + p.dim * l + nearest], 1);
            }
        }
    }

    #[test]
    fn splits_have_right_sizes_and_are_disjoint() {
        let cfg = quick();
        let (train, test) = generate(&cfg, 13);
        assert_eq!((train.len(), test.len()), (64, 32));
        assert_eq!(train.perturbed.len(), 64 * 2 * 64);
        assert_eq!(train.mask.len(), train.perturbed.len());
        for i in 0..train.len() {
            for j in 0..test.len() {
                assert_ne!(train.signal(i), test.signal(j));
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let cfg = quick();
        assert_eq!(generate(&cfg, 42), generate(&cfg, 42));
        assert_ne!(generate(&cfg, 42).0.perturbed, generate(&cfg, 43).0.perturbed);
    }

    #[test]
    fn thread_count_does_not_matter() {
        let cfg = quick();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| generate(&cfg, 9))
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn train_size_does_not_change_signals() {
        // Signal i is the same whatever the split sizes: only its global index matters.
        let (a, _) = generate(&quick(), 4);
        let (b, _) = generate(&DataConfig { train: 32, test: 0, ..quick() }, 4);
        assert_eq!(a.select(&(0..32).collect::<Vec<_>>()), b);
    }

    #[test]
    fn select_and_concat_round_trip() {
        let (train, test) = generate(&quick(), 21);
        let all = Split::concat(&train, &test);
        assert_eq!(all.len(), 96);
        let idx: Vec<usize> = (0..64).collect();
        assert_eq!(all.select(&idx), train);
        let picked = all.select(&[70, 3]);
        assert_eq!(picked.signal(0), test.signal(6));
        assert_eq!(picked.signal(1), train.signal(3));
        assert_eq!(picked.perturbations[0], test.perturbations[6]);
        assert!(all.select(&[]).is_empty());
    }
}
