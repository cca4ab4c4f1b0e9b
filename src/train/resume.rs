//! What a run that starts finds of its members, and where each one goes on: failed ones stay
//! out, finished ones are skipped, the rest resume from their own checkpoints in packs that do
//! not depend on what became of the other members.
//!
//! A member's files: `failed.json` once it has used up its retries, `retry.json` naming the
//! attempt it is on once it has been retried, and the checkpoints of that attempt.

use super::{MemberStart, TrainContext};
use crate::config::Config;
use crate::progress::Progress;
use crate::store::checkpoint::{self, Checkpoint};
use anyhow::{Context, Result};
use std::path::Path;

pub const FAILED: &str = "failed.json";
const RETRY: &str = "retry.json";

/// A member as its directory leaves it.
#[derive(Debug)]
pub enum Saved {
    Failed,
    Finished(Checkpoint),
    /// On `attempt`, with that attempt's checkpoints, newest first.
    Going { attempt: usize, ckpts: Vec<Checkpoint> },
}

/// Member `m`'s state, warning of checkpoints that do not verify. Checkpoints of an attempt
/// given up (a retry began after it) are deleted: they lead to the same divergence, and their
/// later epochs would have the retry's first checkpoints pruned as older.
pub fn saved(ctx: &TrainContext, m: usize, ui: &Progress) -> Result<Saved> {
    let dir = ctx.run.member_dir(m);
    if dir.join(FAILED).exists() {
        return Ok(Saved::Failed);
    }
    let attempt = attempt(&dir)?;
    let (all, damaged) = checkpoint::load_all(&dir, &ctx.arch, &ctx.config_hash, m)?;
    for message in damaged {
        ui.warn(&format!("member {m}: {message}"));
    }
    let (ckpts, stale): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.header.attempt >= attempt);
    for c in stale {
        let path = checkpoint::path_for(&dir, c.header.epoch);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(match ckpts.first() {
        Some(c) if c.header.epoch >= ctx.config.train.epochs => Saved::Finished(ckpts.into_iter().next().expect("a checkpoint")),
        _ => Saved::Going { attempt, ckpts },
    })
}

/// The attempt a member is on: 0 unless `retry.json` says otherwise.
pub fn attempt(dir: &Path) -> Result<usize> {
    let path = dir.join(RETRY);
    if !path.exists() {
        return Ok(0);
    }
    let text = crate::store::read_text(&path).with_context(|| format!("reading {}", path.display()))?;
    let record: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let attempt = record["attempt"].as_u64().with_context(|| format!("{} names no attempt", path.display()))?;
    Ok(attempt as usize)
}

/// Records that member `retry.member` starts over on `retry.attempt` after `diverged` failed at
/// `epoch`, before its first checkpoint of the new attempt can be written.
pub fn begin_retry(dir: &Path, diverged: &MemberStart, retry: &MemberStart, epoch: usize) -> Result<()> {
    let record = serde_json::json!({
        "member": retry.member, "attempt": retry.attempt, "seed": retry.seed,
        "after": { "attempt": diverged.attempt, "seed": diverged.seed, "epoch": epoch, "reason": "loss not finite" },
    });
    crate::store::write_atomic(&dir.join(RETRY), record.to_string().as_bytes())
}

pub fn mark_failed(dir: &Path, start: &MemberStart, epoch: usize) -> Result<()> {
    let record = serde_json::json!({
        "member": start.member, "seed": start.seed, "attempt": start.attempt,
        "epoch": epoch, "reason": "loss not finite",
    });
    crate::store::write_atomic(&dir.join(FAILED), record.to_string().as_bytes())
}

/// Where this run goes on.
#[derive(Debug, Default)]
pub struct Plan {
    pub finished: Vec<Checkpoint>,
    pub failed: Vec<usize>,
    pub packs: Vec<Vec<MemberStart>>,
}

/// First attempts train in fixed chunks of `owned` (the packs of the first run, whatever
/// failed since), retries in chunks of the members on the same attempt, as the retry round
/// packed them. `saved[i]` is `owned[i]`'s state.
pub fn plan(config: &Config, size: usize, owned: &[usize], saved: Vec<Saved>) -> Plan {
    let mut plan = Plan::default();
    let mut going: Vec<(usize, usize, Vec<Checkpoint>)> = Vec::new();
    for (&m, state) in owned.iter().zip(saved) {
        match state {
            Saved::Failed => plan.failed.push(m),
            Saved::Finished(c) => plan.finished.push(c),
            Saved::Going { attempt, ckpts } => going.push((m, attempt, ckpts)),
        }
    }
    let (first, mut retries): (Vec<_>, Vec<_>) = going.into_iter().partition(|g| g.1 == 0);
    for chunk in owned.chunks(size) {
        let members = first.iter().filter(|g| chunk.contains(&g.0)).cloned().collect();
        plan.packs.extend(packs(config, members));
    }
    retries.sort_by_key(|g| (g.1, g.0));
    for same in retries.chunk_by(|a, b| a.1 == b.1) {
        for chunk in same.chunks(size) {
            plan.packs.extend(packs(config, chunk.to_vec()));
        }
    }
    plan
}

