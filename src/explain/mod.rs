//! `agra explain`: every attribution method for every finished member, and its AGRA version
//! (mean and per-timestep std over members), computed in packs on the devices, reduced there,
//! and exported as .npy (and safetensors on request) with a manifest.

mod batching;
mod descent;
pub mod export;
mod gradient;
mod noise;
mod objective;
pub mod resume;

use crate::cli::ExplainArgs;
use crate::data::{self, Split};
use crate::error::UsageError;
use crate::farm::{self, Devices, Worker};
use crate::model::native::host::Kernels;
use crate::model::{Architecture, PackedCnn};
use crate::progress::Progress;
use crate::store::rundir::Stage;
use crate::store::RunDir;
use anyhow::Result;
pub use export::{load_methods, MethodArrays};
pub use noise::PairIds;
pub use objective::Objective;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One attribution method, run on a chunk of [S, P, dims, T] inputs of a pack.
pub trait Method {
    fn name(&self) -> &'static str;
    /// Forward rows each (signal, member) pair needs at once (noise samples, IG points).
    fn rows_per_pair(&self) -> usize;
    fn attribute(&self, objective: &Objective, x0: &Tensor, ids: &PairIds) -> Result<Output>;
    /// Whether the method iterates per pair until it converges (see `explain_pack`).
    fn iterative(&self) -> bool {
        false
    }
}

/// A method's result for a chunk: tensors over [S, P] pairs, on the device.
pub struct Output {
    pub attribution: Tensor,              // [S, P, dims, T]
    pub iterations: Option<Tensor>,       // [S, P] i64
    pub converged: Option<Tensor>,        // [S, P] bool
    pub completeness_gap: Option<Tensor>, // [S, P]
}

impl Output {
    pub fn plain(attribution: Tensor) -> Output {
        Output { attribution, iterations: None, converged: None, completeness_gap: None }
    }

    fn concat(parts: Vec<Output>) -> Output {
        let cat = |pick: fn(&Output) -> Option<&Tensor>| -> Option<Tensor> {
            let items: Option<Vec<&Tensor>> = parts.iter().map(pick).collect();
            items.map(|items| Tensor::cat(&items, 0))
        };
        Output {
            attribution: cat(|o| Some(&o.attribution)).expect("every chunk has an attribution"),
            iterations: cat(|o| o.iterations.as_ref()),
            converged: cat(|o| o.converged.as_ref()),
            completeness_gap: cat(|o| o.completeness_gap.as_ref()),
        }
    }
}

/// The methods of the config, built for one device.
pub fn methods(config: &crate::config::Config, device: Device) -> Vec<Box<dyn Method>> {
    let e = &config.explain;
    let wants = |m: &str| e.methods.iter().any(|x| x == m);
    let mut out: Vec<Box<dyn Method>> = Vec::new();
    let descent = |smooth| descent::Descent { eta: e.eta, tol: e.tol, max_iter: e.max_iter, smooth };
    // gxi is derived from grad's attribution, so grad runs whenever gxi is asked for.
    if wants("grad") || wants("gxi") {
        out.push(Box::new(descent(None)));
    }
    if wants("smoothgrad") {
        let bank = noise::NoiseBank::new(config.seed, config.data.dims as i64, config.data.length as i64, device);
        out.push(Box::new(descent(Some(descent::Smooth { samples: e.smooth_samples, sigma: e.smooth_sigma, bank }))));
    }
    if wants("saliency") {
        out.push(Box::new(gradient::Saliency));
    }
    if wants("ig") {
        out.push(Box::new(gradient::IntegratedGradients { steps: e.ig_steps }));
    }
    out
}

/// The methods a pack's result holds, in `explain_pack`'s order, with their per-pair arrays
/// (what a kept pack must have to be taken back).
pub fn layout(config: &crate::config::Config) -> Vec<(&'static str, resume::Extras)> {
    use resume::Extras;
    let wants = |m: &str| config.explain.methods.iter().any(|x| x == m);
    let all = [
        ("gxi", Extras::None),
        ("grad", Extras::Descent),
        ("smoothgrad", Extras::Descent),
        ("saliency", Extras::None),
        ("ig", Extras::Gap),
    ];
    all.into_iter().filter(|(name, _)| wants(name)).collect()
}

/// One pack's results: per method, per-member tensors on the host and the pack's partial
/// reduction (mean and sum of squared deviations over its members), made on the device.
pub struct PackResult {
    pub positions: Vec<usize>,
    pub methods: Vec<(String, MethodPart)>,
}

