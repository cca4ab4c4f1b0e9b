//! Training one pack on one device: P members advance together, one forward and one backward
//! per step, with their own data order, dropout masks and Adam moments.

use super::plan::{epoch_plan, PlanSpec};
use super::profile::{Phase, Profile};
use super::step;
use super::{MemberStart, TrainContext};
use crate::farm::{signals, Worker};
use crate::model::adam::{Adam, Params};
use crate::model::PackedCnn;
use crate::store::checkpoint::{self, Checkpoint, EpochLog, Header};
use anyhow::Result;
use rayon::prelude::*;
use std::borrow::Cow;
use tch::{Device, Tensor};

/// What became of a pack's members.
#[derive(Debug, Default)]
pub struct PackOutcome {
    /// Members that reached the last epoch, with their final checkpoint.
    pub finished: Vec<Checkpoint>,
    /// Members whose loss turned NaN or infinite: (start they had, epoch it happened).
    pub diverged: Vec<(MemberStart, usize)>,
    /// True when a stop signal cut the pack short (its members are checkpointed).
    pub interrupted: bool,
}

/// A worker's data on its device, uploaded once for all its packs: train and test signals and
/// scores. With `train.augment` the training bank holds every version of every signal
/// (plan::VERSIONS x n), so showing a version costs nothing in the step: the plan's indices
/// pick it.
pub struct DeviceData {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
}

impl DeviceData {
    pub fn upload(ctx: &TrainContext, device: Device) -> DeviceData {
        let shape = |n: usize| [n as i64, ctx.arch.dims, ctx.arch.length];
        let up = |v: &[f32]| Tensor::from_slice(v).to_device(device);
        let (train, length) = (&ctx.train, ctx.arch.length as usize);
        // Built on the host in one pass and copied once: libtorch's flip, negations and cat
        // took 9-17 ms a pack (a third of a 12-member, 5-epoch benchmark's set-up).
        let (bank, scores): (Cow<[f32]>, Cow<[f32]>) = if ctx.config.train.augment {
            (augmented(&train.perturbed, length).into(), train.scores.repeat(super::plan::VERSIONS).into())
        } else {
            (train.perturbed[..].into(), train.scores[..].into())
        };
        DeviceData {
            train_x: up(&bank).view(shape(bank.len() / (ctx.arch.dims as usize * length))),
            train_y: up(&scores),
            test_x: up(&ctx.test.perturbed).view(shape(ctx.test.len())),
            test_y: up(&ctx.test.scores),
        }
    }
}

/// Every version of every signal (rows of `length` values), in plan::VERSIONS order: as is,
/// negated, time-reversed, both.
fn augmented(signals: &[f32], length: usize) -> Vec<f32> {
    let mut bank = Vec::with_capacity(super::plan::VERSIONS * signals.len());
    bank.extend_from_slice(signals);
    bank.extend(signals.iter().map(|v| -v));
    let reversed = signals.chunks_exact(length).flat_map(|row| row.iter().rev());
    bank.extend(reversed.clone());
    bank.extend(reversed.map(|v| -v));
    bank
}

