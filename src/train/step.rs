//! How a pack's training steps and test evaluation are computed: with libtorch's ops and
//! autograd (any device), or with the hand-written CPU kernels of `model::native` (the CPU
//! default: about 2x faster there, docs/BENCHMARKS.md). Both update the same flat parameters with
//! the same Adam, so checkpoints, resume and everything after training do not know which ran.

use super::pack::DeviceData;
use super::plan::EpochPlan;
use crate::farm::Worker;
use crate::model::adam::Adam;
use crate::model::native::host::{cpu_slice, cpu_slice_mut, Kernels};
use crate::model::native::Workspace;
use crate::model::{Architecture, PackedCnn};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// Positions [start, start + len) of an epoch's plan, and the data they index.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub data: &'a DeviceData,
    pub plan: &'a EpochPlan,
    pub start: usize,
    pub len: usize,
}

pub trait Steps {
    /// Called once per epoch before its steps, with the epoch's plan.
    fn begin_epoch(&mut self, plan: &EpochPlan);
    /// One step: every member's loss, gradient and Adam update.
    fn step(&mut self, model: &mut PackedCnn, adam: &mut Adam, batch: Batch);
    /// The summed squared training errors per member [P] since the last call (possibly still
    /// being computed on the device).
    fn take_train_sse(&mut self) -> Tensor;
    /// Summed squared test errors per member [P].
    fn test_sse(&mut self, model: &PackedCnn, data: &DeviceData) -> Tensor;
}

pub fn for_worker(kernels: Kernels, worker: &Worker, arch: &Architecture, members: usize) -> Box<dyn Steps> {
    let device = worker.device;
    if kernels.native_on(device) {
        // The lanes are this worker's threads now: libtorch's OpenMP team, left at
        // `worker.threads`, would spin between Adam's few ops while the lanes compute (2x
        // slower with `--devices cpu` on two cores).
        tch::set_num_threads(1);
        Box::new(NativeSteps::new(arch, members, worker.threads))
    } else {
        Box::new(TorchSteps { device, order: None, masks: None, sse: None })
    }
}

/// libtorch ops: one grouped forward and one backward for the whole pack per step.
struct TorchSteps {
    device: Device,
    order: Option<Tensor>,
    masks: Option<Tensor>,
    sse: Option<Tensor>,
}

impl Steps for TorchSteps {
    fn begin_epoch(&mut self, plan: &EpochPlan) {
        self.order = Some(Tensor::from_slice(&plan.order).to_device(self.device));
        self.masks = Some(Tensor::from_slice(&plan.masks).to_device(self.device));
    }

    fn step(&mut self, model: &mut PackedCnn, adam: &mut Adam, batch: Batch) {
        let Batch { data, plan, start, len } = batch;
        let (order, masks) =
            (self.order.as_ref().expect("begin_epoch first"), self.masks.as_ref().expect("begin_epoch first"));
        let (p, len, arch) = (model.members, len as i64, &model.arch);
        let n = (plan.order.len() as i64) / p;
        let idx = order.narrow(0, start as i64 * p, len * p);
        // [len*P, dims, T] -> [len, P*dims, T]: position-major order puts member p's sample in
        // channels p*dims..(p+1)*dims, as the grouped convolution expects.
        let x = data.train_x.index_select(0, &idx).view([len, p * arch.dims, arch.length]);
        // [len*P] -> [len, P] -> [P, len]
        let y = data.train_y.index_select(0, &idx).view([len, p]).transpose(0, 1);
        let mask = masks.view([p, n, arch.hidden]).narrow(1, start as i64, len);
        let sq = (model.forward(&x, Some(&mask)) - y).square();
        // Each member's loss is the mean over its batch; summing over members keeps every
        // member's gradient exactly its own.
        sq.mean_dim(1, false, Kind::Float).sum(Kind::Float).backward();
        adam.step(&mut model.flat);
        let batch_sse = sq.detach().sum_dim_intlist(1, false, Kind::Float);
        self.sse = Some(match self.sse.take() {
            Some(sse) => sse + batch_sse,
            None => batch_sse,
        });
    }

    fn take_train_sse(&mut self) -> Tensor {
        self.sse.take().expect("an epoch has at least one step")
    }