pub struct MethodPart {
    pub members: Vec<f32>,          // [P, S, dims, T]
    pub mean: Vec<f32>,             // [S, dims, T]
    pub m2: Vec<f32>,               // [S, dims, T]
    pub iterations: Option<Vec<i64>>, // [P, S]
    pub converged: Option<Vec<u8>>,   // [P, S]
    pub gap: Option<Vec<f32>>,        // [P, S]
    pub seconds: f64,
    pub evaluations: f64,
}

/// Explains the signals `x` ([S, dims, T] on the host) with a pack of members on `worker`;
/// also the most rows one forward/backward took.
pub fn explain_pack(
    config: &crate::config::Config,
    arch: &Architecture,
    worker: &Worker,
    weights: &[(usize, usize, Tensor)], // (position in output, member id, weights)
    signals: &Split,
    max_batch: usize,
) -> Result<(PackResult, usize)> {
    let device = worker.device;
    // The descent's shapes shrink as pairs converge; cuDNN's benchmark mode would time its
    // algorithms again for every new shape (it made explain 35x slower on an H100).
    tch::Cuda::cudnn_set_benchmark(false);
    let vectors: Vec<Tensor> = weights.iter().map(|(_, _, w)| w.shallow_clone()).collect();
    let mut model = PackedCnn::from_members(arch, &vectors, device);
    // Only input gradients are wanted: weights outside the graph keep autograd from tracking them.
    model.flat = model.flat.detach();
    let objective = Objective::new(&model, config.data.optimal_score).with_max_rows(max_batch).with_kernels(Kernels::from_env());
    let (s, p) = (signals.len() as i64, weights.len() as i64);
    let x = Tensor::from_slice(&signals.perturbed).view([s, 1, arch.dims, arch.length]).to_device(device);
    // [S, 1, dims, T] -> [S, P, dims, T]: every member explains every signal.
    let x0 = x.expand([s, p, arch.dims, arch.length], false).contiguous();
    let ids = PairIds {
        signals: Tensor::arange(s, (Kind::Int64, device)),
        members: Tensor::from_slice(&weights.iter().map(|(_, m, _)| *m as i64).collect::<Vec<_>>()).to_device(device),
    };
    let mut parts = Vec::new();
    for method in methods(config, device) {
        let started = Instant::now();
        // An iterative method takes every signal at once: the objective evaluates the pairs
        // still descending in full pieces of `max_batch` rows, where fixed chunks would run
        // ever emptier as their pairs converge.
        let per_chunk = if method.iterative() {
            s as usize
        } else {
            batching::chunk_signals(max_batch, p as usize, method.rows_per_pair())
        };
        let out = batching::batched(s, per_chunk, |start, len| {
            method.attribute(&objective, &x0.narrow(0, start, len), &ids.narrow(start, len))
        })?;
        let evaluations = out.iterations.as_ref().map_or((s * p) as f64, |it| f64::try_from(it.sum(Kind::Float)).unwrap_or(0.0))
            * method.rows_per_pair() as f64;
        if method.name() == "grad" {
            if config.explain.methods.iter().any(|m| m == "gxi") {
                let gxi = Output::plain(&out.attribution * &x0);
                parts.push(("gxi".to_string(), download(&gxi, started, evaluations)?));
            }
            if !config.explain.methods.iter().any(|m| m == "grad") {
                continue;
            }
        }
        parts.push((method.name().to_string(), download(&out, started, evaluations)?));
    }
    let result = PackResult { positions: weights.iter().map(|(pos, _, _)| *pos).collect(), methods: parts };
    Ok((result, objective.peak_rows()))
}

/// Moves a pack's output to the host as member-major arrays, with the pack's mean and sum of
/// squared deviations over members reduced on the device.
fn download(out: &Output, started: Instant, evaluations: f64) -> Result<MethodPart> {
    let host_f32 = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::try_from(&t.to_device(Device::Cpu).contiguous().view([-1]))?) };
    // [S, P, dims, T] -> [P, S, dims, T]
    let a = out.attribution.to_kind(Kind::Float);
    let mean = a.mean_dim(1, true, Kind::Float);
    let m2 = (&a - &mean).square().sum_dim_intlist(1, false, Kind::Float);
    let pairs = |t: &Tensor| t.transpose(0, 1).contiguous(); // [S, P] -> [P, S]
    let part = MethodPart {
        members: host_f32(&a.transpose(0, 1))?,
        mean: host_f32(&mean.squeeze_dim(1))?,
        m2: host_f32(&m2)?,
        iterations: out.iterations.as_ref().map(|t| Vec::try_from(&pairs(t).to_device(Device::Cpu).view([-1]))).transpose()?,
        converged: out
            .converged
            .as_ref()
            .map(|t| Vec::try_from(&pairs(t).to_kind(Kind::Uint8).to_device(Device::Cpu).view([-1])))
            .transpose()?,
        gap: out.completeness_gap.as_ref().map(|t| host_f32(&pairs(t))).transpose()?,
        seconds: started.elapsed().as_secs_f64(),
        evaluations,
    };
    Ok(part)
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub members: Vec<usize>,
    pub signals: usize,
    pub split: String,
    pub methods: Vec<export::MethodSummary>,
    pub memory: Memory,
    pub seconds: f64,
}

