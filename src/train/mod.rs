//! `agra train`: trains this process's members (all, or one `--shard`), packed several per
//! device, scheduled over the workers, checkpointed, resumed exactly and idempotent: finished
//! members are skipped, members in progress resume from their last good checkpoint.

mod pack;
pub mod plan;
mod profile;
mod resume;
mod step;

use crate::cli::TrainArgs;
use crate::config::{splitmix, Config};
use crate::data::{self, Split};
use crate::error::Interrupted;
use crate::farm::{self, Devices, Shard};
use crate::model::{init, Architecture};
use crate::progress::Progress;
use crate::store::checkpoint::{self, Checkpoint, EpochLog};
use crate::store::rundir::Stage;
use crate::store::RunDir;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use tch::Tensor;


/// Read-only inputs every worker shares.
pub struct TrainContext {
    pub config: Config,
    /// `Config::train_hash`, the fingerprint checkpoints carry.
    pub config_hash: String,
    pub arch: Architecture,
    pub run: RunDir,
    pub train: Split,
    pub test: Split,
    /// Which kernels train on the CPU.
    pub kernels: crate::model::native::host::Kernels,
}

impl TrainContext {
    pub fn load(run: &RunDir) -> Result<TrainContext> {
        let config = run.config.clone();
        Ok(TrainContext {
            arch: Architecture::new(&config.model, config.data.dims, config.data.length),
            config_hash: config.train_hash(),
            train: data::read(run, "train")?,
            test: data::read(run, "test")?,
            run: run.clone(),
            kernels: crate::model::native::host::Kernels::from_env(),
            config,
        })
    }
}

/// Where a member starts this session: fresh, or from a checkpoint.
#[derive(Debug, Clone)]
pub struct MemberStart {
    pub member: usize,
    pub seed: u64,
    pub attempt: usize,
    pub ckpt: Option<Checkpoint>,
}

impl MemberStart {
    /// Attempt 0 uses the member's seed; a retry after divergence a logged sub-seed of it.
    pub fn fresh(config: &Config, member: usize, attempt: usize) -> MemberStart {
        let base = config.member_seed(member);
        let seed = if attempt == 0 { base } else { splitmix(base ^ splitmix(attempt as u64)) };
        MemberStart { member, seed, attempt, ckpt: None }
    }

    pub fn epoch(&self) -> usize {
        self.ckpt.as_ref().map_or(0, |c| c.header.epoch)
    }
    pub fn step(&self) -> i64 {
        self.ckpt.as_ref().map_or(0, |c| c.header.step)
    }
    pub fn history(&self) -> Vec<EpochLog> {
        self.ckpt.as_ref().map_or_else(Vec::new, |c| c.header.history.clone())
    }
    pub fn weights(&self, ctx: &TrainContext) -> Tensor {
        match &self.ckpt {
            Some(c) => Tensor::from_slice(&c.weights),
            None => init::member_weights(&ctx.arch, self.seed),
        }
    }
    pub fn adam_m(&self, ctx: &TrainContext) -> Tensor {
        self.ckpt.as_ref().map_or_else(|| zeros(ctx), |c| Tensor::from_slice(&c.adam_m))
    }
    pub fn adam_v(&self, ctx: &TrainContext) -> Tensor {
        self.ckpt.as_ref().map_or_else(|| zeros(ctx), |c| Tensor::from_slice(&c.adam_v))
    }
}

fn zeros(ctx: &TrainContext) -> Tensor {
    Tensor::zeros([ctx.arch.numel()], (tch::Kind::Float, tch::Device::Cpu))
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub members: Vec<usize>,
    pub finished: usize,
    pub failed: Vec<usize>,
    #[serde(flatten)]
    pub quality: TestQuality,
    pub seconds: f64,
}

/// The members' final test error and R² (1 - MSE / population variance of the test scores),
/// as `train` prints it and the report states it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TestQuality {
    pub test_mse_mean: f64,
    pub test_mse_std: f64,
    pub r2_mean: f64,
    pub r2_std: f64,
    pub r2_min: f64,
    /// Whether the test scores vary: R² is undefined (NaN, null in JSON) where they do not.
    #[serde(skip)]
    pub scores_vary: bool,
}

impl TestQuality {
    /// From each member's final test MSE (NaN throughout when there is none).
    pub fn of(test_mse: &[f64], test_scores: &[f32]) -> TestQuality {
        let variance = variance(test_scores);
        let scores_vary = variance > 0.0;
        let r2: Vec<f64> = test_mse.iter().map(|m| if scores_vary { 1.0 - m / variance } else { f64::NAN }).collect();
        let (test_mse_mean, test_mse_std) = crate::metrics::stats::mean_std(test_mse);
        let (r2_mean, r2_std) = crate::metrics::stats::mean_std(&r2);
        let r2_min = r2.iter().copied().fold(f64::NAN, f64::min);
        TestQuality { test_mse_mean, test_mse_std, r2_mean, r2_std, r2_min, scores_vary }
    }