pub fn train_pack(
    ctx: &TrainContext,
    worker: &Worker,
    data: &DeviceData,
    members: Vec<MemberStart>,
    on_epoch: &(dyn Fn(&[usize], usize, f64) + Sync),
) -> Result<PackOutcome> {
    let device = worker.device;
    // Training repeats a few shapes thousands of times: let cuDNN time its algorithms once.
    // (Explain turns this off: its shapes change as pairs converge, and each new shape would
    // be timed again.)
    tch::Cuda::cudnn_set_benchmark(device.is_cuda());
    let cfg = &ctx.config.train;
    let arch = &ctx.arch;
    let p = members.len() as i64;
    let (n, bs) = (ctx.train.len(), cfg.batch_size);
    let start_epoch = members[0].epoch();
    // One plan and one Adam step count serve the whole pack (`resume::packs` makes them so).
    let ids: Vec<usize> = members.iter().map(|m| m.member).collect();
    anyhow::ensure!(members.iter().all(|m| m.epoch() == start_epoch && m.step() == members[0].step()), "members {ids:?} packed at different epochs");
    let seeds: Vec<u64> = members.iter().map(|m| m.seed).collect();

    let vectors = |pick: fn(&MemberStart, &TrainContext) -> Tensor| -> Vec<Tensor> {
        members.iter().map(|m| pick(m, ctx)).collect()
    };
    let mut model = PackedCnn::from_members(arch, &vectors(MemberStart::weights), device);
    let pack_state = |pick| crate::model::pack_members(arch, &vectors(pick)).to_device(device);
    let mut adam = Adam::new(
        Params { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps },
        pack_state(MemberStart::adam_m),
        pack_state(MemberStart::adam_v),
        members[0].step(),
    );
    let mut histories: Vec<Vec<EpochLog>> = members.iter().map(|m| m.history()).collect();
    let mut diverged_at: Vec<Option<usize>> = vec![None; members.len()];
    let mut outcome = PackOutcome::default();

    let inject = injected_nan();
    let spec = PlanSpec { samples: n, hidden: arch.hidden as usize, dropout: arch.dropout, augment: cfg.augment };
    let mut plan = epoch_plan(&seeds, start_epoch, &spec);
    let mut writing: Option<std::thread::JoinHandle<Result<()>>> = None;
    let mut profile = Profile::from_env(device);
    let mut steps = step::for_worker(ctx.kernels, worker, arch, members.len());
    for epoch in start_epoch..cfg.epochs {
        for (i, m) in members.iter().enumerate() {
            if inject == Some((m.member, epoch)) && m.attempt == 0 {
                poison(&model, i as i64);
            }
        }
        adam.params.lr = learning_rate(cfg, epoch);
        steps.begin_epoch(&plan);
        for start in (0..n).step_by(bs) {
            let batch = step::Batch { data, plan: &plan, start, len: bs.min(n - start) };
            steps.step(&mut model, &mut adam, batch);
        }
        profile.lap(Phase::Steps);
        let test_sse = steps.test_sse(&model, data);
        profile.lap(Phase::Evaluation);
        // The device is still working through the queued steps: draw the next epoch's plan
        // on the host meanwhile, before the read-backs below wait for it.
        if epoch + 1 < cfg.epochs {
            plan = epoch_plan(&seeds, epoch + 1, &spec);
        }
        profile.lap(Phase::Plan);
        let train_mse: Vec<f32> = Vec::try_from(&(steps.take_train_sse() / n as f64).to_device(Device::Cpu))?;
        let test_mse = per_signal(test_sse, data.test_x.size()[0])?;
        profile.lap(Phase::Evaluation);
        for (i, history) in histories.iter_mut().enumerate() {
            let log = EpochLog { epoch: epoch + 1, train_mse: train_mse[i] as f64, test_mse: test_mse[i] };
            if diverged_at[i].is_none() && !(log.train_mse.is_finite() && log.test_mse.is_finite()) {
                diverged_at[i] = Some(epoch + 1);
            }
            history.push(log);
        }
        let mean_loss = train_mse.iter().map(|&v| v as f64).sum::<f64>() / p as f64;
        on_epoch(&ids, epoch + 1, mean_loss);

        let done = epoch + 1 == cfg.epochs;
        let stop = signals::stop_requested();
        if done || stop || (epoch + 1) % cfg.checkpoint_every == 0 {
            // Three copies to the host, then per-member slices there: slicing on the device
            // would cost a synchronising copy per member and tensor.
            let host = |t: &Tensor| t.detach().to_device(Device::Cpu);
            let (flat, m1, m2) = (host(&model.flat), host(&adam.m), host(&adam.v));
            let mut ckpts = Vec::new();
            for (i, member) in members.iter().enumerate() {
                if diverged_at[i].is_some() {
                    continue;
                }
                let slot = i as i64;
                let ckpt = Checkpoint {
                    header: Header {
                        member: member.member,
                        seed: member.seed,
                        attempt: member.attempt,
                        epoch: epoch + 1,
                        step: adam.step,
                        config_hash: ctx.config_hash.clone(),
                        score_offset: arch.score_offset,
                        history: histories[i].clone(),
                    },
                    weights: Vec::try_from(&model.member_vector(&flat, slot))?,
                    adam_m: Vec::try_from(&model.member_vector(&m1, slot))?,
                    adam_v: Vec::try_from(&model.member_vector(&m2, slot))?,
                };
                // A finite loss can hide an overflowed moment (g^2 past f32's range makes v
                // infinite, and the steps through it zero): such a member never recovers, and
                // its checkpoint would not load. Checked here, where the state is on the host
                // anyway; the last epoch always checkpoints, so none finishes with it.
                if !ckpt.all_finite() {
                    diverged_at[i] = Some(epoch + 1);
                    continue;
                }
                ckpts.push(ckpt);
            }
            // Written in parallel (each write ends in an fsync) and, between checkpoints, in the
            // background while training goes on; the last and an interrupted one are waited for.
            if let Some(previous) = writing.take() {
                previous.join().map_err(|_| anyhow::anyhow!("checkpoint writer panicked"))??;
            }
            let dirs: Vec<_> = ckpts.iter().map(|c| ctx.run.member_dir(c.header.member)).collect();
            let arch_owned = arch.clone();
            let write = move |ckpts: Vec<Checkpoint>| -> Result<Vec<Checkpoint>> {
                ckpts.par_iter().zip(&dirs).try_for_each(|(ckpt, dir)| -> Result<()> {
                    checkpoint::save(dir, &arch_owned, ckpt)?;
                    super::write_metrics(dir, &ckpt.header.history)
                })?;
                Ok(ckpts)
            };
            if done || stop {
                let written = write(ckpts)?;
                if done {
                    outcome.finished.extend(written);
                }
            } else {
                writing = Some(std::thread::spawn(move || write(ckpts).map(|_| ())));
            }
            profile.lap(Phase::Checkpoint);
            if stop && !done {
                outcome.interrupted = true;
                break;
            }
        }
        if diverged_at.iter().all(Option::is_some) {
            break;
        }
    }
    if let Some(previous) = writing.take() {
        previous.join().map_err(|_| anyhow::anyhow!("checkpoint writer panicked"))??;
    }
    profile.lap(Phase::Checkpoint);
    profile.report(&ids, cfg.epochs - start_epoch);
    outcome.diverged = members
        .into_iter()
        .zip(diverged_at)
        .filter_map(|(m, at)| at.map(|epoch| (m, epoch)))
        .collect();
    Ok(outcome)
}

