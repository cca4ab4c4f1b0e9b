//! agra: trains many copies of a small CNN and explains their decisions with averaged input
//! gradients (AGRA). `main` turns the pipeline's `Result` into an exit code; `run` reads as the
//! pipeline: data -> train -> explain -> evaluate -> report.

mod cli;
mod config;
mod data;
mod error;
mod explain;
mod farm;
mod metrics;
mod model;
mod progress;
mod report;
mod status;
mod store;
mod train;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command, Global};
use config::{Config, Sources};
use farm::Devices;
use progress::Progress;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::rundir::Stage;
use store::RunDir;

fn main() {
    keep_freed_memory();
    error::short_panics();
    let code = match run() {
        Ok(()) => 0,
        Err(err) => {
            progress::tell(format_args!("agra: {err:#}"));
            error::exit_code(&err)
        }
    };
    std::process::exit(code);
}

fn run() -> Result<()> {
    farm::signals::install()?;
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            let _ = e.print(); // --help, --version
            std::process::exit(0);
        }
        if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            let _ = e.print(); // bare `agra`: the help, listing the commands
            std::process::exit(error::EXIT_USAGE);
        }
        progress::tell(format_args!("agra: {}", cli::one_line(&e)));
        std::process::exit(error::EXIT_USAGE);
    });
    let g = &cli.global;
    model::check_env()?;
    let preset = g.preset.clone().unwrap_or_else(|| "paper".to_string());
    let root = g.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&preset));
    let config = match recorded_config(g, &root)? {
        Some(config) => config,
        None => Config::load(&Sources { preset, file: g.config.clone(), sets: g.sets.clone() })?,
    };
    let devices = Devices::parse(&g.devices)?;
    if let Command::Status = cli.command {
        return status::run(&root, &config, g.json);
    }
    let ui = Progress::new(g.quiet);
    let run = RunDir::open(&root, &config)?;
    match cli.command {
        Command::Data(args) => emit(g, "data", &data::run(&run, &args, &ui)?),
        Command::Train(args) => none_failed(&train_stage(g, &run, &devices, &args, &ui)?),
        Command::Explain(args) => emit(g, "explain", &explain::run(&run, &devices, &args, &ui)?),
        Command::Evaluate => emit(g, "evaluate", &metrics::run(&run, &devices, &ui)?),
        Command::Report => emit(g, "report", &report::run(&run, &ui)?),
        Command::Run(args) => pipeline(g, &run, &devices, &args, &ui),
        Command::Status => unreachable!("handled above"),
    }
}

/// The configuration an existing run directory was made with, when the command names none
/// (no --preset, --config or --set): `agra --run-dir X train` continues run X whatever preset
/// and overrides made it, instead of refusing it for not being the paper preset.
fn recorded_config(g: &Global, root: &Path) -> Result<Option<Config>> {
    if g.preset.is_some() || g.config.is_some() || !g.sets.is_empty() {
        return Ok(None);
    }
    Ok(RunDir::inspect(root)?.map(|(run, _)| run.config))
}

/// glibc returns every large freed block to the kernel and page-faults it back in on the next
/// allocation; a training step allocates the same few-MB activations thousands of times, and
/// that churn cost about 18% of CPU training time (kernel page faults in `perf`). Keeping freed
/// blocks in the heap removes it.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Every stage in order, each skipped when already complete for this config.
fn pipeline(g: &Global, run: &RunDir, devices: &Devices, args: &cli::RunArgs, ui: &Progress) -> Result<()> {
    let started = Instant::now();
    let skip = |stage: Stage| -> Result<bool> {
        // Members are checked by their files too: one whose final checkpoint went missing or
        // was damaged since is trained again rather than left out of every later stage.
        let done = run.is_complete(stage)? && (stage != Stage::Train || train::all_finished(run)?);
        if done {
            ui.note(&format!("{}: already complete, skipped", stage.name()));
        }
        Ok(done)
    };
    if !skip(Stage::Data)? {
        emit(g, "data", &data::run(run, &cli::DataArgs::default(), ui)?)?;
    }
    let mut failed = Vec::new();
    if !skip(Stage::Train)? {
        failed = train_stage(g, run, devices, &args.train, ui)?;
        if !args.allow_partial {
            none_failed(&failed)?;
        }
    }
    stop_if_asked()?;
    // Training marks its stage complete once every member is finished, this shard's or not.
    if args.train.shard.is_some() && !args.allow_partial && !run.is_complete(Stage::Train)? {
        // A job array's task: the other shards train elsewhere, and explain needs them all.
        ui.note("run: this shard is trained; explain and what follows wait for every shard's members (`agra run` without --shard then)");
        return Ok(());
    }
    if !skip(Stage::Explain)? {
        emit(g, "explain", &explain::run(run, devices, &args.explain(), ui)?)?;
    }
    stop_if_asked()?;
    if !skip(Stage::Evaluate)? {
        emit(g, "evaluate", &metrics::run(run, devices, ui)?)?;
    }
    if !skip(Stage::Report)? {
        emit(g, "report", &report::run(run, ui)?)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if g.json {
        progress::say(serde_json::json!({"stage": "run", "seconds": seconds, "run_dir": run.root()}))?;
    } else if !g.quiet {
        progress::say(format_args!("run: all stages complete in {seconds:.1} s; report at {}", run.report_dir().join("report.md").display()))?;
    }
    // With --allow-partial the stages went on without them; the exit code still says so.
    none_failed(&failed)
}

/// Training, with its summary out; the members that failed, which change the exit code.
fn train_stage(g: &Global, run: &RunDir, devices: &Devices, args: &cli::TrainArgs, ui: &Progress) -> Result<Vec<usize>> {
    let summary = train::run(run, devices, args, ui)?;
    emit(g, "train", &summary)?;
    Ok(summary.failed)
}

/// A signal that arrived after training or explain last looked (during its final writes) stops
/// the pipeline before the next stage, as one arriving a moment earlier would have.
fn stop_if_asked() -> Result<()> {
    if farm::signals::stop_requested() {
        return Err(error::Interrupted.into());
    }
    Ok(())
}

fn none_failed(failed: &[usize]) -> Result<()> {
    if !failed.is_empty() {
        anyhow::bail!("members {failed:?} diverged on every attempt (see members/*/failed.json; a smaller train.lr may help)");
    }
    Ok(())
}

/// A stage's summary: one JSON line with --json, else the stage's human form.
fn emit<S: Serialize + status::Human>(g: &Global, stage: &str, summary: &S) -> Result<()> {
    if g.json {
        let mut value = serde_json::to_value(summary)?;
        value["stage"] = serde_json::Value::from(stage);
        progress::say(value)?;
    } else if !g.quiet {
        progress::say(format_args!("{stage}: {}", summary.human()))?;
    }
    Ok(())
}
