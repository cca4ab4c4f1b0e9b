//! Member checkpoints: one safetensors file per checkpointed epoch holding the member's named
//! weights and Adam moments, with its step, epoch, seed, loss history and a content hash in the
//! metadata. Loading verifies the hash, names and shapes, so a torn, truncated or bit-flipped
//! file is reported and skipped in favour of the previous good one: garbage is never loaded.

use crate::model::Architecture;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Checkpoints kept per member: the newest, and one to fall back to if it is damaged.
const KEEP: usize = 2;
const FORMAT: &str = "agra-checkpoint-1";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_mse: f64,
    pub test_mse: f64,
}

/// Everything needed to continue a member exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub member: usize,
    /// The seed actually used: the member seed, or a logged sub-seed after a NaN retry.
    pub seed: u64,
    pub attempt: usize,
    pub epoch: usize,
    pub step: i64,
    pub config_hash: String,
    /// `model.score_offset`, so the file alone says what the network computes:
    /// score = score_offset + net(x).
    pub score_offset: f64,
    pub history: Vec<EpochLog>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub header: Header,
    /// Each [arch.numel()] in `arch.params` order.
    pub weights: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
}

impl Checkpoint {
    /// Whether every weight and Adam moment is finite: training never writes a member whose
    /// state is not, and loading refuses one.
    pub fn all_finite(&self) -> bool {
        [&self.weights, &self.adam_m, &self.adam_v].iter().all(|values| values.iter().all(|v| v.is_finite()))
    }

    /// SHA-256 of the weights alone: equal hashes mean bit-identical members.
    pub fn weights_hash(&self) -> String {
        super::sha256_hex(&[bytes(&self.weights)])
    }
}

pub fn path_for(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:05}.safetensors"))
}

/// Writes the checkpoint atomically, then prunes all but it and the `KEEP - 1` before it.
pub fn save(dir: &Path, arch: &Architecture, ckpt: &Checkpoint) -> Result<PathBuf> {
    let groups = [("w", &ckpt.weights), ("adam_m", &ckpt.adam_m), ("adam_v", &ckpt.adam_v)];
    let mut views = Vec::new();
    for (prefix, values) in groups {
        if values.len() as i64 != arch.numel() {
            bail!("checkpoint of member {}: {prefix} has {} values, expected {}", ckpt.header.member, values.len(), arch.numel());
        }
        let mut offset = 0usize;
        for spec in &arch.params {
            let n = spec.numel() as usize;
            let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
            let view = TensorView::new(Dtype::F32, shape, bytes(&values[offset..offset + n]))?;
            views.push((format!("{prefix}.{}", spec.name), view));
            offset += n;
        }
    }
    let header = serde_json::to_string(&ckpt.header)?;
    let hash = content_hash(&header, ckpt);
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("header".to_string(), header),
        ("content_sha256".to_string(), hash),
    ]);
    let data = sorted_header(safetensors::serialize(views, &Some(metadata))?)?;
    let path = path_for(dir, ckpt.header.epoch);
    super::write_atomic(&path, &data)?;
    // Only older files are pruned: a file of a later epoch (a damaged one, or one copied in)
    // would otherwise outrank every new checkpoint and have each deleted as it was written.
    for old in list(dir)?.into_iter().filter(|p| epoch_of(p) < Some(ckpt.header.epoch)).skip(KEEP - 1) {
        super::remove_if_present(&old)?;
    }
    Ok(path)
}

