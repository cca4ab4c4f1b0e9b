//! The paper's regression CNN as a packed ensemble: P members live in one module whose
//! parameters are stacked along a member axis, so one forward/backward trains all of them.
//!
//! Single member: x [B, dims, T] -> 4 x (conv k, no bias -> ReLU -> max-pool 2) -> flatten
//! -> fc1 (no bias) -> ReLU -> dropout -> fc2 (no bias) -> + score_offset (a constant) -> [B].
//!
//! Packing: the convolutions are grouped convolutions (groups = P), the fully connected layers
//! batched matmuls over the member axis. All parameters of the pack live in ONE flat leaf
//! tensor, param-major (`[conv1 of member 0..P][conv2 of member 0..P]...`), so each layer is a
//! zero-copy view, the gradient lands in one buffer, and Adam is a handful of tensor ops.

pub mod adam;
pub mod init;
pub mod native;

use crate::config::ModelConfig;
use tch::{Device, Kind, Tensor};

/// One parameter of a single member: its name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    /// Offset of this parameter's block, counted in single-member elements (multiply by P).
    offset: i64,
}

impl ParamSpec {
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Where this parameter sits in a single member's vector.
    pub fn member_range(&self) -> std::ops::Range<usize> {
        self.offset as usize..(self.offset + self.numel()) as usize
    }
}

/// The architecture's parameter list, derived from the config and the input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub dims: i64,
    pub length: i64,
    pub kernel: i64,
    pub channels: Vec<i64>,
    pub hidden: i64,
    pub dropout: f64,
    /// Added to every output, never trained (`model.score_offset`).
    pub score_offset: f64,
    pub params: Vec<ParamSpec>,
}

impl Architecture {
    pub fn new(model: &ModelConfig, dims: usize, length: usize) -> Architecture {
        let channels: Vec<i64> = model.channels.iter().map(|&c| c as i64).collect();
        let kernel = model.kernel as i64;
        let hidden = model.hidden as i64;
        let mut shapes = Vec::new();
        let mut c_in = dims as i64;
        for (i, &c_out) in channels.iter().enumerate() {
            shapes.push((format!("conv{}", i + 1), vec![c_out, c_in, kernel]));
            c_in = c_out;
        }
        let features = c_in * (length as i64 / 16);
        // fc weights are stored [in, out] (x @ W), the layout batched matmul wants.
        shapes.push(("fc1".to_string(), vec![features, hidden]));
        shapes.push(("fc2".to_string(), vec![hidden, 1]));
        let mut offset = 0;
        let params = shapes
            .into_iter()
            .map(|(name, shape)| {
                let spec = ParamSpec { name, shape, offset };
                offset += spec.numel();
                spec
            })
            .collect();
        Architecture {
            dims: dims as i64,
            length: length as i64,
            kernel,
            channels,
            hidden,
            dropout: model.dropout,
            score_offset: model.score_offset,
            params,
        }
    }

    /// Parameters of one member.
    pub fn numel(&self) -> i64 {
        self.params.iter().map(ParamSpec::numel).sum()
    }

    /// Bytes one member's training needs on a device: weights, gradient and Adam's two moments,
    /// and a batch's activations about six times over (outputs, pooled outputs and indices,
    /// their gradients).
    pub fn training_bytes(&self, batch_size: usize) -> u64 {
        (self.numel() * 16 + batch_size as i64 * self.activations() * 4 * 6) as u64
    }

    /// Values one signal's forward pass holds in its convolution outputs (before pooling), the
    /// bulk of the activations a backward pass keeps.
    pub fn activations(&self) -> i64 {
        self.channels.iter().enumerate().map(|(i, &c)| c * (self.length >> i)).sum()
    }
}

/// How the packed convolutions are computed; both give the same numbers (up to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvLayout {
    /// One grouped convolution per layer over [B, P*C, T].
    Grouped,
    /// The same grouped convolutions as 2-D ones over [B, P*C, 1, T] in channels-last memory
    /// (time-major, channels innermost), which oneDNN's CPU kernels take without reordering.
    ChannelsLast,
    /// Unfold the input and run one batched matmul per layer over [P, C*K, B*T]: the member
    /// axis leads, so each member's product is one plain GEMM.
    Unfold,
}

