//! What a run that starts finds of its members, and where each one goes on: failed ones stay
//! out, finished ones are skipped, the rest resume from their own checkpoints in packs that do
//! not depend on what became of the other members.
//!
//! A member's files: `failed.json` once it has used up its retries, `retry.json` naming the
//! attempt it is on once it has been retried, and the checkpoints of that attempt.

use super::{MemberStart, TrainContext};
use crate::config::Config;
use crate::store::checkpoint::{self, Checkpoint};
use anyhow::Result;
use std::path::Path;

pub const FAILED: &str = "failed.json";
const RETRY: &str = "retry.json";

/// A member as its directory leaves it.
#[derive(Debug)]
pub enum Saved {
    /// Given up on `attempt`.
    Failed { attempt: usize },
    /// Its checkpoints, newest (the last epoch's) first.
    Finished(Vec<Checkpoint>),
    /// On `attempt`, with that attempt's checkpoints, newest first.
    Going { attempt: usize, ckpts: Vec<Checkpoint> },
}

impl Saved {
    /// The attempt the member has reached.
    fn attempt(&self) -> usize {
        match self {
            Saved::Failed { attempt } | Saved::Going { attempt, .. } => *attempt,
            Saved::Finished(ckpts) => ckpts[0].header.attempt,
        }
    }
}

/// Member `m`'s state, and a warning for each file that is damaged. Checkpoints of an attempt
/// given up (a retry began after it) are deleted: they lead to the same divergence, and their
/// later epochs would outrank the retry's first checkpoints.
pub fn saved(ctx: &TrainContext, m: usize) -> Result<(Saved, Vec<String>)> {
    let dir = ctx.run.member_dir(m);
    let (all, damaged) = checkpoint::load_all(&dir, &ctx.arch, &ctx.config_hash, m)?;
    let mut warnings: Vec<String> = damaged.into_iter().map(|d| format!("{d}; falling back")).collect();
    let attempt = recorded_attempt(&dir).unwrap_or_else(|message| {
        let newest = all.iter().map(|(_, c)| c.header.attempt).max().unwrap_or(0);
        let repeat = if newest == 0 { " (without a checkpoint: the attempts before repeat)" } else { "" };
        warnings.push(format!("{message}; going on with attempt {newest}, its checkpoints' newest{repeat}"));
        newest
    });
    let warnings = warnings.into_iter().map(|w| format!("member {m}: {w}")).collect();
    if dir.join(FAILED).exists() {
        return Ok((Saved::Failed { attempt }, warnings));
    }
    let mut ckpts = Vec::new();
    for (path, c) in all {
        if c.header.attempt >= attempt {
            ckpts.push(c);
        } else {
            crate::store::remove_if_present(&path)?;
        }
    }
    let state = match ckpts.first() {
        Some(c) if c.header.epoch >= ctx.config.train.epochs => Saved::Finished(ckpts),
        _ => Saved::Going { attempt, ckpts },
    };
    Ok((state, warnings))
}

/// The attempt `retry.json` names (0 without one), or why it cannot be read.
pub fn recorded_attempt(dir: &Path) -> std::result::Result<usize, String> {
    let path = dir.join(RETRY);
    if !path.exists() {
        return Ok(0);
    }
    let damaged = |why: &dyn std::fmt::Display| format!("{} is damaged ({why})", path.display());
    let text = crate::store::read_text(&path).map_err(|e| damaged(&e))?;
    let record: serde_json::Value = serde_json::from_str(&text).map_err(|e| damaged(&e))?;
    record["attempt"].as_u64().map(|a| a as usize).ok_or_else(|| damaged(&"no attempt"))
}

/// Why a member is retried or failed, as the warnings and its retry.json and failed.json say.
pub const DIVERGED: &str = "not finite (loss, weights or Adam moments)";

/// Records that member `retry.member` starts over on `retry.attempt` after `diverged` failed at
/// `epoch`, and deletes the checkpoints of the attempts before (damaged ones too), which would
/// outrank the retry's first ones.
pub fn begin_retry(dir: &Path, diverged: &MemberStart, retry: &MemberStart, epoch: usize) -> Result<()> {
    let record = serde_json::json!({
        "member": retry.member, "attempt": retry.attempt, "seed": retry.seed,
        "after": { "attempt": diverged.attempt, "seed": diverged.seed, "epoch": epoch, "reason": DIVERGED },
    });
    crate::store::write_atomic(&dir.join(RETRY), record.to_string().as_bytes())?;
    checkpoint::remove_all(dir)
}

