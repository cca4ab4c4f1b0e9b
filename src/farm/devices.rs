//! `--devices`: the list of workers. `auto` is every visible CUDA device, else one
//! single-threaded CPU worker per core; `cpu` is one CPU worker using every core;
//! `cpu,cpu` makes two CPU workers so the multi-device path runs without a GPU.

use crate::error::UsageError;
use anyhow::Result;
use tch::Device;

#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub device: Device,
    /// Intra-op threads for this worker (CPU workers split the cores between them).
    pub threads: usize,
}

impl Worker {
    pub fn name(&self) -> String {
        match self.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Devices {
    pub workers: Vec<Worker>,
}

impl Devices {
    pub fn parse(spec: &str) -> Result<Devices> {
        Self::parse_with(spec, tch::Cuda::device_count() as usize, cores())
    }

    /// Parsing with the CUDA device and core counts given, so it can be tested anywhere.
    pub fn parse_with(spec: &str, cuda_count: usize, cores: usize) -> Result<Devices> {
        let spec = spec.trim();
        let devices: Vec<Device> = if spec == "auto" {
            if cuda_count > 0 {
                (0..cuda_count).map(Device::Cuda).collect()
            } else {
                // One single-threaded worker per core: on 2 cores two such workers trained
                // about 15% faster than one worker with two threads (docs/BENCHMARKS.md).
                vec![Device::Cpu; cores.max(1)]
            }
        } else {
            spec.split(',').map(|item| parse_one(item.trim(), cuda_count)).collect::<Result<_>>()?
        };
        let cpu_workers = devices.iter().filter(|d| **d == Device::Cpu).count().max(1);
        let threads = (cores / cpu_workers).max(1);
        let workers = devices
            .into_iter()
            .map(|device| Worker { device, threads: if device == Device::Cpu { threads } else { 1 } })
            .collect();
        Ok(Devices { workers })
    }

    pub fn names(&self) -> Vec<String> {
        self.workers.iter().map(Worker::name).collect()
    }

    pub fn has_cuda(&self) -> bool {
        self.workers.iter().any(|w| w.device.is_cuda())
    }

    /// The position of `worker` (one `run_queue` handed out) among the workers.
    pub fn slot(&self, worker: &Worker) -> usize {
        self.workers.iter().position(|w| std::ptr::eq(w, worker)).unwrap_or(0)
    }
}

fn parse_one(item: &str, cuda_count: usize) -> Result<Device> {
    if item == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = item
        .strip_prefix("cuda:")
        .or_else(|| (item == "cuda").then_some("0"))
        .and_then(|i| i.parse::<usize>().ok())
        .ok_or_else(|| {
            UsageError::new(format!("--devices: {item:?} is not cpu, cuda or cuda:N (it takes a list of these, or auto)"))
        })?;
    if index >= cuda_count {
        return Err(UsageError::new(format!(
            "--devices: {item} does not exist ({cuda_count} CUDA device{} visible)",
            if cuda_count == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(Device::Cuda(index))
}

/// The cores to use: all of them, or OMP_NUM_THREADS when set, so results do not depend on
/// the machine (a reduction split over a different thread count can differ in the last bit).
fn cores() -> usize {
    let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match std::env::var("OMP_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if n > 0 => available.min(n),
        _ => available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_every_cuda_device() {
        let d = Devices::parse_with("auto", 2, 8).unwrap();
        assert_eq!(d.names(), ["cuda:0", "cuda:1"]);
        let d = Devices::parse_with("auto", 0, 2).unwrap();
        assert_eq!(d.workers, vec![Worker { device: Device::Cpu, threads: 1 }; 2]);
        let d = Devices::parse_with("cpu", 0, 8).unwrap();
        assert_eq!(d.workers, vec![Worker { device: Device::Cpu, threads: 8 }]);
    }

    #[test]
    fn cpu_workers_split_the_cores() {
        let d = Devices::parse_with("cpu,cpu", 0, 2).unwrap();
        assert_eq!(d.workers.len(), 2);
        assert!(d.workers.iter().all(|w| w.threads == 1));
    }

    #[test]
    fn explicit_lists_and_errors() {
        let d = Devices::parse_with("cuda:1, cpu", 2, 4).unwrap();
        assert_eq!(d.names(), ["cuda:1", "cpu"]);
        for bad in ["cuda:9", "gpu", "cuda:x", "", "cpu,,cpu"] {
            let err = Devices::parse_with(bad, 2, 4).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2, "{bad}");
            assert!(err.to_string().starts_with("--devices"), "{err}");
        }
    }
}