    /// On the device, in chunks so memory stays bounded whatever the split size.
    fn test_sse(&mut self, model: &PackedCnn, data: &DeviceData) -> Tensor {
        let (x, y, p) = (&data.test_x, &data.test_y, model.members);
        let n = x.size()[0];
        // Rows (signals x members) per chunk bounded as in explain, so activations stay in cache on CPU.
        let chunk = (crate::farm::default_max_batch(x.device(), model.arch.activations()) as i64 / p).max(1);
        let mut sse = Tensor::zeros([p], (Kind::Float, x.device()));
        tch::no_grad(|| {
            for start in (0..n).step_by(chunk as usize) {
                let len = chunk.min(n - start);
                // [len, dims, T] -> [len, P*dims, T]: every member sees the same signals.
                let xs = x.narrow(0, start, len).repeat([1, p, 1]);
                let err = model.forward(&xs, None) - y.narrow(0, start, len).unsqueeze(0);
                sse += err.square().sum_dim_intlist(1, false, Kind::Float);
            }
        });
        sse
    }
}

/// The hand-written CPU kernels: each member's step in turn in a workspace whose buffers stay in
/// cache, the pack's members spread over the worker's threads (one workspace each). A member's
/// numbers do not depend on which thread or workspace computed them.
struct NativeSteps {
    lanes: Vec<Lane>,
    sse: Vec<f64>,
}

/// Samples per forward/backward slice of a step, whatever `train.batch_size`: bounds the
/// workspace, and a slice's activations stay nearer the core.
/// Timed in one process, slices interleaved: a step of 32 samples took 12% less time in slices
/// of 16 than in one (20% with the paired Winograd passes), 8 was no faster than 16, 4 slower.
const SLICE: usize = 16;

/// One thread's workspace and a step's samples and targets for it.
struct Lane {
    workspace: Workspace,
    samples: Vec<i64>,
    targets: Vec<f32>,
    /// (slot, squared-error sum) of the members this lane took in the last call.
    done: Vec<(usize, f64)>,
}

impl NativeSteps {
    fn new(arch: &Architecture, members: usize, threads: usize) -> NativeSteps {
        let lanes = (0..threads.clamp(1, members))
            .map(|_| Lane {
                workspace: Workspace::new(arch, SLICE),
                samples: Vec::new(),
                targets: Vec::new(),
                done: Vec::new(),
            })
            .collect();
        NativeSteps { lanes, sse: vec![0.0; members] }
    }

    /// Runs `work(lane, slot)` for every member slot, slot s on lane s % lanes, the lanes on
    /// threads of their own.
    fn each_member(&mut self, members: usize, work: impl Fn(&mut Lane, usize) + Sync) {
        let count = self.lanes.len();
        let run = |(index, lane): (usize, &mut Lane)| (index..members).step_by(count).for_each(|slot| work(lane, slot));
        if count == 1 {
            return run((0, &mut self.lanes[0]));
        }
        std::thread::scope(|scope| {
            for item in self.lanes.iter_mut().enumerate() {
                scope.spawn(move || run(item));
            }
        });
    }
}

impl Steps for NativeSteps {
    fn begin_epoch(&mut self, _plan: &EpochPlan) {}

    fn step(&mut self, model: &mut PackedCnn, adam: &mut Adam, batch: Batch) {
        let Batch { data, plan, start, len } = batch;
        let p = model.members as usize;
        let hidden = model.arch.hidden as usize;
        let n = plan.order.len() / p;
        let (bank, scores) = (cpu_slice(&data.train_x), cpu_slice(&data.train_y));
        let blocks = Blocks::of(model);
        // Each member's step ends with its own Adam update, on its slices of the pack's
        // parameters and moments, while its gradient is in cache. (Gathering a member vector,
        // copying its gradient out and back into a pack-wide one, then a pass over the whole
        // pack, took 5% of a step.) Members are independent, so the numbers are the same.
        let update = adam.host_step();
        let (m, v) = adam.moments_mut();
        let parts = [blocks.split(cpu_slice_mut(&mut model.flat), p), blocks.split(m, p), blocks.split(v, p)];
        let [params, m, v] = parts.map(Vec::into_iter);
        let members: Vec<Mutex<MemberState>> =
            params.zip(m).zip(v).map(|((params, m), v)| Mutex::new(MemberState { params, m, v })).collect();
        self.each_member(p, |lane, slot| {
            lane.samples.clear();
            lane.samples.extend((start..start + len).map(|i| plan.order[i * p + slot]));
            lane.targets.clear();
            lane.targets.extend(lane.samples.iter().map(|&s| scores[s as usize]));
            let masks = &plan.masks[(slot * n + start) * hidden..][..len * hidden];
            let mut member = members[slot].lock().expect("a member's slices");
            let MemberState { params, m, v } = &mut *member;
            lane.workspace.set_param_parts(&params.iter().map(|part| &**part).collect::<Vec<_>>());
            let sse = lane.workspace.train_step(bank, &lane.samples, &lane.targets, masks);
            let grad = &lane.workspace.grad;
            for (((part, range), m), v) in params.iter_mut().zip(blocks.ranges()).zip(m.iter_mut()).zip(v.iter_mut()) {
                update.apply(part, &grad[range], m, v);
            }
            lane.done.push((slot, sse));
        });
        for lane in &mut self.lanes {
            for (slot, sse) in lane.done.drain(..) {
                self.sse[slot] += sse;
            }
        }
    }

