use super::*;
use crate::config::{Config, Sources};
use crate::model::init;

fn setup(members: usize) -> (Config, Architecture, Vec<Tensor>) {
    let config = Config::load(&Sources { preset: "quick".into(), ..Default::default() }).unwrap();
    let arch = Architecture::new(&config.model, config.data.dims, config.data.length);
    let weights = (0..members).map(|m| init::member_weights(&arch, 10 + m as u64)).collect();
    (config, arch, weights)
}

fn inputs(arch: &Architecture, s: i64, p: i64) -> Tensor {
    tch::manual_seed(3);
    Tensor::randn([s, p, arch.dims, arch.length], (Kind::Float, Device::Cpu))
}

fn ids(s: i64, p: i64) -> PairIds {
    PairIds { signals: Tensor::arange(s, (Kind::Int64, Device::Cpu)), members: Tensor::arange(p, (Kind::Int64, Device::Cpu)) }
}

/// With either kernels (libtorch's autograd, the hand-written CPU ones).
#[test]
fn input_gradient_matches_finite_differences() {
    let (config, arch, weights) = setup(2);
    let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    for kernels in [Kernels::Libtorch, Kernels::Native] {
        let objective = Objective::new(&model, config.data.optimal_score).with_kernels(kernels);
        let x = inputs(&arch, 1, 2).to_kind(Kind::Double).to_kind(Kind::Float);
        let (_, grad) = objective.loss_and_grad(&x);
        let h = 1e-2;
        for &(p, d, t) in &[(0i64, 0i64, 10i64), (1, 1, 33), (0, 1, 50)] {
            let bump = |sign: f64| {
                let y = x.copy();
                let _ = y.get(0).get(p).get(d).get(t).g_add_scalar_(sign * h);
                f64::try_from(objective.loss(&y).get(0).get(p)).unwrap()
            };
            let numeric = (bump(1.0) - bump(-1.0)) / (2.0 * h);
            let analytic = f64::try_from(grad.get(0).get(p).get(d).get(t)).unwrap();
            let close = (numeric - analytic).abs() < 1e-2 * analytic.abs().max(1.0);
            assert!(close, "{kernels:?} ({p},{d},{t}): {numeric} vs {analytic}");
        }
    }
}

#[test]
fn packed_gradient_of_a_member_equals_its_gradient_alone() {
    let (config, arch, weights) = setup(3);
    let packed = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    let x = inputs(&arch, 4, 3);
    let (_, g) = Objective::new(&packed, config.data.optimal_score).loss_and_grad(&x);
    for m in 0..3 {
        let alone = PackedCnn::from_members(&arch, &weights[m..m + 1], Device::Cpu);
        let (_, g1) = Objective::new(&alone, config.data.optimal_score).loss_and_grad(&x.narrow(1, m as i64, 1));
        let diff = f64::try_from((g.narrow(1, m as i64, 1) - g1).abs().max()).unwrap();
        assert!(diff < 1e-5, "member {m}: {diff}");
    }
}

/// The network is positively homogeneous and its output at 0 is the optimal score, so L is
/// quadratic along the path from 0 and the trapezoid rule is exact for any number of steps: IG
/// is x * dL/dx(x) / 2. With one or two steps a wrong weight (a left or right Riemann sum, an
/// endpoint counted whole) misses completeness by a fraction of L, not by rounding.
#[test]
fn integrated_gradients_are_complete_and_exact() {
    let (config, arch, weights) = setup(2);
    assert_eq!(config.model.score_offset, config.data.optimal_score, "the test's premise");
    let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    for kernels in [Kernels::Libtorch, Kernels::Native] {
        let objective = Objective::new(&model, config.data.optimal_score).with_kernels(kernels);
        // Freshly initialised members score unit-variance noise within ~0.02 of the offset.
        let x = inputs(&arch, 3, 2) * 30.0;
        let expected = objective.loss(&x) - objective.loss(&x.zeros_like());
        let scale = f64::try_from(expected.abs().max()).unwrap();
        assert!(scale > 0.05, "a test input the network scores away from the optimum: {scale}");
        let half_saliency = &x * objective.loss_and_grad(&x).1 / 2.0;
        for steps in [1, 2, 16] {
            let out = gradient::IntegratedGradients { steps }.attribute(&objective, &x, &ids(3, 2)).unwrap();
            let gap = f64::try_from(out.completeness_gap.unwrap().max()).unwrap();
            assert!(gap < 1e-4 * scale, "{kernels:?}, {steps} steps: gap {gap} vs L(x) - L(0) up to {scale}");
            let off = f64::try_from((&out.attribution - &half_saliency).abs().max()).unwrap();
            let size = f64::try_from(half_saliency.abs().max()).unwrap();
            assert!(off < 1e-4 * size, "{kernels:?}, {steps} steps: {off} from x * dL/dx / 2 (largest {size})");
        }
    }
}

