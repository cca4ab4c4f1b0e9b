//! The scheduler: one thread per worker pulls the next job from a shared queue, so a faster
//! device simply takes more packs. Each thread creates and owns its tensors.

use super::{signals, Worker};
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Runs every job on some worker and returns each job's result (in completion order). Once a
/// stop is requested no new job starts; the running ones checkpoint and return.
pub fn run_queue<J, R>(
    workers: &[Worker],
    jobs: Vec<J>,
    work: impl Fn(&Worker, J) -> Result<R> + Sync,
) -> Vec<Result<R>>
where
    J: Send,
    R: Send,
{
    let queue = Mutex::new(VecDeque::from(jobs));
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in workers {
            let (queue, results, work) = (&queue, &results, &work);
            scope.spawn(move || {
                // Sets the calling thread's intra-op thread count (OpenMP's is per thread).
                tch::set_num_threads(worker.threads as i32);
                loop {
                    if signals::stop_requested() {
                        break;
                    }
                    let Some(job) = queue.lock().expect("queue lock").pop_front() else { break };
                    let result = work(worker, job);
                    results.lock().expect("results lock").push(result);
                }
            });
        }
    });
    results.into_inner().expect("results lock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn every_job_runs_once_across_workers() {
        let workers = vec![Worker { device: Device::Cpu, threads: 1 }; 3];
        let mut got: Vec<usize> =
            run_queue(&workers, (0..20).collect(), |_, j| Ok(j * 2)).into_iter().map(|r| r.unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..20).map(|j| j * 2).collect::<Vec<_>>());
    }
}
