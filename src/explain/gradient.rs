//! The one-step methods: `saliency`, the plain input gradient dL/dx (Simonyan et al., the
//! paper's equation 1), and `ig`, integrated gradients of L from the zero baseline.

use super::noise::PairIds;
use super::objective::Objective;
use super::{Method, Output};
use anyhow::Result;
use tch::{Kind, Tensor};

pub struct Saliency;

impl Method for Saliency {
    fn name(&self) -> &'static str {
        "saliency"
    }
    fn rows_per_pair(&self) -> usize {
        1
    }
    fn attribute(&self, objective: &Objective, x0: &Tensor, _: &PairIds) -> Result<Output> {
        // dL/dx points where the input must move to raise L, i.e. along the perturbation.
        let (_, grad) = objective.loss_and_grad(x0);
        Ok(Output::plain(grad))
    }
}

/// Integrated gradients with `steps` intervals (steps + 1 points, trapezoid rule):
///   A = (x - 0) * sum_k w_k dL/dx(a_k x),  a_k = k / steps,  w_0 = w_m = 1/(2m), else 1/m.
/// Completeness: sum(A) ~ L(x) - L(0); the gap per pair is reported.
pub struct IntegratedGradients {
    pub steps: usize,
}

impl Method for IntegratedGradients {
    fn name(&self) -> &'static str {
        "ig"
    }
    fn rows_per_pair(&self) -> usize {
        self.steps + 1
    }
    fn attribute(&self, objective: &Objective, x0: &Tensor, _: &PairIds) -> Result<Output> {
        let (s, p, d, t) = x0.size4()?;
        let m = self.steps as i64;
        let device = x0.device();
        let alphas = Tensor::arange(m + 1, (Kind::Float, device)) / m as f64;
        // [m+1, 1, 1, 1, 1] * [1, S, P, dims, T] -> [(m+1)*S, P, dims, T]
        let path = (alphas.view([m + 1, 1, 1, 1, 1]) * x0.unsqueeze(0)).view([(m + 1) * s, p, d, t]);
        let (loss, grad) = objective.loss_and_grad(&path);
        let weights = Tensor::full([m + 1], 1.0 / m as f64, (Kind::Float, device));
        let _ = weights.get(0).fill_(0.5 / m as f64);
        let _ = weights.get(m).fill_(0.5 / m as f64);
        let grad = grad.view([m + 1, s, p, d, t]);
        let mean_grad = (grad * weights.view([m + 1, 1, 1, 1, 1])).sum_dim_intlist(0, false, Kind::Float);
        let attribution = x0 * mean_grad;
        let loss = loss.view([m + 1, s, p]);
        let expected = loss.get(m) - loss.get(0); // L(x) - L(0), [S, P]
        let total = attribution.sum_dim_intlist([2, 3].as_slice(), false, Kind::Float);
        Ok(Output { completeness_gap: Some((total - expected).abs()), ..Output::plain(attribution) })
    }
}
