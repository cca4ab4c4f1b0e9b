//! The command-line contract: subcommands, global options and their parsing.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "agra",
    version,
    about = "Train many copies of a small CNN and explain them with averaged input gradients (AGRA)",
    long_about = "agra reproduces the AGRA paper: it generates 2-D signals whose right explanation is \
                  known, trains an ensemble of CNN members packed several per device, explains them \
                  with GRAD, SmoothGrad, saliency, gradient x input and integrated gradients, and \
                  scores every method and its member average against the ground truth."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Run directory (default: runs/<preset>).
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Configuration preset compiled into the binary (default: paper; with none of --preset,
    /// --config and --set, an existing run directory keeps the configuration it was made with).
    #[arg(long, global = true, value_parser = ["quick", "paper"])]
    pub preset: Option<String>,
    /// TOML file whose keys override the preset.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. --set train.epochs=5 (repeatable, applied last).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Workers: auto (every CUDA device, else one single-threaded CPU worker per core), cpu (one
    /// worker, all cores), or a list such as cuda:0,cuda:1 or cpu,cpu.
    #[arg(long, global = true, default_value = "auto", value_name = "LIST")]
    pub devices: String,
    /// No progress bars or summaries.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output for status and each stage's summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the ground-truth signals, perturbations and scores.
    Data(DataArgs),
    /// Train the ensemble members (resumable, shardable).
    Train(TrainArgs),
    /// Compute every attribution method per member and its AGRA average.
    Explain(ExplainArgs),
    /// Score the explanations against the ground truth.
    Evaluate,
    /// Write the tables and figures of the report.
    Report,
    /// All stages in order, each skipped when already complete.
    Run(RunArgs),
    /// Which stages are complete and which members are finished, in progress or failed.
    Status,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DataArgs {
    /// Also write each array as .npy for Python users.
    #[arg(long, value_parser = ["npy"])]
    pub export: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TrainArgs {
    /// Train only shard I of N (members m with m % N == I), for job arrays.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Members per pack (default: chosen from the device).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub pack: Option<usize>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ExplainArgs {
    /// Explain with the finished members even when some are missing or failed.
    #[arg(long)]
    pub allow_partial: bool,
    /// Split to explain (overrides explain.split).
    #[arg(long, value_parser = ["train", "test", "all"])]
    pub split: Option<String>,
    /// Most (member x signal x sample) rows in one forward/backward (default: 256 on CPU,
    /// 262144 on CUDA; each row holds about 150 KB of activations at the paper's size).
    #[arg(long, value_name = "ROWS", value_parser = at_least_one)]
    pub max_batch: Option<usize>,
    /// Also write safetensors next to the .npy files.
    #[arg(long)]
    pub safetensors: bool,
    /// Members per pack (default: chosen from the device; 1 gives the naive per-member loop).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub pack: Option<usize>,
}

/// A count of members or rows: refused at parse time, before any stage touches the run.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `run` takes the options of `train` and `explain`; `--pack` serves both.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Explain with the finished members even when some are missing or failed.
    #[arg(long)]
    pub allow_partial: bool,
    /// Most (member x signal x sample) rows in one forward/backward of explain.
    #[arg(long, value_name = "ROWS", value_parser = at_least_one)]
    pub max_batch: Option<usize>,
}

impl RunArgs {
    pub fn explain(&self) -> ExplainArgs {
        ExplainArgs { allow_partial: self.allow_partial, max_batch: self.max_batch, pack: self.train.pack, ..ExplainArgs::default() }
    }
}

/// clap's message for a command-line mistake as one line, like every other usage error: its
/// lines up to the usage block (which `--help` shows whole), without the "error:" and "tip:".
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    format!("{}; see --help", lines.join(" ").trim_start_matches("error: "))
}
