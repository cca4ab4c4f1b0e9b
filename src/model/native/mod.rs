//! The network written out by hand for the CPU: forward, loss and backward of one member over
//! a batch, to the weights (a training step) or to the input (explain's objective), with every
//! buffer allocated once. libtorch's CPU kernels spend
//! most of a step of this small network outside arithmetic (reorders, pooling with indices,
//! allocation, dispatch); here each convolution is one strided matrix product over
//! channels-last rows (`gemm`), or for the wide layers Winograd's F(4, 5) (`winograd`, 2.5x
//! fewer operations), pooling and ReLU are one pass that keeps two bits per value for the
//! backward pass (`pool`, instead of libtorch's indices), and nothing is allocated per step.
//!
//! Layout: a layer's input holds each sample as `t + 2 * pad` rows of `c_in` floats (the pad
//! rows stay zero), samples back to back. The product runs over all rows at once; the
//! `2 * pad` rows that straddle two samples compute values nobody reads, and their gradient
//! rows stay zero, so they add nothing to the weight gradient.
//!
//! The same numbers as `PackedCnn::forward` + autograd up to float rounding (a unit test checks
//! the gradient), and deterministic: a member's result does not depend on its pack.

pub mod gemm;
pub mod host;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod pool;
#[cfg(test)]
mod tests;
mod winograd;

use super::Architecture;
use gemm::{gemm, Strided};
use pool::{pool_relu, pool_relu_backward, route_bytes, Pooled};
use winograd::Winograd;

/// One convolution layer's geometry (input length `t`, same padding).
#[derive(Debug, Clone, Copy)]
struct Conv {
    c_in: usize,
    c_out: usize,
    t: usize,
    k: usize,
    pad: usize,
}

impl Conv {
    /// Rows per sample in the padded input.
    fn seg(&self) -> usize {
        self.t + 2 * self.pad
    }

    /// Output rows computed for `b` samples: every window that fits in the padded input.
    fn rows(&self, b: usize) -> usize {
        b * self.seg() - 2 * self.pad
    }

    /// Whether the input gradient goes through the unfolded gradient (`Layer::cols`): with
    /// fewer than 16 input channels the flipped product would leave most of each register tile
    /// empty (the first layer's 2 channels leave 14 of 16 lanes idle).
    fn narrow(&self) -> bool {
        self.c_in < 16
    }

    /// A narrow layer's unfolded row, `k * c_in` floats padded to whole register tiles: a
    /// product whose columns end inside a tile goes through the edge tiles, slower than
    /// computing the padding (the first layer's 10 columns: 10.5-14 GFLOP/s at the edge, 35
    /// padded, counting only the 10).
    fn cols_width(&self) -> usize {
        (self.k * self.c_in).next_multiple_of(gemm::NR)
    }
}

/// A convolution layer's buffers.
struct Layer {
    conv: Conv,
    /// Padded input [capacity * seg, c_in].
    x: Vec<f32>,
    /// Output before pooling [rows, c_out], read by the pooling pass only: Winograd's vector
    /// passes pool in registers and leave it unwritten (the backward pass reads `route`).
    y: Vec<f32>,
    /// Which row of each pooled pair gets its gradient [capacity * t / 2, route_bytes(c_out)].
    route: Vec<u8>,
    /// Output gradient with `2 * pad` zero rows before (and room after) it, so the input
    /// gradient is again one product over overlapping rows: [capacity * seg + 2 * pad, c_out].
    dy: Vec<f32>,
    /// Input gradient [capacity * seg, c_in] (the first layer's only for explain).
    dx: Vec<f32>,
    /// Weights as the product's right operand, row (k * c_in + c), column o.
    w: Vec<f32>,
    /// The weights dx is computed with: flipped in time and transposed, row (k * c_out + o),
    /// column c; for a narrow layer transposed, row o, column (k * c_in + c) of `cols_width`.
    w_back: Vec<f32>,
    /// A narrow layer's unfolded input gradient [rows, cols_width] (empty otherwise).
    cols: Vec<f32>,
    /// Weight gradient in the layout of `w`.
    dw: Vec<f32>,
    /// A wide layer's Winograd buffers: then its three products go through them.
    wino: Option<Winograd>,
}

/// What a backward pass is for: training (the weights' gradient, added to the last one's with
/// `accumulate`) or explain (the input's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Weights { accumulate: bool },
    Input,
}