    /// R² for people, `pm` between mean and std (" +/- " or " ± "), or why it is undefined.
    pub fn r2_text(&self, pm: &str) -> String {
        if !self.scores_vary {
            return "R² undefined (every test score is the same)".to_string();
        }
        format!("R² {:.3}{pm}{:.3}, min {:.3}", self.r2_mean, self.r2_std, self.r2_min)
    }
}

pub fn run(run: &RunDir, devices: &Devices, args: &TrainArgs, ui: &Progress) -> Result<Summary> {
    let started = Instant::now();
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
    data::ensure(run, ui)?;
    let _polling = crate::farm::signals::polling();
    let ctx = TrainContext::load(run)?;
    let cfg = &ctx.config.train;
    let owned: Vec<usize> = (0..cfg.members).filter(|&m| shard.owns(m)).collect();
    let _locks = owned
        .iter()
        .map(|m| run.stage_lock(&format!("member-{m:04}")))
        .collect::<Result<Vec<_>>>()?;
    crate::store::remove_stale_temps(owned.iter().map(|&m| run.member_dir(m)))?;
    run.stage_started(Stage::Train, &devices.names())?;

    // Packs are fixed chunks of member indices, so an interrupted run regroups exactly as it
    // did before and resumes bit for bit (with libtorch's kernels a member's rounding depends
    // on its pack's size, which run.json keeps).
    let native = ctx.kernels == crate::model::native::host::Kernels::Native;
    let key = farm::pack_key(shard, devices, native);
    let kept = match (&key, run.read_meta()?) {
        (Some(key), Some(meta)) => meta.stages.get(Stage::Train.name()).and_then(|s| s.packs.get(key).copied()).filter(|&p| p >= 1),
        _ => None,
    };
    let size = args.pack.or(kept).unwrap_or_else(|| farm::default_pack(devices, owned.len(), native, ctx.arch.training_bytes(cfg.batch_size)));
    if let Some(key) = key {
        run.update_meta(|m| {
            m.stages.entry(Stage::Train.name().to_string()).or_default().packs.insert(key, size);
        })?;
    }
    // Each round plans from what the members' directories say; the first one's warnings are
    // the run's (later rounds find the same damage).
    let plan = |warn: bool| -> Result<resume::Plan> {
        let mut saved = Vec::new();
        for &m in &owned {
            let (state, warnings) = resume::saved(&ctx, m)?;
            warnings.iter().filter(|_| warn).for_each(|w| ui.warn(w));
            saved.push(state);
        }
        Ok(resume::plan(&ctx.config, size, &owned, saved))
    };
    let mut plan_now = plan(true)?;
    let overall = ui.bar("members", owned.len() as u64);
    overall.set_position(plan_now.finished.len() as u64);
    let device_bars: Vec<_> = devices.workers.iter().map(|w| ui.bar(&w.name(), cfg.epochs as u64)).collect();
    // One copy of the data per worker, kept on its device between packs (a pack's upload cost
    // 10-26 ms on the CPU, mostly first touches of fresh pages).
    let banks: Vec<Mutex<Option<pack::DeviceData>>> = devices.workers.iter().map(|_| Mutex::new(None)).collect();
    let mut interrupted = false;
    while !plan_now.packs.is_empty() && !interrupted {
        let results = farm::run_queue(&devices.workers, std::mem::take(&mut plan_now.packs), |worker, pack| {
            let slot = devices.slot(worker);
            let bar = &device_bars[slot];
            bar.set_position(pack[0].epoch() as u64);
            let on_epoch = |ids: &[usize], epoch: usize, loss: f64| {
                bar.set_position(epoch as u64);
                bar.set_message(format!("members {:?} loss {loss:.3}", ids));
                if epoch == cfg.epochs {
                    overall.inc(ids.len() as u64);
                }
            };
            let mut bank = banks[slot].lock().expect("a worker's data lock");
            let data = bank.get_or_insert_with(|| pack::DeviceData::upload(&ctx, worker.device));
            pack::train_pack(&ctx, worker, data, pack, &on_epoch)
        });
        let mut diverged = false;
        for result in results {
            let outcome = result?;
            interrupted |= outcome.interrupted;
            plan_now.finished.extend(outcome.finished);
            for (start, epoch) in outcome.diverged {
                diverged = true;
                let m = start.member;
                if start.attempt < cfg.nan_retries {
                    let retry = MemberStart::fresh(&ctx.config, m, start.attempt + 1);
                    ui.warn(&format!(
                        "member {m}: {} at epoch {epoch} (seed {}); retrying with sub-seed {}",
                        resume::DIVERGED, start.seed, retry.seed
                    ));
                    resume::begin_retry(&run.member_dir(m), &start, &retry, epoch)?;
                } else {
                    ui.warn(&format!("member {m}: {} at epoch {epoch}; marked failed", resume::DIVERGED));
                    resume::mark_failed(&run.member_dir(m), &start, epoch)?;
                }
            }
        }
        interrupted |= crate::farm::signals::stop_requested();
        // Without divergences every pack ran to its end, and the plan's lists are complete.
        if diverged && !interrupted {
            plan_now = plan(false)?;
        }
    }
    for bar in device_bars.iter().chain([&overall]) {
        bar.finish_and_clear();
    }
    if interrupted {
        return Err(Interrupted.into());
    }
    let resume::Plan { finished, failed, .. } = plan_now;
    let summary = summarise(&ctx, owned, &finished, failed, started.elapsed().as_secs_f64());
    if all_finished(run)? {
        run.stage_finished(Stage::Train, summary.seconds)?;
    }
    Ok(summary)
}

