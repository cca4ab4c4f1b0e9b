use super::*;
use crate::config::{Config, Sources};
use tch::Device;

fn arch() -> Architecture {
    let c = Config::load(&Sources { preset: "quick".into(), ..Default::default() }).unwrap();
    Architecture::new(&c.model, c.data.dims, c.data.length)
}

#[test]
fn parameter_count_matches_the_layers() {
    let a = arch(); // quick: channels 4/8/8/8, kernel 5, hidden 16, length 64, dims 2
    let convs = 4 * 2 * 5 + 8 * 4 * 5 + 8 * 8 * 5 + 8 * 8 * 5;
    let fcs = 8 * (64 / 16) * 16 + 16;
    assert_eq!(a.numel(), convs + fcs);
}

#[test]
fn pack_and_unpack_are_inverse() {
    let a = arch();
    let members: Vec<Tensor> = (0..3).map(|s| init::member_weights(&a, s)).collect();
    let model = PackedCnn::from_members(&a, &members, Device::Cpu);
    for (i, m) in members.iter().enumerate() {
        let back = model.member_vector(&model.flat.detach(), i as i64);
        assert!(back.equal(m), "member {i}");
    }
}

#[test]
fn a_member_in_a_pack_computes_what_it_computes_alone() {
    let a = arch();
    let members: Vec<Tensor> = (0..4).map(|s| init::member_weights(&a, 100 + s)).collect();
    let packed = PackedCnn::from_members(&a, &members, Device::Cpu);
    let x = Tensor::randn([5, 4, a.dims, a.length], (Kind::Float, Device::Cpu));
    let out = packed.forward(&x.view([5, 4 * a.dims, a.length]), None); // [P, B]
    for m in 0..4 {
        let alone = PackedCnn::from_members(&a, &members[m..m + 1], Device::Cpu);
        let single = alone.forward(&x.select(1, m as i64), None); // [1, B]
        let diff = f64::try_from((out.get(m as i64) - single.get(0)).abs().max()).unwrap();
        assert!(diff < 1e-5, "member {m}: {diff}");
    }
}

/// Reference: the same network in PyTorch, `nn.Conv1d(.., bias=False)`, ReLU, `MaxPool1d(2)`,
/// flatten, `x @ W1`, ReLU, `@ W2`: a zero input gives exactly the constant score offset (no
/// learned biases anywhere).
#[test]
fn no_bias_anywhere() {
    let a = arch();
    assert_eq!(a.score_offset, 10.0);
    let model = PackedCnn::from_members(&a, &[init::member_weights(&a, 1)], Device::Cpu);
    let out = model.forward(&Tensor::zeros([2, a.dims, a.length], (Kind::Float, Device::Cpu)), None);
    assert_eq!(Vec::<f32>::try_from(&out.reshape([-1])).unwrap(), vec![10.0, 10.0]);
}

#[test]
fn initial_weights_follow_the_seed_and_pytorch_bounds() {
    let a = arch();
    assert!(init::member_weights(&a, 7).equal(&init::member_weights(&a, 7)));
    assert!(!init::member_weights(&a, 7).equal(&init::member_weights(&a, 8)));
    let w = init::member_weights(&a, 7);
    let conv1 = w.narrow(0, 0, 4 * 2 * 5);
    let bound = 1.0 / (10f64).sqrt();
    assert!(f64::try_from(conv1.abs().max()).unwrap() <= bound);
}

/// Every layout computes the same scores and the same gradients, for the weights (training)
/// and for the input (explain).
#[test]
fn convolution_layouts_agree() {
    let a = arch();
    let members: Vec<Tensor> = (0..3).map(|s| init::member_weights(&a, 50 + s)).collect();
    let mut model = PackedCnn::from_members(&a, &members, Device::Cpu);
    let x = Tensor::randn([4, 3 * a.dims, a.length], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let mut run = |layout| {
        model.layout = layout;
        let out = model.forward(&x, None);
        let grads = Tensor::run_backward(&[out.square().sum(Kind::Float)], &[&x, &model.flat], false, false);
        [out.detach(), grads[0].shallow_clone(), grads[1].shallow_clone()]
    };
    let reference = run(ConvLayout::Grouped);
    for layout in [ConvLayout::ChannelsLast, ConvLayout::Unfold] {
        for (got, want) in run(layout).iter().zip(&reference) {
            let scale = f64::try_from(want.abs().max()).unwrap();
            let diff = f64::try_from((got - want).abs().max()).unwrap();
            assert!(diff <= 1e-5 * scale.max(1.0), "{layout:?}: {diff} of {scale}");
        }
    }
}
