//! `grad` (the paper's Algorithm 1) and `smoothgrad`: descend on the input until the score is
//! optimal, x <- x - eta * direction(x), stopping per (signal, member) pair once
//! L(x) < tol. Attribution A = x0 - x_final, so x0 - A is the reconstruction. A pair whose loss
//! has grown DIVERGED-fold over its start (a step size too large for it) stops there, unconverged,
//! instead of running off to infinity and swamping the members' average.

use super::noise::{NoiseBank, PairIds};
use super::objective::Objective;
use super::{Method, Output};
use anyhow::Result;
use tch::{Kind, Tensor};

/// How often the loop asks the device whether any pair is still active: each ask is a sync.
const CHECK_EVERY: usize = 4;

/// Loss growth over the start at which a pair counts as diverging (eta 0.05 on the paper's
/// members sent some pairs' attributions to 1e22 within 100 steps).
const DIVERGED: f64 = 100.0;

pub struct Descent {
    pub eta: f64,
    pub tol: f64,
    pub max_iter: usize,
    /// None: plain gradient (`grad`). Some: SmoothGrad's mean over noisy copies.
    pub smooth: Option<Smooth>,
}

pub struct Smooth {
    pub samples: usize,
    /// Noise sigma as a fraction of each signal's range.
    pub sigma: f64,
    pub bank: NoiseBank,
}

impl Method for Descent {
    fn name(&self) -> &'static str {
        if self.smooth.is_some() { "smoothgrad" } else { "grad" }
    }

    fn rows_per_pair(&self) -> usize {
        // SmoothGrad evaluates the clean input too, for the stopping test.
        self.smooth.as_ref().map_or(1, |s| s.samples + 1)
    }

    fn iterative(&self) -> bool {
        true
    }

    fn attribute(&self, objective: &Objective, x0: &Tensor, ids: &PairIds) -> Result<Output> {
        let (s, p, d, t) = x0.size4()?;
        let device = x0.device();
        let mut x = x0.detach().copy();
        let mut active = Tensor::ones([s, p], (Kind::Bool, device));
        let mut iterations = Tensor::zeros([s, p], (Kind::Int64, device));
        let scale = self.smooth.as_ref().map(|sm| {
            // Per-signal range over dims and time: [S, P, 1, 1].
            let flat = x0.view([s, p, -1]);
            ((flat.amax([-1], true) - flat.amin([-1], true)) * sm.sigma).unsqueeze(-1)
        });
        let mut live = Tensor::arange(s, (Kind::Int64, device));
        let mut limit = Tensor::zeros([s, p], (Kind::Float, device));
        for iter in 0..self.max_iter {
            if iter % CHECK_EVERY == 0 {
                // Only signals with a member still descending are computed: most pairs stop
                // early, and a finished signal would otherwise cost as much as a live one.
                live = active.any_dim(1, false).nonzero().squeeze_dim(1);
                if live.size()[0] == 0 {
                    break;
                }
            }
            let l = live.size()[0];
            let xl = x.index_select(0, &live); // [L, P, dims, T]
            let (loss, grad) = match (&self.smooth, &scale) {
                (Some(sm), Some(scale)) => {
                    smooth_step(objective, &xl, sm, &scale.index_select(0, &live), &ids.select(&live), iter)
                }
                _ => objective.loss_and_grad(&xl),
            };
            if iter == 0 {
                // Every signal is live at the first step, so `loss` is [S, P] in order.
                limit = loss.detach() * DIVERGED;
            }
            // NaN fails both comparisons, so a pair whose loss is not a number stops too.
            let still = active
                .index_select(0, &live)
                .logical_and(&loss.ge(self.tol))
                .logical_and(&loss.le_tensor(&limit.index_select(0, &live))); // [L, P]
            let _ = active.index_copy_(0, &live, &still);
            // [L, P] -> [L, P, 1, 1]: a pair that has stopped keeps its x exactly (selected, not
            // multiplied by 0: its gradient may be infinite, and 0 * inf is NaN).
            let stepped = &xl - grad * self.eta;
            let _ = x.index_copy_(0, &live, &stepped.where_self(&still.view([l, p, 1, 1]), &xl));
            let _ = iterations.index_add_(0, &live, &still.to_kind(Kind::Int64));
        }
        let final_loss = objective.loss(&x);
        let attribution = (x0 - &x).view([s, p, d, t]);
        Ok(Output {
            attribution,
            iterations: Some(iterations),
            converged: Some(final_loss.lt(self.tol)),
            completeness_gap: None,
        })
    }
}

/// One SmoothGrad direction: the mean gradient over `samples` noisy copies of x, and the loss
/// of the clean x, from one forward/backward over [S*(samples+1), P] rows.
fn smooth_step(
    objective: &Objective,
    x: &Tensor,
    smooth: &Smooth,
    scale: &Tensor,
    ids: &PairIds,
    iter: usize,
) -> (Tensor, Tensor) {
    let (s, p, d, t) = x.size4().expect("4-D");
    let n = smooth.samples as i64;
    // [S, n, P, dims, T] noise, a deterministic function of (seed, signal, member, sample, iter).
    let noise = smooth.bank.draw(ids, smooth.samples, iter) * scale.unsqueeze(1);
    let noisy = x.unsqueeze(1) + noise; // [S, n, P, dims, T]
    let rows = Tensor::cat(&[x.unsqueeze(1), noisy], 1).view([s * (n + 1), p, d, t]);
    let (loss, grad) = objective.loss_and_grad(&rows);
    let loss = loss.view([s, n + 1, p]).select(1, 0);
    let grad = grad.view([s, n + 1, p, d, t]).narrow(1, 1, n).mean_dim(1, false, Kind::Float);
    (loss, grad)
}