/// What explain held at most: `--max-batch` bounds the rows, and the rows the memory.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// Most (member x signal x sample) rows in one forward/backward (0: every pack was kept
    /// from an interrupted explain).
    pub peak_rows: usize,
    /// The process's peak resident size (under `agra run`, training's included).
    pub peak_host_bytes: u64,
    /// Per CUDA device: how far its free memory fell below what was free when explain began.
    /// libtorch's allocator keeps what a pack took, so asking after each pack sees the pack's
    /// peak; blocks a training run in the same process left cached are reused and not counted,
    /// and other processes on the device count.
    pub peak_device_bytes: std::collections::BTreeMap<String, u64>,
}

pub fn run(run: &RunDir, devices: &Devices, args: &ExplainArgs, ui: &Progress) -> Result<Summary> {
    let started = Instant::now();
    let config = &run.config;
    let arch = Architecture::new(&config.model, config.data.dims, config.data.length);
    let split = args.split.clone().unwrap_or_else(|| config.explain.split.clone());
    // Members may have been trained elsewhere and copied in: the data is a pure function of
    // the config, so make it here if it is missing.
    crate::data::ensure(run, ui)?;
    let _polling = crate::farm::signals::polling();
    let signals = load_signals(run, &split)?;
    let members = finished_members(run, &arch, args.allow_partial, ui)?;
    let _lock = run.stage_lock("explain")?;
    let methods = run.config.explain.methods.iter().map(|m| run.explain_dir().join(m));
    crate::store::remove_stale_temps(methods.chain([resume::dir(run)]))?;
    run.stage_started(Stage::Explain, &devices.names())?;

    let pack = args.pack.unwrap_or_else(|| farm::default_explain_pack(devices, members.len(), arch.numel() as u64 * 4));
    // Each kind of device with the convolution layout it computes with (AGRA_CONV changes it).
    let mut kinds: Vec<String> = devices
        .workers
        .iter()
        .map(|w| format!("{}:{:?}", if w.device.is_cuda() { "cuda" } else { "cpu" }, crate::model::ConvLayout::for_device(w.device)))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let basis = resume::Basis {
        config_hash: config.hash(),
        split: split.clone(),
        max_batch: args.max_batch,
        devices: kinds.join(","),
        kernels: format!("{:?}", Kernels::from_env()),
    };
    let (mut results, jobs) = resumed_packs(run, &basis, &members, pack, &signals, ui);
    // With one pack (one GPU) there is nothing to go on from: keeping it would only cost a write.
    let keep = results.len() + jobs.len() > 1;
    let warned = AtomicBool::new(false);
    let bar = ui.bar("explain", jobs.len() as u64);
    let free_before: Vec<Option<u64>> = devices.workers.iter().map(farm::worker_free_bytes).collect();
    let least_free: Vec<AtomicU64> = devices.workers.iter().map(|_| AtomicU64::new(u64::MAX)).collect();
    let peak_rows = AtomicUsize::new(0);
    let computed = farm::run_queue(&devices.workers, jobs, |worker, (c, key, job)| {
        let max_batch = args.max_batch.unwrap_or_else(|| farm::default_max_batch(worker.device, arch.activations()));
        let (result, rows) = explain_pack(config, &arch, worker, &job, &signals, max_batch)?;
        peak_rows.fetch_max(rows, Ordering::Relaxed);
        if let Some(free) = farm::worker_free_bytes(worker) {
            least_free[devices.slot(worker)].fetch_min(free, Ordering::Relaxed);
        }
        // Keeping a pack only saves time later: a pack that cannot be kept is still a result.
        if let Err(e) = keep.then(|| resume::save(run, c, &key, &result)).transpose() {
            if !warned.swap(true, Ordering::Relaxed) {
                ui.warn(&format!("explain: could not keep finished packs for a resume: {e:#}"));
            }
        }
        bar.inc(1);
        Ok((c, result))
    });
    bar.finish_and_clear();
    if crate::farm::signals::stop_requested() {
        return Err(crate::error::Interrupted.into());
    }
    results.extend(computed.into_iter().collect::<Result<Vec<_>>>()?);
    results.sort_by_key(|(c, _)| *c);
    let results = results.into_iter().map(|(_, r)| r).collect();
    let ids: Vec<usize> = members.iter().map(|(m, _)| *m).collect();
    let shape = [signals.len(), config.data.dims, config.data.length];
    let methods = export::write_all(run, &ids, &shape, &split, args, results)?;
    let memory = Memory {
        peak_rows: peak_rows.into_inner(),
        peak_host_bytes: farm::peak_resident_bytes(),
        peak_device_bytes: devices
            .workers
            .iter()
            .zip(free_before.iter().zip(least_free))
            .filter_map(|(w, (before, least))| before.map(|b| (w.name(), b.saturating_sub(least.into_inner().min(b)))))
            .fold(std::collections::BTreeMap::new(), |mut held, (device, bytes)| {
                let most: &mut u64 = held.entry(device).or_default();
                *most = (*most).max(bytes);
                held
            }),
    };
    let summary = Summary { members: ids, signals: signals.len(), split, methods, memory, seconds: started.elapsed().as_secs_f64() };
    run.stage_finished(Stage::Explain, summary.seconds)?;
    // Written out: the kept packs are no longer needed (a leftover is harmless, keyed).
    let _ = std::fs::remove_dir_all(resume::dir(run));
    Ok(summary)
}

