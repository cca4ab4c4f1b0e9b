//! The run directory: its layout, the resolved config it was made with, and `run.json`, the
//! metadata every stage updates (versions, devices, start and end times).
//!
//! A run directory belongs to one configuration for life: opening it with another is refused,
//! so an existing run is never overwritten by mistake.

use super::lock::Lock;
use crate::config::Config;
use crate::error::UsageError;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const META: &str = "run.json";
const CONFIG: &str = "config.toml";
/// Entries agra itself creates (and `slurm/`, where the Slurm scripts put their logs); anything
/// else in a directory without `run.json` is foreign.
const OURS: &[&str] = &[META, CONFIG, "locks", "data", "members", "explain", "evaluate", "report", "slurm"];
/// The empty file `open` writes and removes to check that a new run directory is writable.
const WRITE_PROBE: &str = ".agra-write-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Data,
    Train,
    Explain,
    Evaluate,
    Report,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::Data, Stage::Train, Stage::Explain, Stage::Evaluate, Stage::Report];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Data => "data",
            Stage::Train => "train",
            Stage::Explain => "explain",
            Stage::Evaluate => "evaluate",
            Stage::Report => "report",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageMeta {
    pub started: Option<String>,
    pub finished: Option<String>,
    pub devices: Vec<String>,
    pub seconds: Option<f64>,
    /// Training's pack size per shard and kind of kernels, where a member's rounding depends on
    /// it (`farm::pack_key`), so a run resumed elsewhere packs as it began.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packs: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub config_hash: String,
    pub agra_version: String,
    pub git_commit: Option<String>,
    pub libtorch_version: String,
    pub created: String,
    pub stages: BTreeMap<String, StageMeta>,
}

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    pub config: Config,
}

impl RunDir {
    /// Opens (creating if needed) the run directory for `config`. Refuses a directory made with
    /// another config, and a non-empty directory that agra did not make.
    pub fn open(root: &Path, config: &Config) -> Result<RunDir> {
        refuse_file(root)?;
        if !root.join(META).exists() {
            refuse_foreign(root)?;
        }
        std::fs::create_dir_all(root).map_err(|e| {
            UsageError::new(format!("cannot create run directory {}: {e}", root.display()))
        })?;
        let run = RunDir { root: root.to_path_buf(), config: config.clone() };
        let _guard = run.meta_lock()?;
        // run.json and config.toml, the root's only files, are written under this lock.
        super::remove_stale_temps([root])?;
        match run.read_meta()? {
            Some(meta) => run.check_same_config(&meta)?,
            None => run.initialise()?,
        }
        Ok(run)
    }

    /// A handle on a run directory that may not exist yet, for reading only (`status`).
    pub fn unopened(root: &Path, config: &Config) -> RunDir {
        RunDir { root: root.to_path_buf(), config: config.clone() }
    }

    /// Reads an existing run directory without writing anything (for `status`).
    /// run.json without config.toml, or a config.toml that is not the one run.json records, is
    /// refused: a run's outputs mean nothing without the configuration that made them.
    pub fn inspect(root: &Path) -> Result<Option<(RunDir, Meta)>> {
        let path = root.join(CONFIG);
        if !path.exists() {
            if root.join(META).exists() {
                return Err(UsageError::new(format!(
                    "{} is missing (run.json is there): restore it, or start again in another --run-dir",
                    path.display()
                ))
                .into());
            }
            return Ok(None);
        }
        let run = RunDir { root: root.to_path_buf(), config: Self::saved_config(&path)? };
        let meta = run.read_meta()?.unwrap_or_default();
        if !meta.config_hash.is_empty() && meta.config_hash != run.config.hash() {
            return Err(UsageError::new(format!(
                "{} makes config {}, but {} records {:?}: one of the two was edited or damaged; restore it, or start again in another --run-dir",
                path.display(),
                run.config.hash(),
                root.join(META).display(),
                meta.config_hash
            ))
            .into());
        }
        Ok(Some((run, meta)))
    }

    /// The configuration a run directory's config.toml (`path`) holds.
    fn saved_config(path: &Path) -> Result<Config> {
        let text = super::read_text(path).map_err(|e| UsageError::new(format!("{} is damaged: {e}", path.display())))?;
        let value: toml::Value = toml::from_str(&text)
            .map_err(|e| UsageError::new(format!("{}: {}", path.display(), e.message())))?;
        Config::from_value(value).map_err(|e| UsageError::new(format!("{}: {e:#}", path.display())).into())
    }

