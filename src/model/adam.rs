//! Adam over the pack's flat parameter buffer: a few tensor ops for all members at once, with
//! state we own so it can be checkpointed and resumed exactly (tch's optimizer state cannot
//! be saved). Member slices of the moments live in the same param-major layout as `flat`.

use super::native::host::cpu_slice_mut;
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// First and second moments, shaped like the flat parameters, and the step count (shared by
/// the pack: packs only ever hold members at the same step).
#[derive(Debug)]
pub struct Adam {
    pub params: Params,
    pub m: Tensor,
    pub v: Tensor,
    pub step: i64,
}

impl Adam {
    pub fn new(params: Params, m: Tensor, v: Tensor, step: i64) -> Adam {
        Adam { params, m, v, step }
    }

    /// One update of `flat` from its autograd gradient, then the gradient is cleared.
    pub fn step(&mut self, flat: &mut Tensor) {
        let mut grad = flat.grad();
        self.update(flat, &grad);
        tch::no_grad(|| {
            let _ = grad.zero_();
        });
    }

    /// One update of `flat` from `grad` (laid out like it). Follows torch.optim.Adam
    /// (non-amsgrad, no weight decay) operation for operation:
    ///   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    ///   p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
    pub fn update(&mut self, flat: &mut Tensor, grad: &Tensor) {
        let Params { lr, beta1, beta2, eps } = self.params;
        let (bias1, bias2_sqrt) = self.advance();
        tch::no_grad(|| {
            let _ = self.m.lerp_(grad, 1.0 - beta1);
            let _ = self.v.g_mul_scalar_(beta2).addcmul_(grad, &(grad * (1.0 - beta2)));
            let denom = (self.v.sqrt() / bias2_sqrt) + eps;
            let _ = flat.addcdiv_(&(&self.m * (-lr / bias1)), &denom);
        });
    }

    /// Counts a step and returns `update`'s operations for CPU tensors as one pass over host
    /// slices (the tensor version's five temporaries of the pack's size cost more than the
    /// arithmetic: 0.38 against 0.16 ms per step of a 3-member pack). Each element's update
    /// depends on it alone, so the pass can run member by member, beside the member's gradient.
    pub fn host_step(&mut self) -> HostStep {
        let Params { lr, beta1, beta2, eps } = self.params;
        let (bias1, bias2_sqrt) = self.advance();
        HostStep {
            w1: (1.0 - beta1) as f32,
            b2: beta2 as f32,
            w2: (1.0 - beta2) as f32,
            step: (-lr / bias1) as f32,
            bias2_sqrt: bias2_sqrt as f32,
            eps: eps as f32,
        }
    }

    /// The moments of CPU tensors as host slices, laid out like `flat`.
    pub fn moments_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (cpu_slice_mut(&mut self.m), cpu_slice_mut(&mut self.v))
    }

    /// Counts the step; its bias corrections 1 - b1^t and sqrt(1 - b2^t).
    fn advance(&mut self) -> (f64, f64) {
        self.step += 1;
        let t = self.step as i32;
        (1.0 - self.params.beta1.powi(t), (1.0 - self.params.beta2.powi(t)).sqrt())
    }
}

/// One step's Adam update on host slices (`Adam::host_step`).
#[derive(Debug, Clone, Copy)]
pub struct HostStep {
    w1: f32,
    b2: f32,
    w2: f32,
    step: f32,
    bias2_sqrt: f32,
    eps: f32,
}

impl HostStep {
    /// Updates `params` and their moments `m`, `v` (equal lengths) from `grad`.
    pub fn apply(&self, params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        assert!(grad.len() == params.len() && m.len() == params.len() && v.len() == params.len());
        let HostStep { w1, b2, w2, step, bias2_sqrt, eps } = *self;
        for (((p, &g), m), v) in params.iter_mut().zip(grad).zip(m).zip(v) {
            *m += w1 * (g - *m);
            *v = *v * b2 + g * (g * w2);
            *p += (*m * step) / (v.sqrt() / bias2_sqrt + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Reference: torch.optim.Adam([p], lr=0.1) on p = [1., -2.], loss = sum(p^2), 3 steps:
    ///   p = torch.tensor([1., -2.], requires_grad=True); opt = torch.optim.Adam([p], lr=0.1)
    ///   for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
    ///   print(p.tolist())  ->  [0.7015863060951233, -1.7006233930587769]
    #[test]
    fn matches_torch_adam_on_a_quadratic() {
        let mut p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let zeros = || Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        let mut adam = Adam::new(Params { lr: 0.1, ..Params::default() }, zeros(), zeros(), 0);
        for _ in 0..3 {
            (&p * &p).sum(Kind::Float).backward();
            adam.step(&mut p);
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        assert!((got[0] - 0.701_586_3).abs() < 1e-6 && (got[1] + 1.700_623_4).abs() < 1e-6, "{got:?}");
        assert_eq!(adam.step, 3);
    }

    /// The host pass takes the tensor ops' steps: the same moments and parameters up to f32
    /// rounding, over steps whose gradients change sign and scale.
    #[test]
    fn the_host_update_follows_the_tensor_update() {
        let n = 1000;
        let start = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
        let zeros = || Tensor::zeros([n], (Kind::Float, tch::Device::Cpu));
        let (mut on_tensors, mut on_host) = (start.copy(), start.copy());
        let mut a = Adam::new(Params::default(), zeros(), zeros(), 0);
        let mut b = Adam::new(Params::default(), zeros(), zeros(), 0);
        for i in 0..5 {
            let grad = Tensor::randn([n], (Kind::Float, tch::Device::Cpu)) * 10f64.powi(i - 2);
            a.update(&mut on_tensors, &grad);
            let (step, grad) = (b.host_step(), Vec::<f32>::try_from(&grad).unwrap());
            let (m, v) = b.moments_mut();
            step.apply(cpu_slice_mut(&mut on_host), &grad, m, v);
        }
        assert_eq!(a.step, b.step);
        for (x, y) in [(&on_tensors, &on_host), (&a.m, &b.m), (&a.v, &b.v)] {
            let diff = f64::try_from((x - y).abs().max()).unwrap();
            let scale = f64::try_from(x.abs().max()).unwrap();
            assert!(diff <= 1e-6 * scale, "difference {diff} of {scale}");
        }
    }
}