/// One chunk's members (all on one attempt) as packs: one pack from the newest epoch all have a
/// checkpoint at, which keeps the chunk whole (a kill during a pack's checkpoint writes can
/// leave members one checkpoint apart; the newer ones redo that stretch exactly). With no such
/// epoch (a member that diverged kept older checkpoints than the rest), each member goes on
/// from its own newest checkpoint, with those at the same epoch together.
fn packs(config: &Config, members: Vec<(usize, usize, Vec<Checkpoint>)>) -> Vec<Vec<MemberStart>> {
    let Some(first) = members.first() else { return Vec::new() };
    let common = first.2.iter().map(|c| c.header.epoch).filter(|&e| members.iter().all(|g| g.2.iter().any(|c| c.header.epoch == e))).max();
    let fresh = members.iter().all(|g| g.2.is_empty());
    let start = |(m, attempt, ckpts): (usize, usize, Vec<Checkpoint>), epoch: Option<usize>| {
        let at = |c: &Checkpoint| epoch.is_none_or(|e| c.header.epoch == e);
        match ckpts.into_iter().find(at) {
            Some(c) => MemberStart { member: m, seed: c.header.seed, attempt: c.header.attempt, ckpt: Some(c) },
            None => MemberStart::fresh(config, m, attempt),
        }
    };
    if common.is_some() || fresh {
        return vec![members.into_iter().map(|g| start(g, common)).collect()];
    }
    let mut starts: Vec<MemberStart> = members.into_iter().map(|g| start(g, None)).collect();
    starts.sort_by_key(|s| (std::cmp::Reverse(s.epoch()), s.member));
    starts.chunk_by(|a, b| a.epoch() == b.epoch()).map(<[MemberStart]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checkpoint::Header;

    fn config() -> Config {
        Config::load(&crate::config::Sources { preset: "quick".into(), ..Default::default() }).unwrap()
    }

    fn ckpt(member: usize, attempt: usize, epoch: usize) -> Checkpoint {
        let header = Header { member, seed: 7, attempt, epoch, step: epoch as i64, config_hash: String::new(), score_offset: 0.0, history: vec![] };
        Checkpoint { header, weights: vec![], adam_m: vec![], adam_v: vec![] }
    }

    fn going(attempt: usize, epochs: &[usize]) -> Saved {
        Saved::Going { attempt, ckpts: epochs.iter().rev().map(|&e| ckpt(0, attempt, e)).collect() }
    }

    /// (member, attempt, epoch) of each pack's members.
    fn shape(plan: &Plan) -> Vec<Vec<(usize, usize, usize)>> {
        plan.packs.iter().map(|p| p.iter().map(|s| (s.member, s.attempt, s.epoch())).collect()).collect()
    }

    #[test]
    fn a_failed_member_does_not_move_the_others_into_other_packs() {
        let saved = vec![going(0, &[2, 4]), Saved::Failed, going(0, &[2, 4]), going(0, &[2, 4]), going(0, &[2, 4])];
        let plan = plan(&config(), 2, &[0, 1, 2, 3, 4], saved);
        assert_eq!(plan.failed, vec![1]);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 4)], vec![(2, 0, 4), (3, 0, 4)], vec![(4, 0, 4)]]);
    }

    /// A member retried while the rest of its chunk finished: the others are not trained again,
    /// and the retry goes on from its own checkpoint, on its own attempt.
    #[test]
    fn a_retried_member_resumes_alone_and_its_chunk_stays_finished() {
        let saved = vec![Saved::Finished(ckpt(0, 0, 8)), going(1, &[2]), Saved::Finished(ckpt(2, 0, 8))];
        let plan = plan(&config(), 3, &[0, 1, 2], saved);
        assert_eq!(plan.finished.len(), 2);
        assert_eq!(shape(&plan), vec![vec![(1, 1, 2)]]);
    }

    #[test]
    fn retries_on_one_attempt_pack_together_across_chunks() {
        let saved = vec![going(1, &[]), going(0, &[6]), going(2, &[]), going(1, &[])];
        let plan = plan(&config(), 2, &[0, 1, 2, 3], saved);
        let attempt = |a| MemberStart::fresh(&config(), 0, a).seed;
        assert_eq!(shape(&plan), vec![vec![(1, 0, 6)], vec![(0, 1, 0), (3, 1, 0)], vec![(2, 2, 0)]]);
        assert_eq!(plan.packs[1][0].seed, attempt(1), "a retry without checkpoints starts from its sub-seed");
    }

    #[test]
    fn members_one_checkpoint_apart_resume_together_from_the_older() {
        let plan = plan(&config(), 3, &[0, 1, 2], vec![going(0, &[4, 6]), going(0, &[2, 4]), going(0, &[4, 6])]);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 4), (1, 0, 4), (2, 0, 4)]]);
    }

    /// A member that diverged before an interruption, before its retry began, kept checkpoints
    /// older than any of the rest: the rest go on from where they were.
    #[test]
    fn without_a_common_epoch_each_member_goes_on_from_its_own() {
        let plan = plan(&config(), 3, &[0, 1, 2], vec![going(0, &[10, 12]), going(0, &[6, 8]), going(0, &[10, 12])]);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 12), (2, 0, 12)], vec![(1, 0, 8)]]);
    }
}