/// Everything one member's step needs, sized for batches of up to `capacity` samples.
pub struct Workspace {
    arch: Architecture,
    capacity: usize,
    layers: Vec<Layer>,
    features: usize,
    hidden: usize,
    /// The member's parameters, `arch.params` order. Only the fully connected ones are kept
    /// current: the convolutions compute from their own layouts in `layers`.
    params: Vec<f32>,
    /// The last layer's pooled output [capacity, t, c] (time-major) and its gradient; `feat_t`
    /// holds the same values as [c, t, samples]: features in the single network's flatten order
    /// (channel-major), samples innermost. fc1's three products then read every operand along
    /// rows at most `capacity` floats apart: with samples outermost, rows `features` floats
    /// (2 KB) apart fell into two L1 sets and ran at a third of the speed.
    last: Vec<f32>,
    dlast: Vec<f32>,
    feat_t: Vec<f32>,
    h: Vec<f32>,
    z: Vec<f32>,
    dh: Vec<f32>,
    /// dh as [hidden, samples]: the right operand of the product that gives `dfeat_t`.
    dh_t: Vec<f32>,
    dfeat_t: Vec<f32>,
    scores: Vec<f32>,
    /// The gradient of the last `train_step`, `arch.params` order.
    pub grad: Vec<f32>,
}

impl Workspace {
    pub fn new(arch: &Architecture, capacity: usize) -> Workspace {
        let k = arch.kernel as usize;
        let pad = k / 2;
        let mut t = arch.length as usize;
        let mut c_in = arch.dims as usize;
        let mut layers = Vec::new();
        for &c_out in &arch.channels {
            let conv = Conv { c_in, c_out: c_out as usize, t, k, pad };
            let rows = capacity * conv.seg();
            layers.push(Layer {
                conv,
                x: vec![0.0; rows * c_in],
                y: vec![0.0; conv.rows(capacity) * conv.c_out],
                route: vec![0; capacity * t / 2 * route_bytes(conv.c_out)],
                dy: vec![0.0; (rows + 2 * pad) * conv.c_out],
                dx: vec![0.0; rows * c_in],
                w: vec![0.0; k * c_in * conv.c_out],
                w_back: vec![0.0; conv.c_out * if conv.narrow() { conv.cols_width() } else { k * c_in }],
                cols: if conv.narrow() { vec![0.0; conv.rows(capacity) * conv.cols_width()] } else { Vec::new() },
                dw: vec![0.0; k * c_in * conv.c_out],
                wino: if conv.narrow() { None } else { Winograd::new(conv, capacity) },
            });
            c_in = conv.c_out;
            t /= 2;
        }
        let features = c_in * t;
        let hidden = arch.hidden as usize;
        Workspace {
            arch: arch.clone(),
            capacity,
            layers,
            features,
            hidden,
            params: vec![0.0; arch.numel() as usize],
            last: vec![0.0; capacity * features],
            dlast: vec![0.0; capacity * features],
            feat_t: vec![0.0; capacity * features],
            h: vec![0.0; capacity * hidden],
            z: vec![0.0; capacity * hidden],
            dh: vec![0.0; capacity * hidden],
            dh_t: vec![0.0; capacity * hidden],
            dfeat_t: vec![0.0; capacity * features],
            scores: vec![0.0; capacity],
            grad: vec![0.0; arch.numel() as usize],
        }
    }

    /// The member's parameters (`arch.params` order) become the weights of the next steps.
    pub fn set_params(&mut self, params: &[f32]) {
        let parts: Vec<&[f32]> = self.arch.params.iter().map(|spec| &params[spec.member_range()]).collect();
        self.set_param_parts(&parts)
    }

