//! The matrices of F(4, k): Toom-Cook interpolation at 0, +-1, +-2, +-1/2 and infinity,
//! computed in f64 when a workspace is built, and the structure the fast transforms rely on.

/// Outputs per tile.
pub const TILE: usize = 4;
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// The transforms of F(4, k).
#[derive(Debug, Clone)]
pub struct Transform {
    pub k: usize,
    /// Points: k + 3.
    pub alpha: usize,
    /// [alpha, alpha]: the input tile's rows into the points.
    pub bt: Coef,
    /// [alpha, k]: the taps into the points, and [k, alpha] its transpose.
    pub g: Coef,
    pub gt: Coef,
    /// [TILE, alpha]: the points back into outputs, and [alpha, TILE] its transpose.
    pub at: Coef,
    pub a: Coef,
    /// Whether `bt`, `at` and `a` have the structure of `paired` (they do for every k this
    /// builds; checked rather than assumed, the fast passes fall back to dense sums otherwise).
    pub paired: bool,
}

/// A transform's coefficients, [outputs, inputs] row-major f32.
#[derive(Debug, Clone)]
pub struct Coef {
    pub w: Vec<f32>,
    pub inputs: usize,
}

impl Coef {
    fn new(m: &[f64], inputs: usize) -> Coef {
        Coef { w: m.iter().map(|&x| x as f32).collect(), inputs }
    }
}

impl Transform {
    /// F(4, k) for an odd k whose points are all well conditioned (k <= 5), else None.
    pub fn new(k: usize) -> Option<Transform> {
        let alpha = k + TILE - 1;
        if k.is_multiple_of(2) || alpha - 1 > POINTS.len() {
            return None;
        }
        // Row `point` of an n-column Vandermonde matrix; infinity picks the leading coefficient.
        let vander = |n: usize| -> Vec<f64> {
            let mut v = vec![0.0; alpha * n];
            for (i, &p) in POINTS[..alpha - 1].iter().enumerate() {
                (0..n).for_each(|j| v[i * n + j] = p.powi(j as i32));
            }
            v[(alpha - 1) * n + n - 1] = 1.0;
            v
        };
        // Linear convolution of a (TILE taps) and g (k taps) is V^-1 [(V_TILE a) . (V_k g)]; by
        // transposition the correlation y = sum_kk d[j + kk] g[kk] is
        // V_TILE^T [(V^-T d) . (V_k g)].
        let (a, g) = (vander(TILE), vander(k));
        let (bt, at) = (transpose(&invert(&vander(alpha), alpha), alpha, alpha), transpose(&a, alpha, TILE));
        Some(Transform {
            k,
            alpha,
            paired: paired(alpha, &bt, &at, &a),
            bt: Coef::new(&bt, alpha),
            gt: Coef::new(&transpose(&g, alpha, k), alpha),
            g: Coef::new(&g, k),
            at: Coef::new(&at, alpha),
            a: Coef::new(&a, TILE),
        })
    }
}

/// The structure that halves the transforms' work. Points come as 0, then pairs +p, -p, then
/// infinity. A polynomial's values at +p and -p are E + O and E - O (its even and odd parts),
/// so in `bt` (and `a`) the row of -p is the row of +p with its odd columns negated: both come
/// from two half sums. Row 0 reads only even columns and row infinity only odd ones, and a
/// pair's row skips column 0 and the last column (`kernels::input_points` sums exactly
/// these). In `at` the columns of +p and -p are p^j and (-p)^j: output j needs only the pair's
/// sum (j even) or difference (j odd); column 0 feeds only output 0 and infinity only the last.
fn paired(alpha: usize, bt: &[f64], at: &[f64], a: &[f64]) -> bool {
    let zero = |v: f64| v.abs() < 1e-12;
    let same = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
    let sign = |r: usize| if r.is_multiple_of(2) { 1.0 } else { -1.0 };
    let last = alpha - 1;
    let pairs = (1..last).step_by(2);
    // bt [alpha, alpha]: row p, column r.
    let bt_ok = (0..alpha).all(|r| {
        (r % 2 == 0 && r != last || zero(bt[r]))
            && (r % 2 == 1 || zero(bt[last * alpha + r]))
            && pairs.clone().all(|p| {
                (r != 0 && r != last || zero(bt[p * alpha + r]))
                    && same(bt[(p + 1) * alpha + r], sign(r) * bt[p * alpha + r])
            })
    });
    // at [TILE, alpha]: output j, point p.
    let at_ok = (0..TILE).all(|j| {
        (j == 0 || zero(at[j * alpha]))
            && (j == TILE - 1 || zero(at[j * alpha + last]))
            && pairs.clone().all(|p| same(at[j * alpha + p + 1], sign(j) * at[j * alpha + p]))
    });
    // a [alpha, TILE]: point p, input j.
    let a_ok = (0..TILE).all(|j| {
        (j == 0 || zero(a[j]))
            && (j == TILE - 1 || zero(a[last * TILE + j]))
            && pairs.clone().all(|p| same(a[(p + 1) * TILE + j], sign(j) * a[p * TILE + j]))
    });
    bt_ok && at_ok && a_ok
}