#[test]
fn grad_stops_each_pair_at_the_tolerance() {
    let (_, arch, weights) = setup(2);
    let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    let x = inputs(&arch, 4, 2);
    // A target just above the current scores: reachable by a short descent for most pairs.
    let start = Objective::new(&model, 0.0).loss(&x).sqrt(); // |f(x)|
    let target = f64::try_from(start.mean(Kind::Float)).unwrap() + 0.05;
    let objective = Objective::new(&model, target);
    let (tol, max_iter) = (1e-4, 400);
    let method = descent::Descent { eta: 50.0, tol, max_iter, smooth: None };
    let out = method.attribute(&objective, &x, &ids(4, 2)).unwrap();
    let converged: Vec<u8> = Vec::try_from(&out.converged.unwrap().to_kind(Kind::Uint8).reshape([-1])).unwrap();
    let iterations: Vec<i64> = Vec::try_from(&out.iterations.unwrap().reshape([-1])).unwrap();
    let final_loss: Vec<f32> = Vec::try_from(&objective.loss(&(&x - &out.attribution)).reshape([-1])).unwrap();
    assert!(converged.contains(&1), "some pair converges: {final_loss:?}");
    for (i, &c) in converged.iter().enumerate() {
        if c == 1 {
            assert!((final_loss[i] as f64) < tol);
            // It stopped when it got there, not at the common maximum.
            assert!(iterations[i] < max_iter as i64, "pair {i}: {iterations:?}");
        } else {
            assert_eq!(iterations[i], max_iter as i64, "a pair that never converged ran every step");
        }
    }
}

#[test]
fn a_diverging_descent_stops_and_stays_finite() {
    let (config, arch, weights) = setup(2);
    let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    let objective = Objective::new(&model, config.data.optimal_score + 5.0);
    let (s, p, max_iter) = (3, 2, 50);
    let x = inputs(&arch, s, p);
    let start: Vec<f32> = Vec::try_from(&objective.loss(&x).reshape([-1])).unwrap();
    // A step so large that the first one overshoots the target by thousands.
    let method = descent::Descent { eta: 1e7, tol: 1e-12, max_iter, smooth: None };
    let out = method.attribute(&objective, &x, &ids(s, p)).unwrap();
    assert!(bool::try_from(out.attribution.isfinite().all()).unwrap());
    let iterations: Vec<i64> = Vec::try_from(&out.iterations.unwrap().reshape([-1])).unwrap();
    let converged: Vec<u8> = Vec::try_from(&out.converged.unwrap().to_kind(Kind::Uint8).reshape([-1])).unwrap();
    let end: Vec<f32> = Vec::try_from(&objective.loss(&(&x - &out.attribution)).reshape([-1])).unwrap();
    for i in 0..iterations.len() {
        assert_eq!(converged[i], 0);
        assert!(iterations[i] < max_iter as i64, "pair {i} ran on: {iterations:?}");
        // It stopped at the first point past the limit, and only there.
        assert!(end[i] > 100.0 * start[i], "pair {i}: {} from {}", end[i], start[i]);
    }
}

#[test]
fn smoothgrad_is_deterministic_for_a_seed() {
    let (config, arch, weights) = setup(2);
    let model = PackedCnn::from_members(&arch, &weights, Device::Cpu);
    let objective = Objective::new(&model, config.data.optimal_score);
    let x = inputs(&arch, 2, 2);
    let run = |seed| {
        let bank = noise::NoiseBank::new(seed, arch.dims, arch.length, Device::Cpu);
        let method = descent::Descent { eta: 0.1, tol: 1e-9, max_iter: 5, smooth: Some(descent::Smooth { samples: 3, sigma: 0.1, bank }) };
        method.attribute(&objective, &x, &ids(2, 2)).unwrap().attribution
    };
    assert!(run(1).equal(&run(1)));
    assert!(!run(1).equal(&run(2)));
}

