use super::*;
use crate::config::Sources;
use crate::farm::Worker;
use tch::Device;

fn context(sets: &[&str]) -> (tempfile::TempDir, TrainContext) {
    let config = Config::load(&Sources { preset: "quick".into(), sets: sets.iter().map(|s| s.to_string()).collect(), ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path(), &config).unwrap();
    data::ensure(&run, &Progress::new(true)).unwrap();
    let ctx = TrainContext::load(&run).unwrap();
    (dir, ctx)
}

fn train(ctx: &TrainContext, members: &[usize]) -> Vec<Checkpoint> {
    let worker = Worker { device: Device::Cpu, threads: 1 };
    let starts = members.iter().map(|&m| MemberStart::fresh(&ctx.config, m, 0)).collect();
    let outcome = pack::train_pack(ctx, &worker, starts, &|_, _, _| {}).unwrap();
    outcome.finished
}

/// Issue bar: member m trained in a pack of 8 equals member m trained alone within 1e-4
/// relative after 2 epochs.
#[test]
fn a_member_trains_the_same_in_a_pack_of_eight_as_alone() {
    let (_dir, ctx) = context(&["train.epochs=2", "train.lr_decay_epochs=0", "train.members=8"]);
    let packed = train(&ctx, &(0..8).collect::<Vec<_>>());
    for m in [0usize, 5] {
        let alone = train(&ctx, &[m]);
        let (a, b) = (&alone[0].weights, &packed.iter().find(|c| c.header.member == m).unwrap().weights);
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff / scale < 1e-4, "member {m}: relative difference {}", diff / scale);
    }
}

#[test]
fn training_lowers_the_loss_and_logs_every_epoch() {
    let (_dir, ctx) = context(&["train.epochs=6", "train.members=2"]);
    let done = train(&ctx, &[0, 1]);
    for c in &done {
        let h = &c.header.history;
        assert_eq!(h.len(), 6);
        assert!(h[5].train_mse < h[0].train_mse, "{h:?}");
        assert_eq!(c.header.step, 6 * ctx.train.len().div_ceil(ctx.config.train.batch_size) as i64);
    }
}