/// The benchmarking overrides `AGRA_CONV` and `AGRA_KERNELS`, checked once at start: a typo
/// would otherwise measure the default while its author believes otherwise.
pub fn check_env() -> Result<(), crate::error::UsageError> {
    for (name, allowed) in [("AGRA_CONV", &["grouped", "channels-last", "unfold"][..]), ("AGRA_KERNELS", &["native", "libtorch"][..])] {
        if let Some(value) = std::env::var_os(name) {
            let value = value.to_string_lossy(); // not UTF-8: shown with U+FFFD, and refused
            if !value.is_empty() && !allowed.contains(&value.as_ref()) {
                return Err(crate::error::UsageError::new(format!("{name}={value:?} must be one of {}", allowed.join(", "))));
            }
        }
    }
    Ok(())
}

impl ConvLayout {
    /// The faster layout for a device, as measured in docs/BENCHMARKS.md; `AGRA_CONV=grouped`
    /// or `AGRA_CONV=unfold` overrides it for benchmarking.
    pub fn for_device(device: Device) -> ConvLayout {
        match std::env::var("AGRA_CONV").as_deref() {
            Ok("grouped") => ConvLayout::Grouped,
            Ok("channels-last") => ConvLayout::ChannelsLast,
            Ok("unfold") => ConvLayout::Unfold,
            // H100, paper preset, 50 members x 80 epochs: unfold 7.3 s, grouped 11.6 s.
            _ if device.is_cuda() => ConvLayout::Unfold,
            // 2-core CPU, one thread, one training step of 3 members: channels-last 23 ms,
            // grouped 38 ms; unfold was slower than grouped (8.9 s vs 6.2-6.6 s, 10 members x 3 epochs).
            _ => ConvLayout::ChannelsLast,
        }
    }
}

/// P members' parameters in one flat tensor, and the forward pass over them.
#[derive(Debug)]
pub struct PackedCnn {
    pub arch: Architecture,
    pub members: i64,
    /// [P * arch.numel()], param-major; the only leaf that requires grad.
    pub flat: Tensor,
    pub layout: ConvLayout,
}

impl PackedCnn {
    /// Packs members' parameter vectors (each [arch.numel()] in `arch.params` order).
    pub fn from_members(arch: &Architecture, members: &[Tensor], device: Device) -> PackedCnn {
        let flat = pack_members(arch, members).to_device(device).set_requires_grad(true);
        PackedCnn { arch: arch.clone(), members: members.len() as i64, flat, layout: ConvLayout::for_device(device) }
    }

    /// The pack's block of one parameter, `[P, ...member shape]`, a view of `flat` (or of any
    /// tensor laid out like it, such as Adam's moments).
    pub fn view_of(&self, flat: &Tensor, spec: &ParamSpec) -> Tensor {
        let mut shape = vec![self.members];
        shape.extend_from_slice(&spec.shape);
        flat.narrow(0, spec.offset * self.members, spec.numel() * self.members).view(shape.as_slice())
    }

    /// Where a parameter's block `[P, ...member shape]` starts in `flat`.
    pub fn block_start(&self, spec: &ParamSpec) -> usize {
        (spec.offset * self.members) as usize
    }

    /// Member m's parameters as one vector [arch.numel()], in `arch.params` order.
    pub fn member_vector(&self, flat: &Tensor, member: i64) -> Tensor {
        let parts: Vec<Tensor> = self
            .arch
            .params
            .iter()
            .map(|spec| self.view_of(flat, spec).get(member).reshape([-1]))
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// x: [B, P*dims, T], member p's signal in channels p*dims..(p+1)*dims.
    /// `dropout`: a mask [P, B, hidden] already scaled by 1/(1-p), or None in evaluation.
    /// Returns the scores [P, B].
    pub fn forward(&self, x: &Tensor, dropout: Option<&Tensor>) -> Tensor {
        let features = match self.layout {
            ConvLayout::Grouped => self.features_grouped(x),
            ConvLayout::ChannelsLast => self.features_channels_last(x),
            ConvLayout::Unfold => self.features_unfold(x),
        };
        let z = features.bmm(&self.view_of(&self.flat, &self.arch.params[4])).relu();
        // A new tensor, not `*=`: relu's backward reads its output, which in place would change.
        let z = match dropout {
            Some(mask) => z * mask,
            None => z,
        };
        // [P, B, hidden] @ [P, hidden, 1] -> [P, B, 1] -> [P, B]
        let score = z.bmm(&self.view_of(&self.flat, &self.arch.params[5])).squeeze_dim(-1);
        if self.arch.score_offset == 0.0 {
            score
        } else {
            score + self.arch.score_offset
        }
    }
}

impl PackedCnn {
    /// The convolutional trunk as grouped convolutions: [B, P*dims, T] -> [P, B, F].
    fn features_grouped(&self, x: &Tensor) -> Tensor {
        let p = self.members;
        let pad = self.arch.kernel / 2;
        let mut h = x.shallow_clone();
        for spec in &self.arch.params[..4] {
            // [P, c_out, c_in, k] -> [P*c_out, c_in, k]: group g convolves only member g's channels.
            let w = self.view_of(&self.flat, spec).view([-1, spec.shape[1], spec.shape[2]]);
            h = pool2_relu(&h.conv1d(&w, None::<Tensor>, [1], [pad], [1], p));
        }
        let b = h.size()[0];
        // [B, P*C, T/16] -> [B, P, C*T/16] -> [P, B, F]: each member's flatten order equals
        // the single-member network's (channel-major), then the member axis leads for bmm.
        h.view([b, p, -1]).transpose(0, 1)
    }

