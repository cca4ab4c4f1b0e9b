//! Winograd's minimal filtering F(4, k) for the wide convolution layers: four outputs of a
//! k-tap correlation from k + 3 products instead of 4 k (2.5x fewer for the paper's k = 5), as
//! in cuDNN and NNPACK (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016). Per tile of four outputs the input's k + 3 rows are transformed (`B^T`), each of the
//! k + 3 points multiplies its own [c_in, c_out] matrix of transformed weights (`G w`) in one
//! GEMM over all tiles, and `A^T` folds the points back into four outputs. The input gradient
//! is the same correlation with the flipped weights; the weight gradient reuses the forward's
//! transformed input: dW[kk] = sum over points of G[point][kk] V[point]^T (A dy)[point].
//!
//! The matrices come from Toom-Cook interpolation at 0, +-1, +-2, +-1/2 and infinity, computed
//! in f64 when a workspace is built. The rounding error is about 1e-6 of a layer's largest
//! value, ten times the direct product's (a unit test bounds it at 1e-5): harmless to training,
//! but a max-pool pair whose two values are that close may pick the other winner than
//! libtorch does, an equally valid subgradient.
//!
//! On the 2-core CPU a member's training step (32 samples) went from 3.5 to 1.8-2.2 ms and an
//! input gradient from 2.8 to 1.5-1.8 ms: the GEMMs take 2.5x fewer operations, the transforms
//! (dense, in AVX2 registers) cost back about a third of that. Summing the transforms in
//! pairs of points (`kernels`) took their share of a training run from 27% to 14-17% (perf).

use super::gemm::{gemm, Strided};
use super::{Conv, Pooled};
use kernels::{combine, Rows, Tiles};
use transform::{Transform, TILE};

mod kernels;
mod transform;

/// A wide layer's Winograd buffers, sized for `capacity` samples.
pub struct Winograd {
    tf: Transform,
    /// Transformed weights [alpha, c_in, c_out] and flipped weights [alpha, c_out, c_in].
    u: Vec<f32>,
    u_back: Vec<f32>,
    /// The forward's transformed input [alpha, tiles, c_in], kept for the weight gradient.
    v: Vec<f32>,
    /// Transformed output gradient for the input gradient [alpha, tiles, c_out], then for the
    /// weight gradient (`A dy`).
    v_dy: Vec<f32>,
    /// Products at the points [alpha, tiles, max(c_in, c_out)].
    prod: Vec<f32>,
    /// The weight gradient at the points [alpha, c_in, c_out].
    q: Vec<f32>,
}

impl Winograd {
    /// Buffers for `conv`, or None when it is computed directly (the output length must split
    /// into whole tiles).
    pub fn new(conv: Conv, capacity: usize) -> Option<Winograd> {
        let tf = Transform::new(conv.k).filter(|_| conv.t.is_multiple_of(TILE))?;
        let (a, tiles) = (tf.alpha, capacity * conv.t / TILE);
        let (c_in, c_out) = (conv.c_in, conv.c_out);
        Some(Winograd {
            u: vec![0.0; a * c_in * c_out],
            u_back: vec![0.0; a * c_in * c_out],
            v: vec![0.0; a * tiles * c_in],
            v_dy: vec![0.0; a * tiles * c_out],
            prod: vec![0.0; a * tiles * c_in.max(c_out)],
            q: vec![0.0; a * c_in * c_out],
            tf,
        })
    }

    /// Transforms the layer's weights: `w` [k, c_in, c_out] and `w_back` [k, c_out, c_in] (the
    /// direct products' operands).
    pub fn set_weights(&mut self, w: &[f32], w_back: &[f32]) {
        let block = w.len() / self.tf.k;
        let rows = Rows { offset: 0, stride: block };
        combine(&self.tf.g, w, rows, &mut self.u, rows, block, false);
        combine(&self.tf.g, w_back, rows, &mut self.u_back, rows, block, false);
    }

    /// y = x (*) w for `b` samples, max-pooled and ReLU'd into `pooled` (with its route): x the
    /// padded input rows [b * seg, c_in], y the output rows (output t of sample s at row
    /// s * seg + t), which only the plain-Rust pass writes (it pools them after).
    pub fn forward(&mut self, conv: Conv, b: usize, x: &[f32], y: &mut [f32], pooled: Pooled) {
        let buffers = (&mut self.v, &mut self.prod);
        correlate(&self.tf, conv, b, [conv.c_in, conv.c_out], 0, x, &self.u, buffers, (y, Some(pooled)));
    }

