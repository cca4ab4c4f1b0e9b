//! The paper's one loss for every method, L(x) = (f(x) - s*)^2, and its input gradient for
//! many (signal, member) pairs at once through the packed network.

use crate::model::native::host::{cpu_slice, Kernels};
use crate::model::native::Workspace;
use crate::model::PackedCnn;
use std::cell::{Cell, RefCell};
use tch::{Kind, Tensor};

pub struct Objective<'a> {
    pub model: &'a PackedCnn,
    pub target: f64,
    /// Most rows (inputs x members) in one forward/backward: larger inputs are evaluated in
    /// pieces, so an iterative method can hand over every pair still descending and each
    /// piece stays full as pairs converge.
    max_rows: usize,
    /// The hand-written CPU kernels, where they compute the network instead of libtorch.
    native: Option<RefCell<Native>>,
    /// Most rows one forward/backward has taken so far, for the explain summary: `max_rows`,
    /// or the pack's size where that is more (a piece holds a signal for every member).
    peak_rows: Cell<usize>,
}

/// Signals per pass of the hand-written kernels: 16 explained 12 members 1.2x faster than 32 and
/// 1.1x faster than 8 (three alternating rounds each, docs/BENCHMARKS.md).
const NATIVE_BATCH: usize = 16;

impl<'a> Objective<'a> {
    pub fn new(model: &'a PackedCnn, target: f64) -> Objective<'a> {
        Objective { model, target, max_rows: usize::MAX, native: None, peak_rows: Cell::new(0) }
    }

    /// Computes with the hand-written kernels where `kernels` says so for the model's device.
    pub fn with_kernels(self, kernels: Kernels) -> Objective<'a> {
        let native = kernels.native_on(self.model.flat.device()).then(|| RefCell::new(Native::new(self.model)));
        Objective { native, ..self }
    }

    pub fn with_max_rows(self, max_rows: usize) -> Objective<'a> {
        Objective { max_rows: max_rows.max(1), ..self }
    }

    /// x: [N, P, dims, T], row n of member p being one input of member p.
    /// Returns (L [N, P], dL/dx [N, P, dims, T]) without touching the model's gradient.
    pub fn loss_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        if let Some(native) = &self.native {
            let (loss, grad) = native.borrow_mut().evaluate(x, self.target as f32, self.native_batch(x), true);
            return (loss, grad.expect("asked for the gradient"));
        }
        let parts: Vec<(Tensor, Tensor)> = self.pieces(x).iter().map(|piece| self.piece_loss_and_grad(piece)).collect();
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one piece");
        }
        let (losses, grads): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
        (Tensor::cat(&losses, 0), Tensor::cat(&grads, 0))
    }

    /// L only, without building a graph.
    pub fn loss(&self, x: &Tensor) -> Tensor {
        if let Some(native) = &self.native {
            return native.borrow_mut().evaluate(x, self.target as f32, self.native_batch(x), false).0;
        }
        let losses: Vec<Tensor> = self.pieces(x).iter().map(|piece| tch::no_grad(|| self.piece_loss(piece))).collect();
        Tensor::cat(&losses, 0)
    }

    /// Most rows one forward/backward has taken so far.
    pub fn peak_rows(&self) -> usize {
        self.peak_rows.get()
    }

    fn note_rows(&self, rows: i64) {
        self.peak_rows.set(self.peak_rows.get().max(rows as usize));
    }

    /// Signals per pass of the hand-written kernels: `NATIVE_BATCH`, fewer where `max_rows`
    /// asks (`--max-batch 1` is the benchmark's one-signal-at-a-time loop). A pass takes one
    /// member's rows.
    fn native_batch(&self, x: &Tensor) -> usize {
        let batch = NATIVE_BATCH.min(self.max_rows / x.size()[1].max(1) as usize).max(1);
        self.note_rows(x.size()[0].min(batch as i64));
        batch
    }

    /// x cut along its first axis into pieces of at most `max_rows` rows.
    fn pieces(&self, x: &Tensor) -> Vec<Tensor> {
        let (n, p) = (x.size()[0], x.size()[1]);
        // Any `max_rows` the user gives (up to usize::MAX) must stay positive as an i64.
        let per = (i64::try_from(self.max_rows).unwrap_or(i64::MAX) / p.max(1)).max(1);
        self.note_rows(per.min(n) * p);
        if n <= per {
            return vec![x.shallow_clone()];
        }
        (0..n).step_by(per as usize).map(|start| x.narrow(0, start, per.min(n - start))).collect()
    }

    fn piece_loss(&self, x: &Tensor) -> Tensor {
        let (n, p, d, t) = x.size4().expect("[N, P, dims, T]");
        // [N, P, dims, T] -> [N, P*dims, T], the packed convolution's layout: a view.
        let scores = self.model.forward(&x.view([n, p * d, t]), None); // [P, N]
        (scores - self.target).square().transpose(0, 1) // [N, P]
    }

    fn piece_loss_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        let x = x.detach().set_requires_grad(true);
        let loss = self.piece_loss(&x);
        // Pairs are independent (no batch statistics), so the gradient of the sum is each
        // pair's own gradient.
        let grad = Tensor::run_backward(&[loss.sum(Kind::Float)], &[&x], false, false).pop().expect("one input");
        (loss.detach(), grad)
    }
}

/// A workspace and every member's parameters, gathered once (they do not change while
/// explaining).
struct Native {
    workspace: Workspace,
    members: Vec<Vec<f32>>,
    /// The member whose weights the workspace holds.
    loaded: Option<usize>,
}