    /// `set_params` from one slice per parameter, where a pack's buffers hold the member's.
    pub fn set_param_parts(&mut self, parts: &[&[f32]]) {
        assert_eq!(parts.len(), self.arch.params.len(), "one slice per parameter");
        for (spec, part) in self.arch.params.iter().zip(parts).skip(self.layers.len()) {
            self.params[spec.member_range()].copy_from_slice(part);
        }
        for (layer, w) in self.layers.iter_mut().zip(parts) {
            let Conv { c_in, c_out, k, .. } = layer.conv;
            for o in 0..c_out {
                for c in 0..c_in {
                    for kk in 0..k {
                        let v = w[(o * c_in + c) * k + kk];
                        layer.w[(kk * c_in + c) * c_out + o] = v;
                        let back = if layer.conv.narrow() {
                            o * layer.conv.cols_width() + kk * c_in + c
                        } else {
                            ((k - 1 - kk) * c_out + o) * c_in + c
                        };
                        layer.w_back[back] = v;
                    }
                }
            }
            if let Some(wino) = &mut layer.wino {
                wino.set_weights(&layer.w, &layer.w_back);
            }
        }
    }

    /// Scores of `samples` (indices into `bank`, laid out [n, dims, length]); `masks`
    /// [samples, hidden] are the dropout masks (scaled), None in evaluation.
    pub fn forward(&mut self, bank: &[f32], samples: &[i64], masks: Option<&[f32]>) -> &[f32] {
        let b = samples.len();
        assert!(b <= self.capacity, "batch of {b} over the workspace's {}", self.capacity);
        self.load_inputs(bank, samples);
        let last = self.layers.len() - 1;
        for l in 0..=last {
            let (lo, hi) = self.layers.split_at_mut(l + 1);
            let layer = &mut lo[l];
            let Conv { c_in, c_out, k, .. } = layer.conv;
            let route = &mut layer.route;
            let pooled = match hi.first_mut() {
                Some(next) => Pooled { seg: next.conv.seg(), pad: next.conv.pad, out: &mut next.x, route },
                None => Pooled { seg: layer.conv.t / 2, pad: 0, out: &mut self.last, route },
            };
            match &mut layer.wino {
                Some(wino) => wino.forward(layer.conv, b, &layer.x, &mut layer.y, pooled),
                None => {
                    let (x, w) = (Strided::rows(&layer.x, 0, c_in), Strided::rows(&layer.w, 0, c_out));
                    gemm(layer.conv.rows(b), c_out, k * c_in, x, w, &mut layer.y, 0, c_out, false);
                    pool_relu(&layer.y, layer.conv, b, pooled);
                }
            }
        }
        let (f, c_last) = (self.features, self.layers[last].conv.c_out);
        reverse_axes(&self.last, &mut self.feat_t, [b, f / c_last, c_last]);
        let hd = self.hidden;
        gemm(
            b,
            hd,
            f,
            Strided { data: &self.feat_t, offset: 0, rs: 1, cs: b },
            Strided::rows(param(&self.arch, &self.params, 4), 0, hd),
            &mut self.h,
            0,
            hd,
            false,
        );
        let fc2 = param(&self.arch, &self.params, 5);
        let offset = self.arch.score_offset as f32;
        for s in 0..b {
            let mut score = 0.0f32;
            for j in 0..hd {
                let h = self.h[s * hd + j];
                let mut z = relu(h);
                if let Some(m) = masks {
                    z *= m[s * hd + j];
                }
                self.z[s * hd + j] = z;
                score += z * fc2[j];
            }
            self.scores[s] = score + offset;
        }
        &self.scores[..b]
    }

    /// One step's loss and gradient: forward with dropout, then backward of the batch's mean
    /// squared error into `self.grad`. Returns the batch's sum of squared errors.
    /// The batch goes through in slices of `capacity` samples, forward and backward each, their
    /// weight gradients summed: a slice's activations stay in cache where a whole batch's
    /// would not.
    pub fn train_step(&mut self, bank: &[f32], samples: &[i64], targets: &[f32], masks: &[f32]) -> f64 {
        let (b, hd) = (samples.len(), self.hidden);
        let mut sse = 0.0f64;
        for (i, start) in (0..b).step_by(self.capacity).enumerate() {
            let len = self.capacity.min(b - start);
            let slice_masks = &masks[start * hd..(start + len) * hd];
            self.forward(bank, &samples[start..start + len], Some(slice_masks));
            // d(mean of err^2)/d score = 2 err / b; kept in `scores` (the forward's are used up).
            for s in 0..len {
                let err = self.scores[s] - targets[start + s];
                sse += (err as f64) * (err as f64);
                self.scores[s] = 2.0 * err / b as f32;
            }
            self.backward(len, Some(slice_masks), Wanted::Weights { accumulate: i > 0 });
        }
        sse
    }