    /// The grouped trunk in channels-last memory: [B, P*dims, T] -> [P, B, F].
    fn features_channels_last(&self, x: &Tensor) -> Tensor {
        let p = self.members;
        let pad = self.arch.kernel / 2;
        let b = x.size()[0];
        // Stored [B, T, P*dims], seen as [B, P*dims, 1, T]: channels-last strides, which the
        // convolution and the pooling keep for their outputs.
        let mut h = x.transpose(1, 2).contiguous().unsqueeze(1).permute([0, 3, 1, 2]);
        for spec in &self.arch.params[..4] {
            let w = self.view_of(&self.flat, spec).view([-1, spec.shape[1], 1, spec.shape[2]]);
            let y = h.conv2d(&w, None::<Tensor>, [1, 1], [0, pad], [1, 1], p);
            // ReLU after the pool, as in pool2_relu.
            h = y.max_pool2d([1, 2], [1, 2], [0, 0], [1, 1], false).relu();
        }
        // [B, P*C, 1, T/16] -> [B, P, C*T/16] (a copy into channel-major order, the single
        // network's flatten) -> [P, B, F].
        h.reshape([b, p, -1]).transpose(0, 1)
    }

    /// The trunk as unfold + batched matmul, activations kept [P, C, B, T] throughout.
    fn features_unfold(&self, x: &Tensor) -> Tensor {
        let p = self.members;
        let (k, pad) = (self.arch.kernel, self.arch.kernel / 2);
        let b = x.size()[0];
        // [B, P*dims, T] -> [B, P, dims, T] -> [P, dims, B, T]
        let mut h = x.view([b, p, self.arch.dims, -1]).permute([1, 2, 0, 3]);
        for spec in &self.arch.params[..4] {
            let (c_in, t) = (spec.shape[1], h.size()[3]);
            // [P, C, B, T] -> pad -> [P, C, B, T, K] -> [P, C, K, B, T] -> [P, C*K, B*T]: row
            // c*K + k matches the weight's [c_out, c_in, k] flattening.
            let cols = h.constant_pad_nd([pad, pad]).unfold(3, k, 1).permute([0, 1, 4, 2, 3]).reshape([p, c_in * k, b * t]);
            let w = self.view_of(&self.flat, spec).view([p, spec.shape[0], c_in * k]);
            // [P, c_out, C*K] @ [P, C*K, B*T] -> [P, c_out*B, T] -> pool -> [P, c_out, B, T/2]
            let y = w.bmm(&cols).view([p, spec.shape[0] * b, t]);
            h = pool2_relu(&y).view([p, spec.shape[0], b, t / 2]);
        }
        // [P, C, B, T/16] -> [P, B, C, T/16] -> [P, B, F], channel-major like the single network.
        h.permute([0, 2, 1, 3]).reshape([p, b, -1])
    }
}

/// ReLU after max-pool by 2 along time: the same as pooling after ReLU (ReLU is monotonic) on
/// half the elements. max_pool1d beat a reshape-and-amax by about 10% on CPU (BENCHMARKS.md).
/// [N, C, T] -> [N, C, T/2].
fn pool2_relu(h: &Tensor) -> Tensor {
    h.max_pool1d([2], [2], [0], [1], false).relu()
}

/// Members' vectors [arch.numel()] -> the param-major flat layout [P * arch.numel()].
pub fn pack_members(arch: &Architecture, members: &[Tensor]) -> Tensor {
    let stacked = Tensor::stack(members, 0); // [P, numel]
    let blocks: Vec<Tensor> = arch
        .params
        .iter()
        .map(|spec| stacked.narrow(1, spec.offset, spec.numel()).reshape([-1]))
        .collect();
    Tensor::cat(&blocks, 0).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests;