/// The epoch's learning rate: constant, then a linear decay to `lr * lr_final` over the last
/// `lr_decay_epochs` epochs. Adam at a fixed 1e-3 keeps test MSE jumping by +/-30% from epoch to
/// epoch at the end; annealing lets every member settle. A function of the epoch alone, so a
/// resumed run takes the same steps.
pub fn learning_rate(cfg: &crate::config::TrainConfig, epoch: usize) -> f64 {
    let start = cfg.epochs.saturating_sub(cfg.lr_decay_epochs);
    if epoch < start || cfg.lr_decay_epochs == 0 {
        return cfg.lr;
    }
    let progress = (epoch - start + 1) as f64 / cfg.lr_decay_epochs as f64;
    cfg.lr * (1.0 - progress * (1.0 - cfg.lr_final))
}

/// Sums [P] on the device -> means per member on the host.
fn per_signal(sse: Tensor, n: i64) -> Result<Vec<f64>> {
    let sse: Vec<f32> = Vec::try_from(&sse.to_device(Device::Cpu))?;
    Ok(sse.into_iter().map(|s| s as f64 / n as f64).collect())
}

/// Fault injection for the test suite: `AGRA_INJECT_NAN=member:epoch` sets that member's
/// weights to NaN at the start of that (0-based) epoch on its first attempt, so the divergence
/// handling runs on real NaN losses.
fn injected_nan() -> Option<(usize, usize)> {
    let spec = std::env::var("AGRA_INJECT_NAN").ok()?;
    let (m, e) = spec.split_once(':')?;
    Some((m.parse().ok()?, e.parse().ok()?))
}

fn poison(model: &PackedCnn, slot: i64) {
    tch::no_grad(|| {
        for spec in &model.arch.params {
            let _ = model.view_of(&model.flat, spec).get(slot).fill_(f64::NAN);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host-built bank equals the libtorch construction it replaced, version by version.
    #[test]
    fn the_augmented_bank_holds_each_version_in_plan_order() {
        let (n, dims, length) = (3i64, 2i64, 5usize);
        let signals: Vec<f32> = (0..n * dims * length as i64).map(|i| (i * 7 % 11) as f32 - 5.0).collect();
        let x = Tensor::from_slice(&signals).view([n, dims, length as i64]);
        let reversed = x.flip([2]);
        let want = Tensor::cat(&[&x, &-&x, &reversed, &-&reversed], 0);
        let got = Tensor::from_slice(&augmented(&signals, length)).view([4 * n, dims, length as i64]);
        assert!(got.equal(&want));
    }
}
