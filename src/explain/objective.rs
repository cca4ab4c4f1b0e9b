//! The paper's one loss for every method, L(x) = (f(x) - s*)^2, and its input gradient for
//! many (signal, member) pairs at once through the packed network.

use crate::model::PackedCnn;
use tch::{Kind, Tensor};

pub struct Objective<'a> {
    pub model: &'a PackedCnn,
    pub target: f64,
}

impl Objective<'_> {
    /// x: [N, P, dims, T], row n of member p being one input of member p.
    /// Returns (L [N, P], dL/dx [N, P, dims, T]) without touching the model's gradient.
    pub fn loss_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (n, p, d, t) = x.size4().expect("[N, P, dims, T]");
        let x = x.detach().set_requires_grad(true);
        // [N, P, dims, T] -> [N, P*dims, T], the packed convolution's layout: a view.
        let scores = self.model.forward(&x.view([n, p * d, t]), None); // [P, N]
        let loss = (scores - self.target).square().transpose(0, 1); // [N, P]
        // Pairs are independent (no batch statistics), so the gradient of the sum is each
        // pair's own gradient.
        let grad = Tensor::run_backward(&[loss.sum(Kind::Float)], &[&x], false, false)
            .pop()
            .expect("one input");
        (loss.detach(), grad)
    }

    /// L only, without building a graph.
    pub fn loss(&self, x: &Tensor) -> Tensor {
        let (n, p, d, t) = x.size4().expect("[N, P, dims, T]");
        tch::no_grad(|| (self.model.forward(&x.view([n, p * d, t]), None) - self.target).square().transpose(0, 1))
    }
}
