use super::*;
use crate::config::{Config, Sources};
use crate::model::{init, PackedCnn};
use tch::{Device, Kind, Tensor};

fn arch(preset: &str) -> Architecture {
    let c = Config::load(&Sources { preset: preset.into(), ..Default::default() }).unwrap();
    Architecture::new(&c.model, c.data.dims, c.data.length)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::try_from(&t.detach().reshape([-1])).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let diff = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(diff <= 1e-4 * scale, "{what}: max difference {diff} of {scale}");
}

/// Two members, each with its own samples, targets and dropout masks: the hand-written step
/// gives each the loss and gradient that autograd gives the packed libtorch model. Run on the
/// paper's widths (full register tiles) and the quick preset's (only edge tiles), with a short
/// batch after a full one (rows of the bigger batch must not leak into it), and with a batch
/// over the workspace's capacity (slices whose gradients add up).
#[test]
fn the_step_matches_autograd_on_the_packed_model() {
    for preset in ["paper", "quick"] {
        let a = arch(preset);
        let (p, n, h) = (2usize, 7i64, a.hidden);
        let members: Vec<Tensor> = (0..p as u64).map(|s| init::member_weights(&a, 300 + s)).collect();
        let bank = init::normal(&[n, a.dims, a.length], 1);
        let bank_v = to_vec(&bank);
        let mut spaces = [Workspace::new(&a, 5), Workspace::new(&a, 2)];
        for (space, b) in [(0, 5usize), (0, 3), (1, 5)] {
            let ws = &mut spaces[space];
            let samples: Vec<Vec<i64>> =
                (0..p).map(|m| (0..b as i64).map(|i| (i * 3 + m as i64 * 2 + b as i64) % n).collect()).collect();
            let targets = init::normal(&[p as i64, b as i64], 2 + b as u64) + 9;
            let masks = init::normal(&[p as i64, b as i64, h], 3 + b as u64).ge(-0.84).to_kind(Kind::Float) * 1.25;

            let model = PackedCnn::from_members(&a, &members, Device::Cpu);
            // [B, P*dims, T]: member m's sample in channels m*dims..(m+1)*dims.
            let rows: Vec<i64> = (0..b).flat_map(|i| (0..p).map(move |m| (i, m))).map(|(i, m)| samples[m][i]).collect();
            let x = bank.index_select(0, &Tensor::from_slice(&rows)).view([b as i64, p as i64 * a.dims, a.length]);
            let sq = (model.forward(&x, Some(&masks)) - &targets).square();
            sq.mean_dim(1, false, Kind::Float).sum(Kind::Float).backward();
            let grad = model.flat.grad();

            for m in 0..p {
                ws.set_params(&to_vec(&members[m]));
                let sse =
                    ws.train_step(&bank_v, &samples[m], &to_vec(&targets.get(m as i64)), &to_vec(&masks.get(m as i64)));
                let want_sse = f64::try_from(sq.get(m as i64).sum(Kind::Float)).unwrap();
                assert!(
                    (sse - want_sse).abs() <= 1e-4 * want_sse.max(1.0),
                    "{preset} b={b} m={m}: sse {sse} vs {want_sse}"
                );
                // Each parameter against its own largest value: fc1's would hide the rest.
                let want = to_vec(&model.member_vector(&grad, m as i64));
                for spec in &a.params {
                    let (got, want) = (&ws.grad[spec.member_range()], &want[spec.member_range()]);
                    assert_close(got, want, &format!("{preset} b={b} member {m} gradient {:?}", spec.shape));
                }
                let fits = b.min(ws.capacity);
                let scores = ws.forward(&bank_v, &samples[m][..fits], None).to_vec();
                let want = tch::no_grad(|| model.forward(&x, None).get(m as i64).narrow(0, 0, fits as i64));
                assert_close(&scores, &to_vec(&want), &format!("{preset} b={b} member {m} scores"));
            }
        }
    }
}

#[test]
fn equal_steps_give_identical_bits_and_nan_weights_a_nan_loss() {
    let a = arch("quick");
    let w = to_vec(&init::member_weights(&a, 9));
    let bank = to_vec(&init::normal(&[4, a.dims, a.length], 4));
    let masks = vec![1.25f32; 3 * a.hidden as usize];
    let step = |w: &[f32]| {
        let mut ws = Workspace::new(&a, 3);
        ws.set_params(w);
        let sse = ws.train_step(&bank, &[0, 3, 1], &[9.0, 10.0, 11.0], &masks);
        (sse, ws.grad.clone())
    };
    let (first, again) = (step(&w), step(&w));
    assert_eq!(first.0.to_bits(), again.0.to_bits());
    assert_eq!(first.1, again.1);
    assert!(step(&vec![f32::NAN; w.len()]).0.is_nan());
}