    /// Explain's objective, L = (f(x) - target)^2 without dropout, and its input gradient, for
    /// `samples` of `inputs` ([n, dims, length]); sample i's loss and gradient are written to
    /// `losses[i]` and `grads[i]` (laid out like `inputs`).
    pub fn input_grad(&mut self, inputs: &[f32], samples: &[i64], target: f32, losses: &mut [f32], grads: &mut [f32]) {
        let b = samples.len();
        self.forward(inputs, samples, None);
        for s in 0..b {
            let err = self.scores[s] - target;
            losses[samples[s] as usize] = err * err;
            self.scores[s] = 2.0 * err;
        }
        self.backward(b, None, Wanted::Input);
        let first = &self.layers[0];
        let Conv { c_in: dims, t, pad, .. } = first.conv;
        for (s, &sample) in samples.iter().enumerate() {
            let src = &first.dx[(s * first.conv.seg() + pad) * dims..][..t * dims];
            transpose(src, &mut grads[sample as usize * dims * t..][..dims * t], t, dims);
        }
    }

    /// Back from d(loss)/d(score) of the `b` samples (in `scores`) to the weights' gradient
    /// (`grad`) or to the first layer's input (`layers[0].dx`).
    fn backward(&mut self, b: usize, masks: Option<&[f32]>, wanted: Wanted) {
        let hd = self.hidden;
        let (weights, accumulate) = match wanted {
            Wanted::Weights { accumulate } => (true, accumulate),
            Wanted::Input => (false, false),
        };
        let fc2 = self.arch.params[5].member_range().start;
        if weights {
            for j in 0..hd {
                let g: f32 = (0..b).map(|s| self.z[s * hd + j] * self.scores[s]).sum();
                self.grad[fc2 + j] = if accumulate { self.grad[fc2 + j] + g } else { g };
            }
        }
        for s in 0..b {
            for j in 0..hd {
                let i = s * hd + j;
                let kept = masks.map_or(1.0, |m| m[i]);
                self.dh[i] = if self.h[i] > 0.0 { self.scores[s] * self.params[fc2 + j] * kept } else { 0.0 };
            }
        }
        let f = self.features;
        if weights {
            let fc1 = self.arch.params[4].member_range().start;
            let (feat_t, dh) = (Strided::rows(&self.feat_t, 0, b), Strided::rows(&self.dh, 0, hd));
            gemm(f, hd, b, feat_t, dh, &mut self.grad, fc1, hd, accumulate);
        }
        transpose(&self.dh[..b * hd], &mut self.dh_t[..b * hd], b, hd);
        let (fc1, dh_t) = (Strided::rows(param(&self.arch, &self.params, 4), 0, hd), Strided::rows(&self.dh_t, 0, b));
        gemm(f, b, hd, fc1, dh_t, &mut self.dfeat_t, 0, b, false);
        let c_last = self.layers[self.layers.len() - 1].conv.c_out;
        reverse_axes(&self.dfeat_t, &mut self.dlast, [c_last, f / c_last, b]);

        for l in (0..self.layers.len()).rev() {
            let (lo, hi) = self.layers.split_at_mut(l + 1);
            let layer = &mut lo[l];
            let grad = match hi.first() {
                Some(next) => (&next.dx[..], next.conv.seg(), next.conv.pad),
                None => (&self.dlast[..], layer.conv.t / 2, 0),
            };
            pool_relu_backward(layer.conv, b, &layer.route, grad, &mut layer.dy);
            let Conv { c_in, c_out, k, pad, .. } = layer.conv;
            // Training needs no gradient for the network's input.
            if l > 0 || !weights {
                if layer.conv.narrow() {
                    let (rows, width) = (layer.conv.rows(b), layer.conv.cols_width());
                    let dy = Strided { data: &layer.dy, offset: 2 * pad * c_out, rs: c_out, cs: 1 };
                    let w_back = Strided::rows(&layer.w_back, 0, width);
                    gemm(rows, width, c_out, dy, w_back, &mut layer.cols, 0, width, false);
                    fold_windows(&layer.cols, layer.conv, b, &mut layer.dx);
                } else if let Some(wino) = &mut layer.wino {
                    wino.input_grad(layer.conv, b, &layer.dy, &mut layer.dx);
                } else {
                    // Window q of the zero-led dy holds the rows dx[q] draws from.
                    let (dy, w_back) = (Strided::rows(&layer.dy, 0, c_out), Strided::rows(&layer.w_back, 0, c_in));
                    gemm(b * layer.conv.seg(), c_in, k * c_out, dy, w_back, &mut layer.dx, 0, c_in, false);
                }
            }
            if !weights {
                continue;
            }
            if let Some(wino) = &mut layer.wino {
                wino.weight_grad(layer.conv, b, &layer.dy, &mut layer.dw, accumulate);
            } else {
                let x_t = Strided { data: &layer.x, offset: 0, rs: 1, cs: c_in };
                let dy = Strided { data: &layer.dy, offset: 2 * pad * c_out, rs: c_out, cs: 1 };
                gemm(k * c_in, c_out, layer.conv.rows(b), x_t, dy, &mut layer.dw, 0, c_out, accumulate);
            }
            let g = &mut self.grad[self.arch.params[l].member_range()];
            for o in 0..c_out {
                for c in 0..c_in {
                    for kk in 0..k {
                        g[(o * c_in + c) * k + kk] = layer.dw[(kk * c_in + c) * c_out + o];
                    }
                }
            }
        }
    }

