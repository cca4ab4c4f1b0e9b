//! Where the hand-written kernels meet libtorch: which of the two computes the network on a
//! device, and CPU tensors borrowed as slices.

use tch::{Device, Kind, Tensor};

/// Which kernels compute the network on the CPU: the hand-written ones by default, libtorch's
/// with `AGRA_KERNELS=libtorch` (benchmarks, and a fallback). CUDA devices always use libtorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Native,
    Libtorch,
}

impl Kernels {
    pub fn from_env() -> Kernels {
        match std::env::var("AGRA_KERNELS").as_deref() {
            Ok("libtorch") => Kernels::Libtorch,
            _ => Kernels::Native,
        }
    }

    /// Whether the hand-written kernels compute on `device`.
    pub fn native_on(self, device: Device) -> bool {
        self == Kernels::Native && device == Device::Cpu
    }
}

/// A contiguous CPU float tensor's elements, borrowed.
pub fn cpu_slice(t: &Tensor) -> &[f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    // SAFETY: checked above that the storage holds numel contiguous f32 on the host; the slice
    // borrows the tensor, and nothing writes to it while the slice lives.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

pub fn cpu_slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    // SAFETY: as in cpu_slice, and the tensor is borrowed mutably for the slice's life.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}