    /// dx = dy (*) flipped w: `dy` with `2 * pad` zero rows in front (as `Layer::dy`), dx rows
    /// laid out like the padded input (only each sample's `t` inner rows are written).
    pub fn input_grad(&mut self, conv: Conv, b: usize, dy: &[f32], dx: &mut [f32]) {
        let buffers = (&mut self.v_dy, &mut self.prod);
        correlate(&self.tf, conv, b, [conv.c_out, conv.c_in], conv.pad, dy, &self.u_back, buffers, (dx, None));
    }

    /// dW [k, c_in, c_out] (added to its value with `accumulate`) from `dy` (as in
    /// `input_grad`) and the input of the last `forward`.
    pub fn weight_grad(&mut self, conv: Conv, b: usize, dy: &[f32], dw: &mut [f32], accumulate: bool) {
        let (tf, tiles, c_in, c_out) = (&self.tf, b * conv.t / TILE, conv.c_in, conv.c_out);
        // A dy per tile (the output transform's transpose); output row r is dy's row 2 pad + r.
        kernels::gradient_points(tf, Tiles { conv, b, offset: 2 * conv.pad }, dy, c_out, &mut self.v_dy);
        for point in 0..tf.alpha {
            let v_t = Strided { data: &self.v, offset: point * tiles * c_in, rs: 1, cs: c_in };
            let p = Strided::rows(&self.v_dy, point * tiles * c_out, c_out);
            gemm(c_in, c_out, tiles, v_t, p, &mut self.q, point * c_in * c_out, c_out, false);
        }
        let block = Rows { offset: 0, stride: c_in * c_out };
        combine(&tf.gt, &self.q, block, dw, block, c_in * c_out, accumulate);
    }
}

/// dst = src (*) the weights transformed into `u` [alpha, c_src, c_dst], for `b` samples whose
/// tiles start `offset` rows into each sample in both `src` and `dst`: every tile's rows into
/// the points (`v`), one product per point (`prod`), the points back into four output rows
/// (and those pooled, when asked).
#[allow(clippy::too_many_arguments)]
fn correlate(
    tf: &Transform,
    conv: Conv,
    b: usize,
    [c_src, c_dst]: [usize; 2],
    offset: usize,
    src: &[f32],
    u: &[f32],
    (v, prod): (&mut Vec<f32>, &mut Vec<f32>),
    (dst, pooled): (&mut [f32], Option<Pooled>),
) {
    let tiles = Tiles { conv, b, offset };
    kernels::input_points(tf, tiles, src, c_src, v);
    products(tf.alpha, tiles.count(), [c_src, c_dst], v, u, prod);
    kernels::output_rows(tf, tiles, prod, c_dst, dst, pooled);
}

