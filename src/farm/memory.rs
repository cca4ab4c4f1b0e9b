//! How many members fit on a CUDA device: its free memory, asked of the CUDA runtime that
//! libtorch has loaded (tch does not expose it), over what one member needs.

use super::Devices;

/// Members per CUDA pack at most: launches are what a GPU's time goes to on such small layers,
/// so wider is faster, up to this.
const MAX_CUDA_PACK: usize = 256;

/// The widest pack every CUDA device of `devices` holds with half its free memory, at
/// `member_bytes` a member; `MAX_CUDA_PACK` where the runtime cannot be asked.
pub fn cuda_pack_cap(devices: &Devices, member_bytes: u64) -> usize {
    devices
        .workers
        .iter()
        .filter_map(|w| match w.device {
            tch::Device::Cuda(index) => cuda_free_bytes(index),
            _ => None,
        })
        .map(|free| (free / 2 / member_bytes.max(1)) as usize)
        .fold(MAX_CUDA_PACK, usize::min)
        .max(1)
}

/// Free bytes on CUDA device `index`, or None where no CUDA runtime is loaded or it fails.
pub fn cuda_free_bytes(index: usize) -> Option<u64> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    for name in [c"libcudart.so.13", c"libcudart.so.12", c"libcudart.so"] {
        // SAFETY: RTLD_NOLOAD only looks up a library libtorch_cuda already loaded; the two
        // symbols have these C signatures in every CUDA runtime since 4.0, and the calls only
        // select this thread's device and read two counters.
        unsafe {
            let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if handle.is_null() {
                continue;
            }
            let (set, info) = (libc::dlsym(handle, c"cudaSetDevice".as_ptr()), libc::dlsym(handle, c"cudaMemGetInfo".as_ptr()));
            if set.is_null() || info.is_null() {
                return None;
            }
            let (set, info) = (std::mem::transmute::<*mut libc::c_void, SetDevice>(set), std::mem::transmute::<*mut libc::c_void, MemGetInfo>(info));
            let (mut free, mut total) = (0usize, 0usize);
            if set(index as i32) != 0 || info(&mut free, &mut total) != 0 {
                return None;
            }
            return Some(free as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_runtime_to_ask_the_cap_is_the_widest_pack() {
        // This machine's CUDA devices are pretend ones: the runtime answers no.
        let devices = Devices::parse_with("cuda:0", 1, 4).unwrap();
        if cuda_free_bytes(0).is_none() {
            assert_eq!(cuda_pack_cap(&devices, 1 << 20), MAX_CUDA_PACK);
        }
        assert_eq!(cuda_pack_cap(&Devices::parse_with("cpu", 0, 2).unwrap(), 1), MAX_CUDA_PACK);
    }
}