#[test]
fn the_agra_reduction_is_the_mean_over_members_whatever_the_packing() {
    let (mut config, arch, weights) = setup(5);
    config.explain.methods = vec!["saliency".into()];
    let worker = crate::farm::Worker { device: Device::Cpu, threads: 1 };
    let (train, _) = crate::data::generate::generate(&config.data, config.seed);
    let signals = train.select(&[0, 1, 2]);
    let job = |range: std::ops::Range<usize>| -> Vec<(usize, usize, Tensor)> {
        range.map(|m| (m, m, weights[m].shallow_clone())).collect()
    };
    let whole = explain_pack(&config, &arch, &worker, &job(0..5), &signals, 64).unwrap().0;
    let parts = [explain_pack(&config, &arch, &worker, &job(0..2), &signals, 7).unwrap().0, explain_pack(&config, &arch, &worker, &job(2..5), &signals, 7).unwrap().0];
    let per: usize = 3 * (arch.dims * arch.length) as usize;
    let members = &whole.methods[0].1.members;
    let mean: Vec<f32> = (0..per).map(|j| (0..5).map(|m| members[m * per + j]).sum::<f32>() / 5.0).collect();
    for (a, b) in mean.iter().zip(&whole.methods[0].1.mean) {
        assert!((a - b).abs() < 1e-5);
    }
    let (mut n, mut mu, mut m2) = (0, vec![0f64; per], vec![0f64; per]);
    for part in &parts {
        let p = &part.methods[0].1;
        n = export::chan_combine(n, &mut mu, &mut m2, part.positions.len(), &p.mean, &p.m2);
    }
    for j in 0..per {
        assert!((mu[j] as f32 - mean[j]).abs() < 1e-5);
        let var: f32 = (0..5).map(|m| (members[m * per + j] - mean[j]).powi(2)).sum::<f32>() / 5.0;
        assert!(((m2[j] / 5.0) as f32 - var).abs() < 1e-4 * var.max(1.0));
    }
}

#[test]
fn a_manifest_naming_a_file_outside_its_folder_is_refused() {
    let (config, _, _) = setup(1);
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path(), &config).unwrap();
    let manifest = serde_json::json!({
        "method": "grad", "members": [0], "shape": [1, 1, 2, 64], "dtype": "float32", "split": "test",
        "config_hash": config.hash(), "parameters": {}, "files": ["../../../etc/passwd"], "seconds": 0.0,
        "gradient_evaluations": 0.0, "evaluations_per_second": 0.0, "not_converged": null,
        "mean_iterations": null, "completeness_gap": null,
    });
    let folder = run.explain_dir().join("grad");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("manifest.json"), manifest.to_string()).unwrap();
    let err = load_methods(&run, &["grad".to_string()]).err().expect("refused");
    assert_eq!(crate::error::exit_code(&err), 2);
    assert!(err.to_string().contains("outside"), "{err}");
}

/// A kept pack is taken back only if it has `layout`'s methods and arrays, so the two must
/// agree for every method set.
#[test]
fn a_pack_has_the_methods_and_arrays_of_its_layout() {
    let (mut config, arch, weights) = setup(2);
    config.explain.max_iter = 3;
    let worker = crate::farm::Worker { device: Device::Cpu, threads: 1 };
    let (train, _) = crate::data::generate::generate(&config.data, config.seed);
    let signals = train.select(&[0, 1]);
    let job: Vec<(usize, usize, Tensor)> = (0..2).map(|m| (m, m, weights[m].shallow_clone())).collect();
    for methods in [&["grad", "smoothgrad", "saliency", "gxi", "ig"][..], &["gxi"], &["ig", "saliency"]] {
        config.explain.methods = methods.iter().map(|m| m.to_string()).collect();
        let result = explain_pack(&config, &arch, &worker, &job, &signals, 64).unwrap().0;
        let got: Vec<(&str, resume::Extras)> = result
            .methods
            .iter()
            .map(|(name, p)| {
                let extras = match (&p.iterations, &p.gap) {
                    (Some(_), _) => resume::Extras::Descent,
                    (None, Some(_)) => resume::Extras::Gap,
                    (None, None) => resume::Extras::None,
                };
                (name.as_str(), extras)
            })
            .collect();
        assert_eq!(got, layout(&config), "{methods:?}");
    }
}