/// The file's JSON header with its keys sorted. safetensors writes the metadata map in a
/// HashMap's order, which changes from run to run, so equal checkpoints made different files;
/// sorted, they are byte for byte equal (same characters, so the same length and padding).
fn sorted_header(mut data: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(data[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(data[8..8 + n].trim_ascii_end())?;
    let sorted = serde_json::to_vec(&header)?;
    if sorted.len() > n {
        bail!("checkpoint header grew when sorted ({} > {n} bytes)", sorted.len());
    }
    data[8..8 + sorted.len()].copy_from_slice(&sorted);
    data[8 + sorted.len()..8 + n].fill(b' ');
    Ok(data)
}

/// Member `member`'s checkpoint at `path`: one copied in from another member's directory
/// verifies on its own, and would make two members one.
fn load_member(path: &Path, arch: &Architecture, config_hash: &str, member: usize) -> Result<Checkpoint> {
    let ckpt = load(path, arch, config_hash)?;
    if ckpt.header.member != member {
        bail!("a checkpoint of member {}, not {member}", ckpt.header.member);
    }
    Ok(ckpt)
}

/// Member `member`'s newest checkpoint in `dir` that verifies, and a message for each newer
/// one that did not.
pub fn load_latest(dir: &Path, arch: &Architecture, config_hash: &str, member: usize) -> Result<(Option<Checkpoint>, Vec<String>)> {
    let mut damaged = Vec::new();
    for path in list(dir)? {
        match load_member(&path, arch, config_hash, member) {
            Ok(ckpt) => return Ok((Some(ckpt), damaged)),
            Err(e) => damaged.push(format!("{}: {e:#}", path.display())),
        }
    }
    Ok((None, damaged))
}

/// A checkpoint and the file it came from.
pub type Found = (PathBuf, Checkpoint);

/// Every kept checkpoint of member `member` in `dir` that verifies, newest first, with its
/// path, and a message for each that did not.
pub fn load_all(dir: &Path, arch: &Architecture, config_hash: &str, member: usize) -> Result<(Vec<Found>, Vec<String>)> {
    let mut good = Vec::new();
    let mut damaged = Vec::new();
    for path in list(dir)? {
        match load_member(&path, arch, config_hash, member) {
            Ok(ckpt) => good.push((path, ckpt)),
            Err(e) => damaged.push(format!("{}: {e:#}", path.display())),
        }
    }
    Ok((good, damaged))
}

/// Deletes every checkpoint file in `dir`, damaged ones too.
pub fn remove_all(dir: &Path) -> Result<()> {
    list(dir)?.iter().try_for_each(|path| super::remove_if_present(path))
}

/// Checkpoint files of a member, newest first (by epoch: past 99999 the names grow a digit and
/// no longer sort as text).
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter_map(|p| Some((epoch_of(&p)?, p))).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    found.sort_unstable_by(|a, b| b.cmp(a));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The epoch a checkpoint file's name gives (`path_for`'s names; not temp files).
fn epoch_of(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("epoch-")?.strip_suffix(".safetensors")?.parse().ok()
}

pub fn load(path: &Path, arch: &Architecture, config_hash: &str) -> Result<Checkpoint> {
    let data = crate::store::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&data).context("not a safetensors file")?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("not an agra checkpoint");
    }
    let header_json = meta.get("header").context("no header")?;
    let header: Header = serde_json::from_str(header_json).context("damaged header")?;
    if header.config_hash != config_hash {
        bail!("made with config {}, not {config_hash}", header.config_hash);
    }
    let tensors = SafeTensors::deserialize(&data).context("damaged tensor table")?;
    let read = |prefix: &str| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(arch.numel() as usize);
        for spec in &arch.params {
            let name = format!("{prefix}.{}", spec.name);
            let t = tensors.tensor(&name).with_context(|| format!("missing {name}"))?;
            let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
            if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
                bail!("{name} is {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape());
            }
            out.extend(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        Ok(out)
    };
    let ckpt = Checkpoint { weights: read("w")?, adam_m: read("adam_m")?, adam_v: read("adam_v")?, header };
    let expected = meta.get("content_sha256").context("no content hash")?;
    if content_hash(header_json, &ckpt) != *expected {
        bail!("content hash mismatch (corrupted)");
    }
    // Training never writes a diverged member, so this is a file made or edited elsewhere, with
    // its hash recomputed: resuming from it would only diverge, and explaining average NaN in.
    if !ckpt.all_finite() {
        bail!("holds values that are not finite (NaN or infinity)");
    }
    Ok(ckpt)
}

fn content_hash(header: &str, c: &Checkpoint) -> String {
    super::sha256_hex(&[header.as_bytes(), bytes(&c.weights), bytes(&c.adam_m), bytes(&c.adam_v)])
}

fn bytes(values: &[f32]) -> &[u8] {
    // f32 has no padding and any byte pattern is a valid u8: a plain reinterpretation.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

#[cfg(test)]
mod tests;