/// The epoch `failed.json` says the member diverged at, where it can be read.
pub fn failed_epoch(dir: &Path) -> Option<usize> {
    let record: serde_json::Value = serde_json::from_str(&crate::store::read_text(&dir.join(FAILED)).ok()?).ok()?;
    record["epoch"].as_u64().map(|e| e as usize)
}

pub fn mark_failed(dir: &Path, start: &MemberStart, epoch: usize) -> Result<()> {
    let record = serde_json::json!({
        "member": start.member, "seed": start.seed, "attempt": start.attempt,
        "epoch": epoch, "reason": DIVERGED,
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

/// A member a plan places: on `attempt`, with its checkpoints, newest first.
#[derive(Clone)]
struct Placed {
    member: usize,
    attempt: usize,
    ckpts: Vec<Checkpoint>,
}

impl Placed {
    /// Whether it can start at `epoch`: from its checkpoint there, or fresh at 0.
    fn has(&self, epoch: usize) -> bool {
        self.ckpts.iter().any(|c| c.header.epoch == epoch) || (epoch == 0 && self.ckpts.is_empty())
    }

    fn start_at(self, config: &Config, epoch: usize) -> MemberStart {
        match self.ckpts.into_iter().find(|c| c.header.epoch == epoch) {
            Some(c) => MemberStart { member: self.member, seed: c.header.seed, attempt: c.header.attempt, ckpt: Some(c) },
            None => MemberStart::fresh(config, self.member, self.attempt),
        }
    }
}

/// Attempt a's packs are fixed chunks of the members that reached it (all of `owned` for the
/// first attempts, the members retried for the others, as each retry round packed them),
/// whatever finished or failed since. `saved[i]` is `owned[i]`'s state.
///
/// A finished member that still has a checkpoint at the epoch its chunk resumes from (a kill
/// during the last checkpoint writes finished part of a pack) trains that stretch again with
/// it: the redo rewrites its last checkpoint bit for bit and keeps the pack its size, on which
/// libtorch's rounding depends.
pub fn plan(config: &Config, size: usize, owned: &[usize], saved: Vec<Saved>) -> Plan {
    let reached: Vec<(usize, usize)> = owned.iter().zip(&saved).map(|(&m, s)| (m, s.attempt())).collect();
    let mut plan = Plan::default();
    let (mut going, mut finished) = (Vec::new(), Vec::new());
    for ((member, attempt), state) in reached.iter().copied().zip(saved) {
        match state {
            Saved::Failed { .. } => plan.failed.push(member),
            Saved::Finished(ckpts) => finished.push(Placed { member, attempt, ckpts }),
            Saved::Going { attempt, ckpts } => going.push(Placed { member, attempt, ckpts }),
        }
    }
    let last = reached.iter().map(|r| r.1).max().unwrap_or(0);
    for attempt in 0..=last {
        let members: Vec<usize> = reached.iter().filter(|r| r.1 >= attempt).map(|r| r.0).collect();
        for chunk in members.chunks(size) {
            let on = going.iter().filter(|g| g.attempt == attempt && chunk.contains(&g.member)).cloned().collect();
            for (epoch, mut pack) in packs(on) {
                let redo = |f: &Placed| f.attempt == attempt && chunk.contains(&f.member) && epoch > 0 && f.has(epoch);
                let (again, rest): (Vec<_>, Vec<_>) = finished.into_iter().partition(redo);
                finished = rest;
                pack.extend(again);
                pack.sort_by_key(|p| p.member);
                plan.packs.push(pack.into_iter().map(|p| p.start_at(config, epoch)).collect());
            }
        }
    }
    plan.finished = finished.into_iter().map(|mut f| f.ckpts.swap_remove(0)).collect();
    plan
}

/// One chunk's members (all on one attempt) as packs, each with the epoch it starts at: the
/// epoch most of them have a checkpoint at (the newest of those), for those members, then the
/// same for the rest. A kill during a pack's checkpoint writes can leave members one checkpoint
/// apart: the chunk stays whole at the older, and the newer ones redo that stretch exactly. A
/// member that diverged before a stop, before its retry began, kept older checkpoints than the
/// rest: it goes on from its own, and the rest from theirs. A member without checkpoints starts
/// fresh.
fn packs(mut members: Vec<Placed>) -> Vec<(usize, Vec<Placed>)> {
    let mut packs = Vec::new();
    while !members.is_empty() {
        let candidates = members.iter().flat_map(|g| g.ckpts.iter().map(|c| c.header.epoch).chain(g.ckpts.is_empty().then_some(0)));
        let epoch = candidates.max_by_key(|&e| (members.iter().filter(|g| g.has(e)).count(), e)).expect("a member");
        let (now, later): (Vec<_>, Vec<_>) = members.into_iter().partition(|g| g.has(epoch));
        packs.push((epoch, now));
        members = later;
    }
    packs
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
        let saved = vec![going(0, &[2, 4]), Saved::Failed { attempt: 0 }, going(0, &[2, 4]), going(0, &[2, 4]), going(0, &[2, 4])];
        let plan = plan(&config(), 2, &[0, 1, 2, 3, 4], saved);
        assert_eq!(plan.failed, vec![1]);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 4)], vec![(2, 0, 4), (3, 0, 4)], vec![(4, 0, 4)]]);
    }

    /// A member retried while the rest of its chunk finished: the others are not trained again,
    /// and the retry goes on from its own checkpoint, on its own attempt.
    #[test]
    fn a_retried_member_resumes_alone_and_its_chunk_stays_finished() {
        let saved = vec![Saved::Finished(vec![ckpt(0, 0, 8)]), going(1, &[2]), Saved::Finished(vec![ckpt(2, 0, 8)])];
        let plan = plan(&config(), 3, &[0, 1, 2], saved);
        assert_eq!(plan.finished.len(), 2);
        assert_eq!(shape(&plan), vec![vec![(1, 1, 2)]]);
    }

    /// Attempt 1's chunks are cut from every member that reached it (0, 2 and 3; 2 has moved
    /// on to attempt 2), so 3 does not take 2's place beside 0.
    #[test]
    fn a_retry_round_keeps_its_chunks_when_a_member_moves_on() {
        let saved = vec![going(1, &[]), going(0, &[6]), going(2, &[]), going(1, &[])];
        let plan = plan(&config(), 2, &[0, 1, 2, 3], saved);
        assert_eq!(shape(&plan), vec![vec![(1, 0, 6)], vec![(0, 1, 0)], vec![(3, 1, 0)], vec![(2, 2, 0)]]);
        assert_eq!(plan.packs[1][0].seed, MemberStart::fresh(&config(), 0, 1).seed, "a retry without checkpoints starts from its sub-seed");
    }

    #[test]
    fn retries_pack_across_the_first_attempts_chunks() {
        let finished = |m, attempt| Saved::Finished(vec![ckpt(m, attempt, 8)]);
        let saved = vec![finished(0, 0), going(1, &[4]), finished(2, 0), going(1, &[4]), finished(4, 0), finished(5, 1)];
        let plan = plan(&config(), 2, &[0, 1, 2, 3, 4, 5], saved);
        assert_eq!(shape(&plan), vec![vec![(1, 1, 4), (3, 1, 4)]]);
        assert_eq!(plan.finished.len(), 4);
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
        let plan = plan_of(vec![going(0, &[6, 8]), going(0, &[8, 10]), going(0, &[2, 4]), going(0, &[])]);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 8), (1, 0, 8)], vec![(2, 0, 4)], vec![(3, 0, 0)]]);
    }

    /// A kill during the last checkpoint writes: member 0 wrote epoch 8, member 1 did not.
    /// Member 0 redoes epochs 7-8 with member 1, so their pack keeps its size; member 2, in
    /// another chunk, and a finished member without a checkpoint at 6 stay finished.
    #[test]
    fn a_pack_cut_short_in_its_last_writes_trains_whole_again() {
        let finished = |m, epochs: &[usize]| Saved::Finished(epochs.iter().rev().map(|&e| ckpt(m, 0, e)).collect());
        let saved = vec![finished(0, &[6, 8]), going(0, &[4, 6]), finished(2, &[6, 8]), finished(3, &[7, 8])];
        let plan = plan(&config(), 2, &[0, 1, 2, 3], saved);
        assert_eq!(shape(&plan), vec![vec![(0, 0, 6), (1, 0, 6)]]);
        let mut done: Vec<usize> = plan.finished.iter().map(|c| c.header.member).collect();
        done.sort_unstable();
        assert_eq!(done, [2, 3]);
        assert!(plan.finished.iter().all(|c| c.header.epoch == 8));
    }

    fn plan_of(saved: Vec<Saved>) -> Plan {
        let owned: Vec<usize> = (0..saved.len()).collect();
        plan(&config(), owned.len(), &owned, saved)
    }
}
