//! The scheduler: one thread per worker pulls the next job from a shared queue, so a faster
//! device simply takes more packs. Each thread creates and owns its tensors.

use super::{signals, Worker};
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Runs every job on some worker and returns the results in job order, whichever worker
/// finished first (explain folds its packs' means in this order, so the ensemble is the same
/// to the last bit from run to run). Once a stop is requested no new job starts; the running
/// ones checkpoint and return, and the jobs never started have no result.
pub fn run_queue<J, R>(
    workers: &[Worker],
    jobs: Vec<J>,
    work: impl Fn(&Worker, J) -> Result<R> + Sync,
) -> Vec<Result<R>>
where
    J: Send,
    R: Send,
{
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
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
                    let Some((index, job)) = queue.lock().expect("queue lock").pop_front() else { break };
                    // libtorch's errors inside tch's infallible calls (a CUDA device out of
                    // memory, say) arrive as panics: one job's failure, not the process's.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker, job)))
                        .unwrap_or_else(|payload| Err(anyhow::anyhow!("{}: {}", worker.name(), crate::error::panic_text(&*payload))));
                    results.lock().expect("results lock").push((index, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn every_job_runs_once_across_workers_and_results_keep_job_order() {
        let workers = vec![Worker { device: Device::Cpu, threads: 1 }; 3];
        // Early jobs take longest, so later ones finish first.
        let work = |_: &Worker, j: usize| {
            std::thread::sleep(std::time::Duration::from_millis(20u64.saturating_sub(j as u64)));
            Ok(j * 2)
        };
        let got: Vec<usize> = run_queue(&workers, (0..20).collect(), work).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, (0..20).map(|j| j * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_job_that_panics_is_its_own_error_and_the_others_still_run() {
        let workers = vec![Worker { device: Device::Cpu, threads: 1 }; 2];
        let work = |_: &Worker, j: usize| if j == 1 { panic!("out of memory\nC++ frames") } else { Ok(j) };
        let got = run_queue(&workers, (0..4).collect(), work);
        assert_eq!(got[1].as_ref().unwrap_err().to_string(), "cpu: out of memory");
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 3);
    }
}