impl Native {
    fn new(model: &PackedCnn) -> Native {
        let flat = model.flat.detach();
        let members =
            (0..model.members).map(|m| Vec::try_from(&model.member_vector(&flat, m)).expect("f32 weights")).collect();
        Native { workspace: Workspace::new(&model.arch, NATIVE_BATCH), members, loaded: None }
    }

    /// L [N, P] and, when asked, dL/dx [N, P, dims, T] of x [N, P, dims, T] on the CPU.
    fn evaluate(&mut self, x: &Tensor, target: f32, batch: usize, with_grad: bool) -> (Tensor, Option<Tensor>) {
        let (n, p, d, t) = x.size4().expect("[N, P, dims, T]");
        let x = x.detach().contiguous();
        let inputs = cpu_slice(&x);
        let pairs = (n * p) as usize;
        let mut losses = vec![0f32; pairs];
        let mut grads = vec![0f32; if with_grad { inputs.len() } else { 0 }];
        for member in 0..p as usize {
            if self.loaded != Some(member) {
                self.workspace.set_params(&self.members[member]);
                self.loaded = Some(member);
            }
            // Pair (i, member) is input row i * P + member.
            let rows: Vec<i64> = (0..n).map(|i| i * p + member as i64).collect();
            for chunk in rows.chunks(batch) {
                if with_grad {
                    self.workspace.input_grad(inputs, chunk, target, &mut losses, &mut grads);
                } else {
                    let scores = self.workspace.forward(inputs, chunk, None);
                    for (&score, &row) in scores.iter().zip(chunk) {
                        losses[row as usize] = (score - target) * (score - target);
                    }
                }
            }
        }
        let loss = Tensor::from_slice(&losses).view([n, p]);
        (loss, with_grad.then(|| Tensor::from_slice(&grads).view([n, p, d, t])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Sources};
    use crate::model::{init, Architecture};
    use tch::Device;

    #[test]
    fn pieces_give_what_one_batch_gives() {
        let config = Config::load(&Sources { preset: "quick".into(), ..Default::default() }).unwrap();
        let arch = Architecture::new(&config.model, config.data.dims, config.data.length);
        let weights: Vec<Tensor> = (0..2).map(|m| init::member_weights(&arch, 5 + m)).collect();
        let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
        let x = Tensor::randn([7, 2, arch.dims, arch.length], (Kind::Float, Device::Cpu));
        let whole = Objective::new(&model, 10.0);
        let pieces = Objective::new(&model, 10.0).with_max_rows(6); // 3 signals x 2 members a piece
        assert_eq!(pieces.pieces(&x).len(), 3);
        let ((l1, g1), (l2, g2)) = (whole.loss_and_grad(&x), pieces.loss_and_grad(&x));
        assert_eq!((whole.peak_rows(), pieces.peak_rows()), (14, 6));
        for (a, b) in [(&l1, &l2), (&g1, &g2), (&whole.loss(&x), &pieces.loss(&x))] {
            assert_eq!(a.size(), b.size());
            assert!(f64::try_from((a - b).abs().max()).unwrap() < 1e-5);
        }
    }

    /// The hand-written kernels give the loss and input gradient libtorch's autograd gives, to
    /// f32's precision: scores near 10 carry its 1e-6 spacing, so the losses agree as |f - 10|;
    /// the gradients agree entry by entry except where max-pooling met a near tie, which
    /// rounding (Winograd's, in the wide layers) can break either way, an equally valid
    /// subgradient that moves a few dozen entries (at most 0.2% of them here).
    #[test]
    fn native_kernels_give_what_autograd_gives() {
        for preset in ["paper", "quick"] {
            let config = Config::load(&Sources { preset: preset.into(), ..Default::default() }).unwrap();
            let arch = Architecture::new(&config.model, config.data.dims, config.data.length);
            let weights: Vec<Tensor> = (0..2).map(|m| init::member_weights(&arch, 40 + m)).collect();
            let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
            let x = init::normal(&[37, 2, arch.dims, arch.length], 5);
            let torch = Objective::new(&model, 10.0).with_kernels(Kernels::Libtorch);
            let (l1, g1) = torch.loss_and_grad(&x);
            // Whole passes of 32 signals and a short one; passes of 2 signals (4 rows).
            for max_rows in [usize::MAX, 4] {
                let native = Objective::new(&model, 10.0).with_max_rows(max_rows).with_kernels(Kernels::Native);
                assert!(native.native.is_some() && torch.native.is_none());
                let (l2, g2) = native.loss_and_grad(&x);
                assert_eq!(native.peak_rows(), if max_rows == 4 { 2 } else { 16 }, "one member's signals a pass");
                for (want, got) in [(&l1, &l2), (&torch.loss(&x), &native.loss(&x))] {
                    assert_eq!(want.size(), got.size());
                    let diff = f64::try_from((want.sqrt() - got.sqrt()).abs().max()).unwrap();
                    assert!(diff <= 1e-5, "{preset}, {max_rows} rows: |f - 10| differs by {diff}");
                }
                assert_eq!(g1.size(), g2.size());
                let scale = f64::try_from(g1.abs().max()).unwrap();
                let off = i64::try_from((&g1 - &g2).abs().gt(1e-4 * scale).sum(Kind::Int64)).unwrap();
                let few = off as f64 <= 2e-3 * g1.numel() as f64;
                assert!(few, "{preset}, {max_rows} rows: {off} gradient entries differ");
            }
        }
    }
}