/// Where a member stands, for `status` and the stages that read the finished ones.
pub struct MemberStanding {
    /// "finished", "in_progress", "failed" or "missing".
    pub state: &'static str,
    pub checkpoint: Option<Checkpoint>,
    /// The attempt it is on: its checkpoint's, else its begun retry's (`retry.json`), else 0.
    pub attempt: usize,
    /// Its checkpoint's epoch; for a failed member the epoch it diverged at (`failed.json`).
    pub epoch: usize,
    /// Why each checkpoint file newer than `checkpoint` was passed over (damaged, or not this
    /// run's or this member's): a member that looks unfinished because of one says so.
    pub damaged: Vec<String>,
}

impl MemberStanding {
    /// Its state for a person: "in_progress at epoch 40", with the files passed over, if any.
    pub fn describe(&self) -> String {
        let mut text = match self.state {
            "missing" => self.state.to_string(),
            state => format!("{state} at epoch {}", self.epoch),
        };
        for why in &self.damaged {
            text += &format!("; passed over {why}");
        }
        text
    }
}

pub fn member_state(run: &RunDir, arch: &Architecture, member: usize) -> Result<MemberStanding> {
    let dir = run.member_dir(member);
    let retry = resume::recorded_attempt(&dir).unwrap_or(0);
    if dir.join(resume::FAILED).exists() {
        let epoch = resume::failed_epoch(&dir).unwrap_or(0);
        return Ok(MemberStanding { state: "failed", checkpoint: None, attempt: retry, epoch, damaged: Vec::new() });
    }
    let (ckpt, damaged) = checkpoint::load_latest(&dir, arch, &run.config.train_hash(), member)?;
    let ckpt = ckpt.filter(|c| c.header.attempt >= retry);
    let state = match &ckpt {
        Some(c) if c.header.epoch >= run.config.train.epochs => "finished",
        Some(_) => "in_progress",
        None if retry > 0 => "in_progress", // a retry begun, before its first checkpoint
        None => "missing",
    };
    let (attempt, epoch) = ckpt.as_ref().map_or((retry, 0), |c| (c.header.attempt, c.header.epoch));
    Ok(MemberStanding { state, checkpoint: ckpt, attempt, epoch, damaged })
}

/// Whether every member has finished, by its own files (run.json's word is not enough: a
/// final checkpoint can be deleted or damaged afterwards).
pub fn all_finished(run: &RunDir) -> Result<bool> {
    let c = &run.config;
    let arch = Architecture::new(&c.model, c.data.dims, c.data.length);
    for m in 0..c.train.members {
        if member_state(run, &arch, m)?.state != "finished" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Per-epoch train and test MSE as JSON lines, rewritten whole from the checkpoint's history
/// so a resumed member never logs an epoch twice.
fn write_metrics(dir: &Path, history: &[EpochLog]) -> Result<()> {
    let mut text = String::new();
    for log in history {
        text += &serde_json::to_string(log).context("metrics")?;
        text.push('\n');
    }
    crate::store::write_atomic(&dir.join("metrics.jsonl"), text.as_bytes())
}

fn summarise(ctx: &TrainContext, members: Vec<usize>, finished: &[Checkpoint], failed: Vec<usize>, seconds: f64) -> Summary {
    let mse: Vec<f64> = finished
        .iter()
        .filter_map(|c| c.header.history.last().map(|l| l.test_mse))
        .collect();
    Summary { members, finished: finished.len(), failed, quality: TestQuality::of(&mse, &ctx.test.scores), seconds }
}

fn variance(values: &[f32]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n
}

#[cfg(test)]
mod tests;