    fn take_train_sse(&mut self) -> Tensor {
        let sse: Vec<f32> = self.sse.iter().map(|&v| v as f32).collect();
        self.sse.fill(0.0);
        Tensor::from_slice(&sse)
    }

    fn test_sse(&mut self, model: &PackedCnn, data: &DeviceData) -> Tensor {
        let (x, y, flat) = (cpu_slice(&data.test_x), cpu_slice(&data.test_y), cpu_slice(&model.flat));
        let all: Vec<i64> = (0..y.len() as i64).collect();
        let blocks = Blocks::of(model);
        self.each_member(model.members as usize, |lane, slot| {
            lane.workspace.set_param_parts(&blocks.parts(flat, slot));
            let mut sse = 0.0f64;
            for chunk in all.chunks(SLICE) {
                let scores = lane.workspace.forward(x, chunk, None);
                sse += scores.iter().zip(chunk).map(|(&s, &i)| ((s - y[i as usize]) as f64).powi(2)).sum::<f64>();
            }
            lane.done.push((slot, sse));
        });
        let mut per_member = vec![0f32; model.members as usize];
        for lane in &mut self.lanes {
            for (slot, sse) in lane.done.drain(..) {
                per_member[slot] = sse as f32;
            }
        }
        Tensor::from_slice(&per_member)
    }
}

/// Where each parameter of a member lives: its block's start in the param-major `flat` (member
/// `slot`'s copy follows `slot` copies of it) and its range in a member's own vector.
struct Blocks(Vec<(usize, std::ops::Range<usize>)>);

impl Blocks {
    fn of(model: &PackedCnn) -> Blocks {
        Blocks(model.arch.params.iter().map(|spec| (model.block_start(spec), spec.member_range())).collect())
    }

    /// Member `slot`'s parameters in `flat`, one slice per parameter.
    fn parts<'a>(&self, flat: &'a [f32], slot: usize) -> Vec<&'a [f32]> {
        self.0.iter().map(|(start, range)| &flat[start + slot * range.len()..][..range.len()]).collect()
    }

    /// Each parameter's range in a member's own vector.
    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.0.iter().map(|(_, range)| range.clone())
    }

    /// A param-major pack buffer cut into every member's slices, [member][parameter].
    fn split<'a>(&self, mut buf: &'a mut [f32], members: usize) -> Vec<Vec<&'a mut [f32]>> {
        let mut out: Vec<Vec<&mut [f32]>> = (0..members).map(|_| Vec::new()).collect();
        let mut consumed = 0;
        for (start, range) in &self.0 {
            assert_eq!(*start, consumed, "parameter blocks back to back");
            let (block, rest) = std::mem::take(&mut buf).split_at_mut(members * range.len());
            consumed += block.len();
            for (slices, part) in out.iter_mut().zip(block.chunks_exact_mut(range.len())) {
                slices.push(part);
            }
            buf = rest;
        }
        out
    }
}

/// A member's slices of the pack's parameters and Adam moments, one per parameter.
struct MemberState<'a> {
    params: Vec<&'a mut [f32]>,
    m: Vec<&'a mut [f32]>,
    v: Vec<&'a mut [f32]>,
}
