//! SmoothGrad's noise, deterministic for a seed and independent of packing and chunking:
//! a bank of standard-normal rows drawn once from a seeded ChaCha stream and uploaded, and a
//! row index that is a function of (signal, member, sample, iteration) computed on the device,
//! so no noise crosses the host-device link inside the descent loop.

use crate::config::splitmix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// Rows in the bank: a pair's draws repeat after this many (samples x iterations; the paper
/// preset's 4 x 100 stay well inside). Prime, so pairs' starting rows spread over all of them.
const ROWS: i64 = 4093;

/// Global signal and member ids of the pairs in a chunk, on the device.
pub struct PairIds {
    pub signals: Tensor, // [S] i64
    pub members: Tensor, // [P] i64
}

impl PairIds {
    pub fn narrow(&self, start: i64, len: i64) -> PairIds {
        PairIds { signals: self.signals.narrow(0, start, len), members: self.members.shallow_clone() }
    }

    /// The pairs of the signals at positions `rows` ([L] i64).
    pub fn select(&self, rows: &Tensor) -> PairIds {
        PairIds { signals: self.signals.index_select(0, rows), members: self.members.shallow_clone() }
    }
}

pub struct NoiseBank {
    bank: Tensor, // [ROWS, dims, T]
    offset: i64,
}

impl NoiseBank {
    pub fn new(seed: u64, dims: i64, length: i64, device: Device) -> NoiseBank {
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix(seed ^ 0x5eed_5eed));
        let values: Vec<f32> = (0..ROWS * dims * length).map(|_| StandardNormal.sample(&mut rng)).collect();
        let bank = Tensor::from_slice(&values).view([ROWS, dims, length]).to_device(device);
        NoiseBank { bank, offset: (splitmix(seed) % ROWS as u64) as i64 }
    }

    /// Noise [S, n, P, dims, T] for the pairs in `ids`, `samples` per pair, at iteration `iter`.
    pub fn draw(&self, ids: &PairIds, samples: usize, iter: usize) -> Tensor {
        let device = self.bank.device();
        let s = ids.signals.size()[0];
        let p = ids.members.size()[0];
        let n = samples as i64;
        let sample = Tensor::arange(n, (Kind::Int64, device));
        // Each pair starts at a row of its own (an affine map of its ids modulo a prime) and
        // walks the bank one row per draw, so its first ROWS draws (samples x iterations) are
        // all distinct rows; the rows themselves are independent normals.
        let index = ids.signals.view([s, 1, 1]) * 7919
            + ids.members.view([1, 1, p]) * 1_299_709
            + sample.view([1, n, 1])
            + (iter as i64 * n + self.offset);
        let index = index.remainder(ROWS).view([-1]);
        let (_, d, t) = self.bank.size3().expect("3-D bank");
        self.bank.index_select(0, &index).view([s, n, p, d, t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair's draws over samples and iterations are distinct rows until the bank runs out,
    /// and two pairs start at different rows.
    #[test]
    fn a_pairs_draws_do_not_repeat_within_the_bank() {
        let bank = NoiseBank::new(5, 1, 1, Device::Cpu); // one value a row: equal values, equal rows
        let ids = PairIds { signals: Tensor::from_slice(&[0i64, 3]), members: Tensor::from_slice(&[0i64, 1]) };
        let (samples, iterations) = (4, ROWS as usize / 4);
        let mut pairs = vec![Vec::new(); 4];
        for iter in 0..iterations {
            let values: Vec<f32> = Vec::try_from(&bank.draw(&ids, samples, iter).permute([0, 2, 1, 3, 4]).reshape([-1])).unwrap();
            for (pair, drawn) in pairs.iter_mut().zip(values.chunks(samples)) {
                pair.extend(drawn.iter().map(|v| v.to_bits()));
            }
        }
        for pair in &pairs {
            let distinct: std::collections::HashSet<_> = pair.iter().collect();
            assert_eq!(distinct.len(), samples * iterations);
        }
        assert!(pairs.iter().map(|p| p[0]).collect::<std::collections::HashSet<_>>().len() == 4, "four pairs, four starts");
    }
}
