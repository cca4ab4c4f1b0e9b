//! SmoothGrad's noise, deterministic for a seed and independent of packing and chunking:
//! a bank of standard-normal rows drawn once from a seeded ChaCha stream and uploaded, and a
//! row index that is a function of (signal, member, sample, iteration) computed on the device,
//! so no noise crosses the host-device link inside the descent loop.

use crate::config::splitmix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// Rows in the bank; prime, so the affine index below cycles through all of them.
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
        // An affine map of the ids modulo a prime: distinct samples and iterations of a pair
        // land on distinct rows; the rows themselves are independent normals.
        let index = ids.signals.view([s, 1, 1]) * 7919
            + sample.view([1, n, 1]) * 104_729
            + ids.members.view([1, 1, p]) * 1_299_709
            + (iter as i64 * 15_485_863 + self.offset);
        let index = index.remainder(ROWS).view([-1]);
        let (_, d, t) = self.bank.size3().expect("3-D bank");
        self.bank.index_select(0, &index).view([s, n, p, d, t])
    }
}
