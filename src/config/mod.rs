//! The experiment configuration: typed sections, the layering of preset, file and `--set`
//! overrides, and validation that names the offending key.
//!
//! Two layers, as in ripgrep's low/high args: this module yields a validated [`Config`];
//! `store::RunDir` and `farm::Devices` turn it into what stages run on.

mod merge;
mod validate;

use crate::error::UsageError;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Presets compiled into the binary, so a bare `agra run` needs no file.
pub const PRESETS: &[(&str, &str)] = &[
    ("quick", include_str!("../../experiments/quick.toml")),
    ("paper", include_str!("../../experiments/paper.toml")),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub explain: ExplainConfig,
    pub evaluate: EvaluateConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub signals: usize,
    pub train: usize,
    pub test: usize,
    pub length: usize,
    pub dims: usize,
    pub period: [f64; 2],
    pub noise: f64,
    pub max_perturbations: usize,
    pub amplitude: [f64; 2],
    pub width: [f64; 2],
    pub mse_ref: f64,
    pub optimal_score: f64,
    pub mask_widths: f64,
}

impl DataConfig {
    /// Signals in the split of that name ("train", "test" or "all", train then test), or None
    /// for a name that is not a split.
    pub fn split_len(&self, split: &str) -> Option<usize> {
        match split {
            "train" => Some(self.train),
            "test" => Some(self.test),
            "all" => Some(self.signals),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub kernel: usize,
    pub channels: Vec<usize>,
    pub hidden: usize,
    pub dropout: f64,
    pub score_offset: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub members: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub lr_decay_epochs: usize,
    pub lr_final: f64,
    pub checkpoint_every: usize,
    pub nan_retries: usize,
    pub augment: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainConfig {
    pub methods: Vec<String>,
    pub split: String,
    pub eta: f64,
    pub tol: f64,
    pub max_iter: usize,
    pub smooth_samples: usize,
    pub smooth_sigma: f64,
    pub ig_steps: usize,
    pub keep_members: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    pub random_orders: usize,
    pub sanity_members: usize,
    pub examples: Vec<usize>,
}

/// Where the layers of a configuration come from, in the order they are applied.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub preset: String,
    pub file: Option<std::path::PathBuf>,
    pub sets: Vec<String>,
}

impl Config {
    /// Preset, then file, then each `--set`, merged in that fixed order and validated.
    pub fn load(sources: &Sources) -> Result<Config> {
        let preset = preset_text(&sources.preset)?;
        let mut value: toml::Value = toml::from_str(preset).expect("embedded preset parses");
        let schema = value.clone();
        if let Some(path) = &sources.file {
            let text = read_config_file(path)?;
            let file: toml::Value = toml::from_str(&text).map_err(|e| {
                UsageError::new(format!("config {}: {}", path.display(), e.message()))
            })?;
            merge::overlay(&mut value, file.clone(), &schema, "")?;
            if let Some(message) = type_error(&value) {
                return Err(UsageError::new(format!("config {}: {}", path.display(), culprit(&schema, &file, message))).into());
            }
        }
        for set in &sources.sets {
            let (key, patch) = merge::parse_set(set)?;
            let named = |m: String| UsageError::new(format!("--set {key}: {}", m.trim_start_matches("config: ")));
            merge::overlay(&mut value, patch, &schema, "").map_err(|e| named(e.to_string()))?;
            // serde's messages ("invalid value: integer -1, expected u64") name no key; the
            // set that brought the error in does.
            type_error(&value).map_or(Ok(()), |m| Err(named(m)))?;
        }
        let config = Self::from_value(value)?;
        validate::check_new(&config)?;
        Ok(config)
    }

    /// Parses a complete configuration (a run directory's saved copy, say) and validates it.
    pub fn from_value(value: toml::Value) -> Result<Config> {
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| UsageError::new(format!("config: {}", e.message())))?;
        validate::check(&config)?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// A stable fingerprint of everything that changes results.
    pub fn hash(&self) -> String {
        fingerprint(self)
    }

    /// The fingerprint of what the data set depends on: split files carry it.
    pub fn data_hash(&self) -> String {
        fingerprint(&(self.seed, &self.data))
    }

    /// The fingerprint of what a trained member depends on (seed, data, model, train):
    /// checkpoints carry it, so finished members can be copied into a run that only explains
    /// or evaluates differently.
    pub fn train_hash(&self) -> String {
        // How often checkpoints are written does not change a member.
        let train = TrainConfig { checkpoint_every: 0, ..self.train.clone() };
        fingerprint(&(self.seed, &self.data, &self.model, &train))
    }

    /// Member m's seed: a function of (base seed, m) only, so packing never changes it.
    pub fn member_seed(&self, member: usize) -> u64 {
        splitmix(self.seed ^ splitmix(member as u64 + 0x9e37_79b9))
    }
}

/// The quick preset's sizes the unit tests were calibrated on (64 training signals, 10 epochs
/// at lr 1e-3); tests/common/mod.rs's SMALL gives the end-to-end tests the same.
#[cfg(test)]
pub(crate) const TEST_SIZES: [&str; 4] = ["data.signals=96", "data.train=64", "train.epochs=10", "train.lr=1e-3"];

/// A config file is a few hundred bytes; reading at most a MiB keeps `--config /dev/zero` (or
/// a huge file given by mistake) from filling memory.
fn read_config_file(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let cannot = |e: std::io::Error| UsageError::new(format!("cannot read config {}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path).map_err(cannot)?.take(MAX + 1).read_to_string(&mut text).map_err(cannot)?;
    if text.len() as u64 > MAX {
        return Err(UsageError::new(format!("config {} is larger than 1 MiB", path.display())).into());
    }
    Ok(text)
}

/// serde's messages ("invalid value: integer -1, expected u64") name no key: the file's key
/// that alone brings this very error onto the preset does.
fn culprit(preset: &toml::Value, file: &toml::Value, message: String) -> String {
    let alone = |patch: &toml::Value| {
        let mut value = preset.clone();
        merge::overlay(&mut value, patch.clone(), preset, "").is_ok() && type_error(&value).as_ref() == Some(&message)
    };
    match merge::leaves(file, "").into_iter().find(|(_, patch)| alone(patch)) {
        Some((key, _)) => format!("{key}: {message}"),
        None => message,
    }
}

/// serde's message when `value` does not have the configuration's types and shapes.
fn type_error(value: &toml::Value) -> Option<String> {
    value.clone().try_into::<Config>().err().map(|e| e.message().to_string())
}

fn fingerprint(value: &impl Serialize) -> String {
    let canonical = serde_json::to_string(value).expect("config serialises");
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One round of SplitMix64: spreads nearby integers over the whole seed space.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn preset_text(name: &str) -> Result<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
        UsageError::new(format!("--preset {name}: unknown preset (one of {})", names.join(", "))).into()
    })
}

#[cfg(test)]
mod tests;
