//! Per-member initial weights, drawn from the member's own seeded ChaCha stream rather than
//! libtorch's global generator, so a member's start never depends on its pack or device.

use super::Architecture;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// PyTorch's default for conv and linear layers, kaiming_uniform(a = sqrt(5)), reduces to
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)); we keep it so the network trains like the reference.
pub fn member_weights(arch: &Architecture, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(arch.numel() as usize);
    for spec in &arch.params {
        let fan_in = match spec.shape.len() {
            3 => spec.shape[1] * spec.shape[2], // conv [out, in, k]
            _ => spec.shape[0],                 // fc [in, out]
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        values.extend((0..spec.numel()).map(|_| rng.random_range(-bound..bound) as f32));
    }
    Tensor::from_slice(&values)
}

/// Standard normal test data of `shape` from its own seeded stream: the same in every test
/// thread, where libtorch's global generator is shared by tests running side by side.
#[cfg(test)]
pub fn normal(shape: &[i64], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product::<i64>()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    Tensor::from_slice(&values).view(shape)
}
