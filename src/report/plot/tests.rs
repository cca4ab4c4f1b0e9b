use super::*;

fn check(stem: &Path, title: &str) {
    let svg = std::fs::read_to_string(with_ext(stem, "svg")).unwrap();
    assert!(svg.contains(title), "svg lacks title {title:?}");
    let png = std::fs::read(with_ext(stem, "png")).unwrap();
    assert!(png.len() > 100 && png.starts_with(b"\x89PNG\r\n\x1a\n"));
}

fn series(name: &str, f: impl Fn(f64) -> f64, spread: bool) -> Series {
    let x: Vec<f64> = (1..=12).map(|k| k as f64).collect();
    let spread = spread.then(|| x.iter().map(|&k| 0.3 / k.sqrt()).collect());
    Series { name: name.into(), y: x.iter().map(|&k| f(k)).collect(), x, spread }
}

/// [ideal, perturbed, attribution, spread, reconstruction], 2 dims, a bump in each.
fn signal_data(len: usize, shift: f32) -> [Vec<f32>; 5] {
    let bump = |k: usize| (-((((k % len) as f32 / len as f32) - [0.3, 0.7][k / len]) / 0.04).powi(2)).exp();
    let ideal: Vec<f32> = (0..2 * len).map(|k| ((k % len) as f32 * 0.15 + shift + (k / len) as f32).sin()).collect();
    let pert: Vec<f32> = (0..2 * len).map(|k| ideal[k] + 0.8 * bump(k)).collect();
    let attr: Vec<f32> = (0..2 * len).map(|k| 0.7 * bump(k) + 0.05 * (k as f32).cos()).collect();
    let rec = pert.iter().zip(&attr).map(|(p, a)| p - a).collect();
    [ideal, pert, attr.iter().map(|a| 0.05 + 0.2 * a.abs()).collect(), attr, rec]
}

fn panel<'a>(title: &str, d: &'a [Vec<f32>; 5], bumps: &'a [(f32, usize)], attr: bool) -> SignalPanel<'a> {
    let (ideal, perturbed, title) = (&d[0][..], &d[1][..], title.into());
    SignalPanel { title, ideal, perturbed, bumps, attribution: attr.then_some(&d[3][..]),
        spread: attr.then_some(&d[2][..]), reconstruction: attr.then_some(&d[4][..]) }
}

fn all_examples(dir: &Path) {
    let s = [series("AGRA", |k| 0.9 - 0.4 / k, true), series("single member", |_| 0.5, false)];
    curves(&dir.join("curves"), "Fidelity vs k", "averaged members k", "fidelity", &s).unwrap();
    check(&dir.join("curves"), "Fidelity vs k");
    let b = [("AGRA".into(), 0.82, 0.03), ("gradient".into(), 0.55, 0.08), ("integrated gradients".into(), 0.61, 0.05)];
    bars(&dir.join("bars"), "Localisation", "IoU", &b).unwrap();
    check(&dir.join("bars"), "Localisation");
    bars(&dir.join("bars1"), "One bar", "IoU", &b[..1]).unwrap();
    let (d0, d1) = (signal_data(64, 0.0), signal_data(64, 1.0));
    let bumps = [(19.2, 0), (44.8, 1)];
    let p = [panel("AGRA (k=16)", &d0, &bumps, true), panel("No explanation", &d1, &bumps, false)];
    signals(&dir.join("signals"), 2, 64, &p).unwrap();
    check(&dir.join("signals"), "AGRA (k=16)");
    signals(&dir.join("signals1"), 2, 64, &p[..1]).unwrap();
}

#[test]
fn writes_svg_and_png() {
    all_examples(tempfile::tempdir().unwrap().path());
}

/// Renders the examples for eyeballing: `AGRA_PLOT_OUT=dir cargo test render_examples -- --ignored`.
#[test]
#[ignore]
fn render_examples() {
    all_examples(Path::new(&std::env::var("AGRA_PLOT_OUT").unwrap_or_else(|_| "plot-examples".into())));
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, nan) = (tmp.path(), f64::NAN);
    let weird = [
        Series { name: "empty".into(), x: vec![], y: vec![], spread: Some(vec![]) },
        Series { name: "nan".into(), x: vec![1.0, 2.0, 3.0], y: vec![nan, 1.0, nan], spread: Some(vec![nan; 3]) },
        Series { name: "const".into(), x: vec![5.0, 5.0], y: vec![2.0, 2.0], spread: None },
    ];
    curves(&d.join("c1"), "weird", "x", "y", &weird).unwrap();
    curves(&d.join("c2"), "none", "x", "y", &[]).unwrap();
    check(&d.join("c2"), "none");
    curves(&d.join("c3"), "nan", "x", "y", &[Series { name: "n".into(), x: vec![nan], y: vec![nan], spread: None }])
        .unwrap();
    bars(&d.join("b1"), "empty bars", "y", &[]).unwrap();
    check(&d.join("b1"), "empty bars");
    bars(&d.join("b2"), "nan bars", "y", &[("a".into(), nan, nan), ("b".into(), 0.0, 0.0)]).unwrap();
    bars(&d.join("b3"), "neg", "y", &[("a".into(), -2.0, 1.0)]).unwrap();

    let (flat, holes) = ([1.0f32; 3], [1.0, f32::NAN, 2.0]);
    let p = SignalPanel { title: "flat".into(), ideal: &flat, perturbed: &holes, bumps: &[(1.0, 0), (f32::NAN, 0), (99.0, 0)],
        attribution: Some(&holes), spread: Some(&holes), reconstruction: Some(&flat) };
    signals(&d.join("s1"), 1, 3, std::slice::from_ref(&p)).unwrap();
    check(&d.join("s1"), "flat");
    let one = [0.0f32];
    let q = SignalPanel { title: "one".into(), ideal: &one, perturbed: &one, bumps: &[(0.0, 0)], attribution: None,
        spread: None, reconstruction: None };
    signals(&d.join("s2"), 1, 1, &[q]).unwrap();
    signals(&d.join("s3"), 0, 0, &[]).unwrap();
    let q = SignalPanel { title: "zero".into(), ideal: &[], perturbed: &[], bumps: &[(0.0, 0)], attribution: Some(&[]),
        spread: None, reconstruction: None };
    signals(&d.join("s5"), 2, 0, &[q]).unwrap();
    signals(&d.join("s4"), 2, 2, &[p]).unwrap_err(); // wrong lengths are an error, not a panic
}

/// Ten ticks over a narrow span keep distinct labels; ordinary spans keep three decimals.
#[test]
fn tick_labels_carry_the_digits_the_span_needs() {
    let labels: Vec<String> = (0..10).map(|k| fmt_tick(0.034 + k as f64 * 0.0005, 0.0045)).collect();
    assert_eq!(labels.iter().collect::<std::collections::HashSet<_>>().len(), 10, "{labels:?}");
    assert_eq!(fmt_tick(0.5, 1.0), "0.5");
    assert_eq!(fmt_tick(12345.0, 0.001), fmt_num(12345.0));
}
