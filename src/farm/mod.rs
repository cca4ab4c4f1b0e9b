//! The farm: which workers exist (`--devices`), which members this process owns (`--shard`),
//! how members are cut into packs, and the scheduler that hands packs to one worker thread per
//! device. tch tensors are `Send` but not `Sync`, so each worker owns everything it touches.

pub mod devices;
mod memory;
pub mod schedule;
pub mod signals;

pub use devices::{Devices, Worker};
pub use memory::{cuda_free_bytes, host_memory_limit, peak_resident_bytes, worker_free_bytes};
pub use schedule::run_queue;

use crate::error::UsageError;
use anyhow::Result;

/// `--shard I/N`: this process owns the members m with m % N == I.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || UsageError::new(format!("--shard {text}: expected I/N with 0 <= I < N"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad().into());
        }
        Ok(Shard { index, count })
    }

    pub fn owns(&self, member: usize) -> bool {
        member % self.count == self.index
    }
}

/// Members per pack when `--pack` is not given. CUDA: every member a worker gets, in one pack
/// (a GPU is launch-bound on such small layers, so wider is faster), as many as half the
/// device's free memory holds at `member_bytes` each (`memory::cuda_pack_cap`). CPU with agra's kernels
/// (`native`): one member per worker thread, as a pack's members go through the threads one
/// at a time anyway; smaller jobs shorten the end of a run, where one worker waits for the
/// other (50 members x 6 epochs on two cores: 0.24-0.41 s beyond the steps and evaluation,
/// against 0.47-0.66 s with packs of 3; docs/BENCHMARKS.md). CPU with libtorch's kernels: at
/// most 3, so a pack's activations stay in cache.
pub fn default_pack(devices: &Devices, members: usize, native: bool, member_bytes: u64) -> usize {
    if native && !devices.has_cuda() {
        return devices.workers.iter().map(|w| w.threads).max().unwrap_or(1).clamp(1, members.max(1));
    }
    let cap = if devices.has_cuda() { memory::cuda_pack_cap(devices, member_bytes) } else { 3 };
    members.div_ceil(devices.workers.len()).clamp(1, cap)
}

/// Where run.json keeps the pack size a training run began with, or None where packing does not
/// change a member's rounding (agra's CPU kernels). With libtorch's kernels it does, and the
/// default pack changes with the number of GPUs and their free memory: a run requeued onto
/// another node must pack as it began to resume bit for bit.
pub fn pack_key(shard: Shard, devices: &Devices, native: bool) -> Option<String> {
    let kind = match (devices.has_cuda(), native) {
        (true, _) => "cuda",
        (false, true) => return None,
        (false, false) => "cpu-libtorch",
    };
    Some(format!("{}/{} {kind}", shard.index, shard.count))
}

/// Explain's packs: as training's on CUDA; one member on CPU, where explain has signals enough
/// to fill a batch and oneDNN's plain convolution beats the grouped one (2-core CPU, 12 members:
/// 8.5k gradient evaluations per second at pack 1, 5.6-7.2k at packs of 6 or 12).
pub fn default_explain_pack(devices: &Devices, members: usize, member_bytes: u64) -> usize {
    if devices.has_cuda() { default_pack(devices, members, false, member_bytes) } else { 1 }
}

/// Rows per explain chunk when `--max-batch` is not given: on CPU small enough that a chunk's
/// activations stay in cache (4096 rows: 4.9k evaluations per second, 64-256 rows: 7-8.5k); on
/// CUDA 262,144 rows, fewer where a row's `activations` would take more than 16 GB (the paper's
/// network needs 12 GB).
pub fn default_max_batch(device: tch::Device, activations: i64) -> usize {
    if device.is_cuda() { ((1i64 << 32) / activations.max(1)).clamp(1, 262_144) as usize } else { 256 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_ownership() {
        let s = Shard::parse("1/4").unwrap();
        assert_eq!(s, Shard { index: 1, count: 4 });
        assert!(s.owns(5) && !s.owns(4));
        for bad in ["5/4", "4/4", "1/0", "x/2", "1", "-1/3", ""] {
            let err = Shard::parse(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2, "{bad}");
        }
    }

    #[test]
    fn default_packs_per_device_and_kernels() {
        let parse = |spec: &str, cuda: usize, cores: usize| Devices::parse_with(spec, cuda, cores).unwrap();
        assert_eq!(default_pack(&parse("auto", 0, 2), 50, true, 1), 1, "one member per single-threaded worker");
        assert_eq!(default_pack(&parse("cpu", 0, 4), 50, true, 1), 4, "one member per thread of the worker");
        assert_eq!(default_pack(&parse("cpu", 0, 4), 2, true, 1), 2);
        assert_eq!(default_pack(&parse("auto", 0, 2), 50, false, 1), 3, "libtorch's kernels: packs of 3");
        assert_eq!(default_pack(&parse("auto", 0, 2), 4, false, 1), 2);
        assert_eq!(default_pack(&parse("auto", 2, 8), 50, true, 1), 25, "a GPU takes every member it gets");
    }

    #[test]
    fn pack_sizes_are_kept_where_they_change_rounding() {
        let parse = |spec: &str, cuda: usize| Devices::parse_with(spec, cuda, 2).unwrap();
        let shard = Shard { index: 1, count: 4 };
        assert_eq!(pack_key(shard, &parse("auto", 2), true).as_deref(), Some("1/4 cuda"));
        assert_eq!(pack_key(shard, &parse("cpu", 0), false).as_deref(), Some("1/4 cpu-libtorch"));
        assert_eq!(pack_key(shard, &parse("cpu", 0), true), None);
    }

    #[test]
    fn shards_partition_the_members() {
        let n = 4;
        for m in 0..50 {
            let owners = (0..n).filter(|&i| Shard { index: i, count: n }.owns(m)).count();
            assert_eq!(owners, 1);
        }
    }
}
