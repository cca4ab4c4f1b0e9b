//! The paper's one loss for every method, L(x) = (f(x) - s*)^2, and its input gradient for
//! many (signal, member) pairs at once through the packed network.

use crate::model::PackedCnn;
use tch::{Kind, Tensor};

pub struct Objective<'a> {
    pub model: &'a PackedCnn,
    pub target: f64,
    /// Most rows (inputs x members) in one forward/backward: larger inputs are evaluated in
    /// pieces, so an iterative method can hand over every pair still descending and each
    /// piece stays full as pairs converge.
    max_rows: usize,
}

impl<'a> Objective<'a> {
    pub fn new(model: &'a PackedCnn, target: f64) -> Objective<'a> {
        Objective { model, target, max_rows: usize::MAX }
    }

    pub fn with_max_rows(self, max_rows: usize) -> Objective<'a> {
        Objective { max_rows: max_rows.max(1), ..self }
    }

    /// x: [N, P, dims, T], row n of member p being one input of member p.
    /// Returns (L [N, P], dL/dx [N, P, dims, T]) without touching the model's gradient.
    pub fn loss_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        let parts: Vec<(Tensor, Tensor)> = self.pieces(x).iter().map(|piece| self.piece_loss_and_grad(piece)).collect();
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one piece");
        }
        let (losses, grads): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
        (Tensor::cat(&losses, 0), Tensor::cat(&grads, 0))
    }

    /// L only, without building a graph.
    pub fn loss(&self, x: &Tensor) -> Tensor {
        let losses: Vec<Tensor> = self.pieces(x).iter().map(|piece| tch::no_grad(|| self.piece_loss(piece))).collect();
        Tensor::cat(&losses, 0)
    }

    /// x cut along its first axis into pieces of at most `max_rows` rows.
    fn pieces(&self, x: &Tensor) -> Vec<Tensor> {
        let (n, p) = (x.size()[0], x.size()[1]);
        let per = (self.max_rows as i64 / p.max(1)).max(1);
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
        let grad = Tensor::run_backward(&[loss.sum(Kind::Float)], &[&x], false, false)
            .pop()
            .expect("one input");
        (loss.detach(), grad)
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
        for (a, b) in [(&l1, &l2), (&g1, &g2), (&whole.loss(&x), &pieces.loss(&x))] {
            assert_eq!(a.size(), b.size());
            assert!(f64::try_from((a - b).abs().max()).unwrap() < 1e-5);
        }
    }
}