/// prod[point] = v[point] [tiles, c_in] x u[point] [c_in, c_out], one GEMM per point.
fn products(alpha: usize, tiles: usize, [c_in, c_out]: [usize; 2], v: &[f32], u: &[f32], prod: &mut [f32]) {
    for point in 0..alpha {
        let (a, w) = (Strided::rows(v, point * tiles * c_in, c_in), Strided::rows(u, point * c_in * c_out, c_out));
        gemm(tiles, c_out, c_in, a, w, prod, point * tiles * c_out, c_out, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::native::gemm::{tests::each_isa, Isa};
    use crate::model::native::pool::route_bytes;

    /// Values in [-1, 1) from a hash: the same on every machine.
    fn values(len: usize, salt: u64) -> Vec<f32> {
        (0..len as u64).map(|i| ((i * 2654435761 + salt * 40503) % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    /// The largest difference from the f64 reference, relative to the reference's largest value.
    fn relative_error(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        got.iter().zip(want).fold(0f64, |m, (&g, w)| m.max((g as f64 - w).abs())) / scale
    }

    /// A layer's forward, input gradient and weight gradient through F(4, k) equal the direct
    /// sums (in f64) to within a few f32 roundings of their magnitudes, over several samples
    /// (rows between samples must neither leak in nor be needed), with accumulation. F(4, 5)
    /// and F(4, 3); channels in whole AVX-512 or AVX2 registers (the paired passes) and not
    /// (dense sums); with each kind of kernel the CPU has, the last in plain Rust.
    #[test]
    fn a_layer_through_the_transforms_equals_the_direct_sums() {
        let shapes = [(16, 32, 64, 5), (32, 16, 32, 5), (20, 12, 16, 5), (16, 24, 32, 3), (32, 32, 16, 3)];
        for (c_in, c_out, t, k) in shapes {
            let mut outputs = Vec::new();
            each_isa(|isa| outputs.push((isa, a_layer_equals_the_direct_sums(c_in, c_out, t, k, isa))));
            // AVX-512's registers and AVX2's give the same bits, transforms and tiles alike.
            if let [(Isa::Avx512, wide), (Isa::Avx2, narrow), ..] = &outputs[..] {
                assert!(wide == narrow, "({c_in}, {c_out}): AVX-512 and AVX2 differ");
            }
        }
    }

    /// One shape with one kind of tile: checks it, and returns y, dx and dw's bits.
    fn a_layer_equals_the_direct_sums(c_in: usize, c_out: usize, t: usize, k: usize, isa: Isa) -> Vec<u32> {
        let (pad, b) = (k / 2, 3);
        let conv = Conv { c_in, c_out, t, k, pad };
        let seg = conv.seg();
        let mut wino = Winograd::new(conv, b + 1).unwrap();
        let valid = |row: usize| row % seg < t;
        // Padded input: each sample's pad rows zero; dy: 2 pad zero rows, then output rows,
        // zero between samples.
        let mut x = values(b * seg * c_in, 1);
        x.chunks_exact_mut(c_in)
            .enumerate()
            .filter(|(r, _)| !(pad..pad + t).contains(&(r % seg)))
            .for_each(|(_, row)| row.fill(0.0));
        let mut dy = vec![0.0; ((b + 1) * seg + 2 * pad) * c_out];
        for (r, row) in values(b * seg * c_out, 2).chunks_exact(c_out).enumerate().filter(|(r, _)| valid(*r)) {
            dy[(2 * pad + r) * c_out..][..c_out].copy_from_slice(row);
        }
        // w [k, c_in, c_out]; w_back [k, c_out, c_in] flipped in time.
        let w = values(k * c_in * c_out, 3);
        let mut w_back = vec![0.0; w.len()];
        for kk in 0..k {
            for c in 0..c_in {
                for o in 0..c_out {
                    w_back[((k - 1 - kk) * c_out + o) * c_in + c] = w[(kk * c_in + c) * c_out + o];
                }
            }
        }
        wino.set_weights(&w, &w_back);

        // y unpooled; then pooled into rows with one pad row around each sample's t / 2, bit
        // for bit what the separate pass computes from y (a pooled pass need not write y).
        let mut y = vec![0.0; (b + 1) * seg * c_out];
        let buffers = (&mut wino.v, &mut wino.prod);
        correlate(&wino.tf, conv, b, [c_in, c_out], 0, &x, &wino.u, buffers, (&mut y, None));
        let (pseg, mut pooled) = (t / 2 + 2, vec![f32::NAN; (b + 1) * (t / 2 + 2) * c_out]);
        let mut route = vec![0xa5; (b + 1) * t / 2 * route_bytes(c_out)];
        let mut scratch = vec![0.0; y.len()];
        wino.forward(conv, b, &x, &mut scratch, Pooled { out: &mut pooled, seg: pseg, pad: 1, route: &mut route });
        let (mut want_pooled, mut want_route) = (vec![f32::NAN; pooled.len()], vec![0xa5; route.len()]);
        let want = Pooled { out: &mut want_pooled, seg: pseg, pad: 1, route: &mut want_route };
        crate::model::native::pool::pool_relu(&y, conv, b, want);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&pooled) == bits(&want_pooled), "pooled in the output pass ({isa:?})");
        assert!(route == want_route, "route in the output pass ({isa:?})");
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for r in (0..b * seg).filter(|&r| valid(r)) {
            for o in 0..c_out {
                got.push(y[r * c_out + o]);
                want.push((0..k * c_in).map(|i| x[r * c_in + i] as f64 * w[i * c_out + o] as f64).sum::<f64>());
            }
        }
        assert!(relative_error(&got, &want) < 1e-5, "forward: {}", relative_error(&got, &want));

        let mut dx = vec![0.0; (b + 1) * seg * c_in];
        wino.input_grad(conv, b, &dy, &mut dx);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for q in (0..b * seg).filter(|&q| valid(q + seg - pad)) {
            for c in 0..c_in {
                got.push(dx[q * c_in + c]);
                want.push(
                    (0..k * c_out).map(|i| dy[q * c_out + i] as f64 * w_back[i * c_in + c] as f64).sum::<f64>(),
                );
            }
        }
        assert!(relative_error(&got, &want) < 1e-5, "input gradient: {}", relative_error(&got, &want));

        let mut dw = values(k * c_in * c_out, 4);
        let before = dw.clone();
        wino.weight_grad(conv, b, &dy, &mut dw, true);
        let want: Vec<f64> = (0..k * c_in * c_out)
            .map(|i| {
                let (row, o) = (i / c_out, i % c_out);
                let sum: f64 = (0..b * seg - 2 * pad)
                    .map(|r| x[r * c_in + row] as f64 * dy[(2 * pad + r) * c_out + o] as f64)
                    .sum();
                before[i] as f64 + sum
            })
            .collect();
        assert!(relative_error(&dw, &want) < 1e-5, "weight gradient: {}", relative_error(&dw, &want));
        [y, dx, dw].iter().flat_map(|v| bits(v)).collect()
    }
}
