//! `agra data`: the ground-truth data set, written once per run directory. `ensure` lets later
//! stages (and concurrent training shards) create it on demand, under a lock.

pub mod generate;
pub mod io;

pub use generate::Split;

use crate::cli::DataArgs;
use crate::error::UsageError;
use crate::progress::Progress;
use crate::store::rundir::Stage;
use crate::store::{lock::Lock, RunDir};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub train: usize,
    pub test: usize,
    pub mean_score: f64,
    pub mean_perturbations: f64,
    pub files: Vec<String>,
}

pub fn run(run: &RunDir, args: &DataArgs, ui: &Progress) -> Result<Summary> {
    ensure(run, ui)?;
    let (train, test) = (read(run, "train")?, read(run, "test")?);
    let mut files = vec![run.split_path("train"), run.split_path("test")];
    if args.export.is_some() {
        let dir = run.data_dir().join("npy");
        let _lock = Lock::acquire(&run.lock_path("data"))?;
        crate::store::remove_stale_temps([&dir])?;
        io::export_npy(&train, &dir, "train")?;
        io::export_npy(&test, &dir, "test")?;
        files.push(dir);
    }
    let all = Split::concat(&train, &test);
    let n = all.len() as f64;
    Ok(Summary {
        train: train.len(),
        test: test.len(),
        mean_score: all.scores.iter().map(|&s| s as f64).sum::<f64>() / n,
        mean_perturbations: all.perturbations.iter().map(Vec::len).sum::<usize>() as f64 / n,
        files: files.iter().map(|p| p.display().to_string()).collect(),
    })
}

/// Generates the splits unless they exist. Concurrent callers wait on one lock and the second
/// finds the work done. A split file deleted after the stage finished is made again (see
/// `RunDir::is_complete`): the data is a pure function of the config.
pub fn ensure(run: &RunDir, ui: &Progress) -> Result<()> {
    if run.is_complete(Stage::Data)? {
        return Ok(());
    }
    let _lock = Lock::acquire(&run.lock_path("data"))?;
    if run.is_complete(Stage::Data)? {
        return Ok(());
    }
    fits_in_memory(&run.config.data)?;
    crate::store::remove_stale_temps([run.data_dir()])?;
    let started = Instant::now();
    run.stage_started(Stage::Data, &["cpu".to_string()])?;
    ui.note(&format!("data: generating {} signals", run.config.data.signals));
    let (train, test) = generate::generate(&run.config.data, run.config.seed);
    let origin = run.config.data_hash();
    io::write_split(&train, &origin, &run.split_path("train"))?;
    io::write_split(&test, &origin, &run.split_path("test"))?;
    run.stage_finished(Stage::Data, started.elapsed().as_secs_f64())
}

/// Generation holds every value of both splits four times (perturbed, ideal and attribution
/// as f32, the mask as u8: 13 bytes) and the encoded file as much again. A config that cannot
/// fit is a mistake to name before allocating, not an abort in the middle of it.
fn fits_in_memory(d: &crate::config::DataConfig) -> Result<()> {
    let values = d.signals as f64 * d.dims as f64 * d.length as f64;
    let need = values * 13.0 * 2.0;
    match crate::farm::host_memory_limit() {
        Some((have, what)) if need > have => Err(UsageError::new(format!(
            "data.signals x data.dims x data.length = {values:.0} values need about {:.1} GB to generate, more than {what}: {:.1} GB",
            need / 1e9,
            have / 1e9
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The run's `train` or `test` split, refused when it is not the one the run's config makes
/// (a file copied in from another run would otherwise be trained on or explained, or index
/// past the end of the model's input, or, of the same shape, quietly give other results).
pub fn read(run: &RunDir, name: &str) -> Result<Split> {
    let path = run.split_path(name);
    let (split, origin) = io::read_split(&path)?;
    let d = &run.config.data;
    let want = d.split_len(name).unwrap_or(0);
    if (split.len(), split.dims, split.length) != (want, d.dims, d.length) {
        return Err(UsageError::new(format!(
            "{} holds {} signals of {} x {} values, but this run's config makes {want} of {} x {}; delete it and agra makes it again",
            path.display(),
            split.len(),
            split.dims,
            split.length,
            d.dims,
            d.length
        ))
        .into());
    }
    if origin.is_some_and(|o| o != run.config.data_hash()) {
        return Err(UsageError::new(format!(
            "{} was made by another config (its seed or data section differ from this run's); delete it and agra makes it again",
            path.display()
        ))
        .into());
    }
    Ok(split)
}