/// A pack: its index, its key, and its members as (position in output, member id, weights).
type Job = (usize, String, Vec<(usize, usize, Tensor)>);

/// Splits the members into packs and takes back the results an interrupted explain of the
/// same run kept (see `resume`); the rest are the jobs still to compute.
fn resumed_packs(
    run: &RunDir,
    basis: &resume::Basis,
    members: &[(usize, Vec<f32>)],
    pack: usize,
    signals: &Split,
    ui: &Progress,
) -> (Vec<(usize, PackResult)>, Vec<Job>) {
    let values = signals.len() * signals.row_len();
    let layout = layout(&run.config);
    let (mut done, mut jobs) = (Vec::new(), Vec::new());
    for (c, chunk) in members.chunks(pack).enumerate() {
        let key = resume::key(basis, &chunk.iter().map(|(m, w)| (*m, w.as_slice())).collect::<Vec<_>>());
        let positions: Vec<usize> = (c * pack..c * pack + chunk.len()).collect();
        let sizes = [chunk.len() * values, values, chunk.len() * signals.len()];
        match resume::load(run, c, &key, &positions, &layout, sizes) {
            Ok(Some(result)) => done.push((c, result)),
            found => {
                if let Err(e) = found {
                    ui.warn(&format!("explain: {e:#}; computing it again"));
                }
                let job = chunk.iter().zip(positions).map(|((m, w), pos)| (pos, *m, Tensor::from_slice(w))).collect();
                jobs.push((c, key, job));
            }
        }
    }
    if !done.is_empty() {
        ui.note(&format!("explain: {} of {} packs kept from an interrupted run", done.len(), done.len() + jobs.len()));
    }
    (done, jobs)
}

/// The split to explain; `all` is train then test, so signal ids are global.
pub fn load_signals(run: &RunDir, split: &str) -> Result<Split> {
    let signals = match split {
        "all" => Split::concat(&data::read(run, "train")?, &data::read(run, "test")?),
        name => data::read(run, name)?,
    };
    if signals.is_empty() {
        return Err(UsageError::new(format!("the {split} split of {} has no signals", run.root().display())).into());
    }
    Ok(signals)
}

/// Every finished member's weights; missing or failed ones are an error unless
/// `allow_partial`, and never averaged in silently.
fn finished_members(run: &RunDir, arch: &Architecture, allow_partial: bool, ui: &Progress) -> Result<Vec<(usize, Vec<f32>)>> {
    let mut finished = Vec::new();
    let mut absent = Vec::new();
    let mut trainable = false;
    for m in 0..run.config.train.members {
        match crate::train::member_state(run, arch, m)? {
            crate::train::MemberStanding { state: "finished", checkpoint: Some(c), .. } => finished.push((m, c.weights)),
            s => {
                trainable |= s.state != "failed";
                absent.push(format!("{m} ({})", s.describe()));
            }
        }
    }
    if !absent.is_empty() {
        let list = absent.join(", ");
        if !allow_partial || finished.is_empty() {
            // Training again cannot finish a member that diverged on every attempt.
            let next = match (trainable, finished.is_empty()) {
                (true, true) => "run `agra train` first",
                (true, false) => "run `agra train` first or pass --allow-partial",
                (false, true) => "every one diverged on every attempt: nothing to explain (a smaller train.lr, in a new --run-dir, may help)",
                (false, false) => "they diverged on every attempt: pass --allow-partial to explain the others",
            };
            return Err(UsageError::new(format!("explain: members not finished: {list}; {next}")).into());
        }
        ui.warn(&format!("explain: leaving out members {list}"));
    }
    Ok(finished)
}

#[cfg(test)]
mod tests;