    fn initialise(&self) -> Result<()> {
        let probe = self.root.join(WRITE_PROBE);
        std::fs::write(&probe, b"").map_err(|e| {
            UsageError::new(format!("run directory {} is not writable: {e}", self.root.display()))
        })?;
        let _ = std::fs::remove_file(probe);
        let header = format!("# agra run configuration, hash {}\n", self.config.hash());
        super::write_atomic(&self.root.join(CONFIG), (header + &self.config.to_toml()).as_bytes())?;
        let meta = Meta {
            config_hash: self.config.hash(),
            agra_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("AGRA_GIT_COMMIT").map(str::to_string),
            libtorch_version: env!("AGRA_LIBTORCH_VERSION").to_string(),
            created: now(),
            stages: BTreeMap::new(),
        };
        self.write_meta(&meta)
    }

    pub fn check_same_config(&self, meta: &Meta) -> Result<()> {
        if meta.config_hash == self.config.hash() {
            return Ok(());
        }
        let saved = Self::saved_config(&self.root.join(CONFIG)).ok();
        if saved.as_ref().is_some_and(|saved| saved.hash() == self.config.hash()) {
            // This is the run's own config.toml: what names another is run.json.
            return Err(UsageError::new(format!(
                "{} is damaged: it records config {:?}, but the run's config.toml makes {}; restore it, or start again in another --run-dir",
                self.root.join(META).display(),
                meta.config_hash,
                self.config.hash()
            ))
            .into());
        }
        let differs = saved.and_then(|saved| first_difference(&saved, &self.config));
        let at = differs.map(|k| format!(" (first difference: {k})")).unwrap_or_default();
        Err(UsageError::new(format!(
            "run directory {} was made with config {}, not this one {}{at}; use another --run-dir, or go on with its own: `agra --run-dir {} <command>` without --preset, --config or --set",
            self.root.display(),
            meta.config_hash,
            self.config.hash(),
            self.root.display()
        ))
        .into())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn split_path(&self, split: &str) -> PathBuf {
        self.data_dir().join(format!("{split}.safetensors"))
    }
    pub fn member_dir(&self, member: usize) -> PathBuf {
        self.root.join("members").join(format!("m{member:04}"))
    }
    pub fn explain_dir(&self) -> PathBuf {
        self.root.join("explain")
    }
    pub fn evaluate_dir(&self) -> PathBuf {
        self.root.join("evaluate")
    }
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    /// The exclusive lock of one stage (or one member's training).
    pub fn stage_lock(&self, name: &str) -> Result<Lock> {
        Lock::try_acquire(&self.lock_path(name), &format!("{} of {}", name, self.root.display()))
    }

    fn meta_lock(&self) -> Result<Lock> {
        Lock::acquire(&self.lock_path("meta"))
    }

    pub fn read_meta(&self) -> Result<Option<Meta>> {
        let path = self.root.join(META);
        if !path.exists() {
            return Ok(None);
        }
        let damaged = |e: &dyn std::fmt::Display| UsageError::new(format!("{} is damaged: {e}", path.display()));
        let text = super::read_text(&path).map_err(|e| damaged(&e))?;
        Ok(Some(serde_json::from_str(&text).map_err(|e| damaged(&e))?))
    }

    fn write_meta(&self, meta: &Meta) -> Result<()> {
        let text = serde_json::to_string_pretty(meta)?;
        super::write_atomic(&self.root.join(META), text.as_bytes())
    }

    /// Read-modify-write of `run.json` under its lock, safe with concurrent shards.
    pub fn update_meta(&self, edit: impl FnOnce(&mut Meta)) -> Result<()> {
        let _guard = self.meta_lock()?;
        let mut meta = self.read_meta()?.unwrap_or_default();
        edit(&mut meta);
        self.write_meta(&meta)
    }

    /// Marks `stage` running. Evaluate and report are made from the explanations, so a new
    /// explain (of another split, say) or evaluate leaves the stages after it to be done again.
    /// (Data and training are deterministic: their re-runs reproduce what followed them.)
    pub fn stage_started(&self, stage: Stage, devices: &[String]) -> Result<()> {
        self.update_meta(|m| {
            let s = m.stages.entry(stage.name().to_string()).or_default();
            s.started = Some(now());
            s.finished = None;
            s.devices = devices.to_vec();
            if stage >= Stage::Explain {
                for later in Stage::ALL.iter().filter(|&&l| l > stage) {
                    if let Some(s) = m.stages.get_mut(later.name()) {
                        s.finished = None;
                    }
                }
            }
        })
    }

    pub fn stage_finished(&self, stage: Stage, seconds: f64) -> Result<()> {
        self.update_meta(|m| {
            let s = m.stages.entry(stage.name().to_string()).or_default();
            s.finished = Some(now());
            s.seconds = Some(seconds);
        })
    }

    /// Finished, and its outputs still there: a stage whose files were deleted afterwards is
    /// done again instead of being skipped on the word of run.json.
    ///
    /// An explain made with `--allow-partial` before training finished is stale once it has:
    /// the ensemble would otherwise silently stay an average of the members there were then.
    pub fn is_complete(&self, stage: Stage) -> Result<bool> {
        Ok(self.complete_in(self.read_meta()?.as_ref(), stage))
    }

    /// `is_complete` on a run.json already read.
    pub fn complete_in(&self, meta: Option<&Meta>, stage: Stage) -> bool {
        let finished = |stage: Stage| meta.and_then(|m| m.stages.get(stage.name())).is_some_and(|s| s.finished.is_some());
        if !(finished(stage) && self.outputs_present(stage)) {
            return false;
        }
        stage != Stage::Explain || !finished(Stage::Train) || self.explained_members().all(|n| n == Some(self.config.train.members))
    }

    /// How many members each method's manifest averaged (None where it cannot be read: the
    /// stages that read it refuse it with the reason).
    fn explained_members(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.config.explain.methods.iter().map(|m| {
            let text = super::read_text(&self.explain_dir().join(m).join("manifest.json")).ok()?;
            let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
            manifest["members"].as_array().map(Vec::len)
        })
    }

    /// Whether the files a finished `stage` leaves are all there (metrics.json also whole: it
    /// is small, and a damaged one would fail report on every call). Training's members are
    /// checked one by one by `agra train` itself.
    fn outputs_present(&self, stage: Stage) -> bool {
        let outputs = match stage {
            Stage::Data => vec![self.split_path("train"), self.split_path("test")],
            Stage::Train => vec![],
            Stage::Explain => self.config.explain.methods.iter().map(|m| self.explain_dir().join(m).join("manifest.json")).collect(),
            Stage::Evaluate => vec![self.evaluate_dir().join("metrics.json")],
            Stage::Report => vec![self.report_dir().join("report.md")],
        };
        let whole =
            |p: &Path| stage != Stage::Evaluate || super::read_output::<serde_json::Value>(p, "evaluate").is_ok();
        outputs.iter().all(|p| p.exists() && whole(p))
    }
}

/// A non-empty directory without `run.json` holding anything agra does not create. Another
/// agra process may be creating the directory right now (the shards of a job array start
/// together), so its temp files and write probe are ours too; it holds the meta lock, which
/// `open` waits for next.
fn refuse_foreign(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let in_flight = super::is_temp_name(&name_str) || name_str == WRITE_PROBE;
        if !OURS.contains(&name_str.as_ref()) && !in_flight {
            return Err(UsageError::new(format!(
                "{} is not an agra run directory (it holds {:?}); choose an empty or new --run-dir",
                root.display(),
                name
            ))
            .into());
        }
    }
    Ok(())
}

/// A run directory path that names a file.
pub fn refuse_file(root: &Path) -> Result<()> {
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => Err(UsageError::new(format!("run directory {} is a file", root.display())).into()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            // Under a file, in a symlink loop, behind a folder without permission.
            Err(UsageError::new(format!("run directory {}: {e}", root.display())).into())
        }
        _ => Ok(()),
    }
}

/// The first dotted key whose value differs between two configs.
fn first_difference(a: &Config, b: &Config) -> Option<String> {
    fn walk(a: &toml::Value, b: &toml::Value, path: &str) -> Option<String> {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => x.iter().find_map(|(k, va)| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                y.get(k).map_or(Some(p.clone()), |vb| walk(va, vb, &p))
            }),
            _ if a != b => Some(format!("{path} = {a} there, {b} here")),
            _ => None,
        }
    }
    walk(&toml::Value::try_from(a).ok()?, &toml::Value::try_from(b).ok()?, "")
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
