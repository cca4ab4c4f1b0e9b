//! The paper's regression CNN as a packed ensemble: P members live in one module whose
//! parameters are stacked along a member axis, so one forward/backward trains all of them.
//!
//! Single member: x [B, dims, T] -> 4 x (conv k, no bias -> ReLU -> max-pool 2) -> flatten
//! -> fc1 (no bias) -> ReLU -> dropout -> fc2 (no bias) -> score [B].
//!
//! Packing: the convolutions are grouped convolutions (groups = P), the fully connected layers
//! batched matmuls over the member axis. All parameters of the pack live in ONE flat leaf
//! tensor, param-major (`[conv1 of member 0..P][conv2 of member 0..P]...`), so each layer is a
//! zero-copy view, the gradient lands in one buffer, and Adam is a handful of tensor ops.

pub mod adam;
pub mod init;

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
            params,
        }
    }

    /// Parameters of one member.
    pub fn numel(&self) -> i64 {
        self.params.iter().map(ParamSpec::numel).sum()
    }

    /// Multiply-adds of one member's forward pass on one signal (for GFLOP/s figures).
    pub fn forward_macs(&self) -> i64 {
        let mut t = self.length;
        let mut macs = 0;
        for spec in &self.params[..4] {
            macs += spec.numel() * t;
            t /= 2;
        }
        macs + self.params[4].numel() + self.params[5].numel()
    }
}

/// P members' parameters in one flat tensor, and the forward pass over them.
#[derive(Debug)]
pub struct PackedCnn {
    pub arch: Architecture,
    pub members: i64,
    /// [P * arch.numel()], param-major; the only leaf that requires grad.
    pub flat: Tensor,
}

impl PackedCnn {
    /// Packs members' parameter vectors (each [arch.numel()] in `arch.params` order).
    pub fn from_members(arch: &Architecture, members: &[Tensor], device: Device) -> PackedCnn {
        let flat = pack_members(arch, members).to_device(device).set_requires_grad(true);
        PackedCnn { arch: arch.clone(), members: members.len() as i64, flat }
    }

    /// The pack's block of one parameter, `[P, ...member shape]`, a view of `flat` (or of any
    /// tensor laid out like it, such as Adam's moments).
    pub fn view_of(&self, flat: &Tensor, spec: &ParamSpec) -> Tensor {
        let mut shape = vec![self.members];
        shape.extend_from_slice(&spec.shape);
        flat.narrow(0, spec.offset * self.members, spec.numel() * self.members).view(shape.as_slice())
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
        let p = self.members;
        let pad = self.arch.kernel / 2;
        let mut h = x.shallow_clone();
        for spec in &self.arch.params[..4] {
            // [P, c_out, c_in, k] -> [P*c_out, c_in, k]: group g convolves only member g's channels.
            let w = self.view_of(&self.flat, spec).view([-1, spec.shape[1], spec.shape[2]]);
            h = h.conv1d(&w, None::<Tensor>, [1], [pad], [1], p).relu();
            h = pool2(&h);
        }
        let b = h.size()[0];
        // [B, P*C, T/16] -> [B, P, C*T/16] -> [P, B, F]: each member's flatten order equals
        // the single-member network's (channel-major), then the member axis leads for bmm.
        let features = h.view([b, p, -1]).transpose(0, 1);
        let mut z = features.bmm(&self.view_of(&self.flat, &self.arch.params[4])).relu();
        if let Some(mask) = dropout {
            z = z * mask;
        }
        // [P, B, hidden] @ [P, hidden, 1] -> [P, B, 1] -> [P, B]
        z.bmm(&self.view_of(&self.flat, &self.arch.params[5])).squeeze_dim(-1)
    }
}

/// Max-pool by 2 along time as a reshape and a max: cheaper than max_pool1d_with_indices on
/// CPU, and its backward needs no index tensor. [B, C, T] -> [B, C, T/2].
fn pool2(h: &Tensor) -> Tensor {
    let (b, c, t) = h.size3().expect("3-D");
    h.view([b, c, t / 2, 2]).amax([-1], false)
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