    /// Copies the samples into the first layer's padded rows (channels innermost).
    fn load_inputs(&mut self, bank: &[f32], samples: &[i64]) {
        let first = &mut self.layers[0];
        let Conv { c_in: dims, t, pad, .. } = first.conv;
        let seg = first.conv.seg();
        for (s, &sample) in samples.iter().enumerate() {
            let src = &bank[sample as usize * dims * t..][..dims * t];
            transpose(src, &mut first.x[(s * seg + pad) * dims..][..t * dims], dims, t);
        }
    }
}

/// Parameter `index` of a member's vector.
fn param<'a>(arch: &Architecture, params: &'a [f32], index: usize) -> &'a [f32] {
    &params[arch.params[index].member_range()]
}

/// ReLU that keeps NaN (a diverged member must show a NaN loss, not a clean zero).
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// dx of a narrow layer from its unfolded gradient: output row r's window adds its part kk
/// into input row r + kk, one pass over dx per kk, so each input row sums its windows in kk
/// order (as the per-row loops before it did) and a pass's adds are independent. (Row by row,
/// each window's add into rows the last one had just written stalled on the partly overlapping
/// stores: 6% of explain; per input row, the loop over its windows was 6% too.)
fn fold_windows(cols: &[f32], conv: Conv, b: usize, dx: &mut [f32]) {
    let (c_in, width, rows) = (conv.c_in, conv.cols_width(), conv.rows(b));
    let dx = &mut dx[..b * conv.seg() * c_in];
    dx.fill(0.0);
    for kk in 0..conv.k {
        let (src, dst) = (&cols[kk * c_in..], &mut dx[kk * c_in..]);
        // The signals' few channels as a constant where they are few: the loop over them then
        // unrolls (`fold_pass` is inlined into each arm).
        match c_in {
            1 => fold_pass(src, width, rows, dst, 1),
            2 => fold_pass(src, width, rows, dst, 2),
            3 => fold_pass(src, width, rows, dst, 3),
            4 => fold_pass(src, width, rows, dst, 4),
            _ => fold_pass(src, width, rows, dst, c_in),
        }
    }
}

/// Row r of `dst` (`c` floats) += the first `c` floats of row r of `src` (`width` floats a row).
#[inline(always)]
fn fold_pass(src: &[f32], width: usize, rows: usize, dst: &mut [f32], c: usize) {
    for (out, from) in dst.chunks_exact_mut(c).zip(src.chunks(width)).take(rows) {
        out.iter_mut().zip(&from[..c]).for_each(|(o, &v)| *o += v);
    }
}

/// `src` [d0, d1, d2] into `dst` [d2, d1, d0]; its own inverse with the dimensions reversed.
fn reverse_axes(src: &[f32], dst: &mut [f32], [d0, d1, d2]: [usize; 3]) {
    for i in 0..d0 {
        for j in 0..d1 {
            for (k, &v) in src[(i * d1 + j) * d2..][..d2].iter().enumerate() {
                dst[(k * d1 + j) * d0 + i] = v;
            }
        }
    }
}

/// `src` [rows, cols] into `dst` [cols, rows].
fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}