/// `m` [rows, cols] transposed.
fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols).map(|i| m[(i % rows) * cols + i / rows]).collect()
}
/// The inverse of an n x n matrix (Gauss-Jordan with partial pivoting, f64).
fn invert(m: &[f64], n: usize) -> Vec<f64> {
    let mut a = m.to_vec();
    let mut inv: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs())).unwrap();
        for j in 0..n {
            a.swap(col * n + j, pivot * n + j);
            inv.swap(col * n + j, pivot * n + j);
        }
        let d = a[col * n + col];
        for j in 0..n {
            a[col * n + j] /= d;
            inv[col * n + j] /= d;
        }
        for row in (0..n).filter(|&r| r != col) {
            let f = a[row * n + col];
            for j in 0..n {
                a[row * n + j] -= f * a[col * n + j];
                inv[row * n + j] -= f * inv[col * n + j];
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F(4, k) against the plain correlation on random data, for k = 3 and 5.
    #[test]
    fn the_transforms_compute_the_correlation() {
        for k in [3usize, 5] {
            let tf = Transform::new(k).unwrap();
            assert!(tf.paired, "k={k}: the paired structure");
            let d: Vec<f32> = (0..tf.alpha).map(|i| ((i * 7 + 3) % 11) as f32 / 5.0 - 1.0).collect();
            let w: Vec<f32> = (0..k).map(|i| ((i * 5 + 1) % 7) as f32 / 3.0 - 1.0).collect();
            let v: Vec<f32> =
                (0..tf.alpha).map(|p| (0..tf.alpha).map(|r| tf.bt.w[p * tf.alpha + r] * d[r]).sum()).collect();
            let u: Vec<f32> = (0..tf.alpha).map(|p| (0..k).map(|kk| tf.g.w[p * k + kk] * w[kk]).sum()).collect();
            for j in 0..TILE {
                let got: f32 = (0..tf.alpha).map(|p| tf.at.w[j * tf.alpha + p] * v[p] * u[p]).sum();
                let want: f32 = (0..k).map(|kk| d[j + kk] * w[kk]).sum();
                assert!((got - want).abs() < 1e-5, "k={k} output {j}: {got} vs {want}");
            }
        }
        assert!(Transform::new(7).is_none() && Transform::new(4).is_none());
    }

    #[test]
    fn a_matrix_without_the_structure_is_not_paired() {
        let tf = Transform::new(5).unwrap();
        let widen = |c: &Coef| c.w.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (bt, at, a) = (widen(&tf.bt), widen(&tf.at), widen(&tf.a));
        assert!(paired(tf.alpha, &bt, &at, &a));
        let mut broken = bt.clone();
        broken[2 * tf.alpha + 1] *= -1.0; // row -1's odd column no longer the negated +1's
        assert!(!paired(tf.alpha, &broken, &at, &a));
        let mut broken = at.clone();
        broken[tf.alpha] = 0.5; // point 0 feeding output 1
        assert!(!paired(tf.alpha, &bt, &broken, &a));
    }
}
