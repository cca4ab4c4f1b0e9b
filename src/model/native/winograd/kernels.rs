//! The transforms' passes over a layer: every tile's rows into the points (`bt`, or `a` for
//! the output gradient) and the points back into rows (`at`), and `combine`, the dense sum
//! they fall back to (and that transforms the weights).
//!
//! The AVX2 passes use the pairing of the points (`transform::paired`): each pair of rows
//! comes from an even and an odd half sum, 32 instead of 64 operations per tile and channel
//! for `bt`, 20 instead of 32 for `at` and for `a`, and one call runs every tile (instead of a
//! call with its bounds checks per tile). Summing in another order than the dense transform
//! moves results by f32 roundings only (the layer test bounds both).

use super::transform::{Coef, Transform, TILE};
use super::{Conv, Pooled};

/// Where a layer's tiles lie: tile (s, i)'s first row is `s * seg + TILE * i + offset` (rows of
/// `c` floats); in the points' planes [alpha, tiles, c] it is tile `s * t / TILE + i`.
#[derive(Debug, Clone, Copy)]
pub struct Tiles {
    pub conv: Conv,
    pub b: usize,
    pub offset: usize,
}

impl Tiles {
    pub fn count(&self) -> usize {
        self.b * self.conv.t / TILE
    }

    /// Calls `f(tile, row)` for every tile: its index and its first row. (Inlined, so the
    /// AVX2 passes' closures compile with their features.)
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, usize)) {
        let per_sample = self.conv.t / TILE;
        for s in 0..self.b {
            (0..per_sample).for_each(|i| f(s * per_sample + i, s * self.conv.seg() + TILE * i + self.offset));
        }
    }

    /// Asserts that `rows` rows from every tile's first fit in `rows_len` floats of rows of
    /// `c`, and `alpha` planes of tiles in `points_len`: the passes' only bounds checks.
    fn check(&self, rows: usize, rows_len: usize, alpha: usize, points_len: usize, c: usize) {
        assert!(self.b > 0, "winograd: no samples");
        let last_row = (self.b - 1) * self.conv.seg() + self.conv.t - TILE + self.offset + rows - 1;
        assert!((last_row + 1) * c <= rows_len, "winograd: rows out of bounds");
        assert!(alpha * self.count() * c <= points_len, "winograd: points out of bounds");
    }
}

/// Which pass: its rows in per tile, the dense transform it computes, the AVX2 kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `bt`: alpha input rows into the points.
    Input,
    /// `a`: TILE output-gradient rows into the points.
    Gradient,
    /// `at`: the points into TILE output rows.
    Output,
}

/// `dst` [alpha, tiles, c] = `bt` of every tile's alpha rows of `src`.
pub fn input_points(tf: &Transform, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32]) {
    tiles.check(tf.alpha, src.len(), tf.alpha, dst.len(), c);
    run(tf, Pass::Input, tiles, src, c, dst, None)
}

/// `dst` [alpha, tiles, c] = `a` of every tile's TILE rows of `src` (the output gradient).
pub fn gradient_points(tf: &Transform, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32]) {
    tiles.check(TILE, src.len(), tf.alpha, dst.len(), c);
    run(tf, Pass::Gradient, tiles, src, c, dst, None)
}

/// Every tile's TILE rows of `dst` = `at` of its points in `src` [alpha, tiles, c]; with
/// `pooled`, also those rows max-pooled by 2 and ReLU'd into it (as `native::pool_relu` does,
/// while the rows are in registers: a pass over `dst` less).
pub fn output_rows(tf: &Transform, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32], pooled: Option<Pooled>) {
    tiles.check(TILE, dst.len(), tf.alpha, src.len(), c);
    if let Some(pooled) = &pooled {
        assert!(tiles.offset == 0 && c == tiles.conv.c_out, "winograd: only a layer's output is pooled");
        let rows = (tiles.b - 1) * pooled.seg + pooled.pad + tiles.conv.t / 2;
        assert!(rows * c <= pooled.out.len(), "winograd: pooled rows out of bounds");
    }
    run(tf, Pass::Output, tiles, src, c, dst, pooled)
}

/// A pass after its bounds are checked: the paired AVX2 kernel where it applies, else `combine`
/// per tile (then `pool_relu` over the output rows, for a pooled output pass).
fn run(tf: &Transform, pass: Pass, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32], mut pooled: Option<Pooled>) {
    #[cfg(target_arch = "x86_64")]
    if tf.paired && c.is_multiple_of(8) && super::super::gemm::has_fma() {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let pool = pooled.as_mut().map(|p| avx2::Pool { out: p.out.as_mut_ptr(), seg: p.seg, pad: p.pad });
        let (at, none) = (&tf.at.w, avx2::Pool::NONE);
        // SAFETY: the callers' asserts bound every row, point and pooled row the kernels touch;
        // AVX2 and FMA are present; `paired` holds, so the kernels' sums are the transforms.
        unsafe {
            match (pass, tf.alpha, pool) {
                (Pass::Input, 8, _) => return avx2::input::<8>(&tf.bt.w, tiles, s, c, d),
                (Pass::Input, 6, _) => return avx2::input::<6>(&tf.bt.w, tiles, s, c, d),
                (Pass::Gradient, 8, _) => return avx2::gradient::<8>(&tf.a.w, tiles, s, c, d),
                (Pass::Gradient, 6, _) => return avx2::gradient::<6>(&tf.a.w, tiles, s, c, d),
                (Pass::Output, 8, None) => return avx2::output::<8, false>(at, tiles, s, c, d, none),
                (Pass::Output, 6, None) => return avx2::output::<6, false>(at, tiles, s, c, d, none),
                (Pass::Output, 8, Some(pool)) => return avx2::output::<8, true>(at, tiles, s, c, d, pool),
                (Pass::Output, 6, Some(pool)) => return avx2::output::<6, true>(at, tiles, s, c, d, pool),
                _ => {}
            }
        }
    }
    let count = tiles.count();
    tiles.each(|tile, row| match pass {
        Pass::Input => combine(&tf.bt, src, rows(row, c), dst, points(tile, count, c), c, false),
        Pass::Gradient => combine(&tf.a, src, rows(row, c), dst, points(tile, count, c), c, false),
        Pass::Output => combine(&tf.at, src, points(tile, count, c), dst, rows(row, c), c, false),
    });
    if let Some(pooled) = pooled {
        super::super::pool_relu(dst, tiles.conv, tiles.b, pooled);
    }
}

/// Where `combine` reads or writes its rows: row r at `offset + r * stride`.
#[derive(Clone, Copy)]
pub struct Rows {
    pub offset: usize,
    pub stride: usize,
}

/// Consecutive rows of `c` floats from row `row` on.
fn rows(row: usize, c: usize) -> Rows {
    Rows { offset: row * c, stride: c }
}

/// A tile's values at every point, [alpha, tiles, c] planes.
fn points(tile: usize, tiles: usize, c: usize) -> Rows {
    Rows { offset: tile * c, stride: tiles * c }
}

/// dst row p (+)= sum over r of coef[p, r] src row r, rows of `c` floats: any transform,
/// densely (coef [outputs, inputs], at most 8 inputs).
pub fn combine(coef: &Coef, src: &[f32], from: Rows, dst: &mut [f32], to: Rows, c: usize, accumulate: bool) {
    let Coef { ref w, inputs } = *coef;
    let outputs = w.len() / inputs;
    assert!(from.offset + (inputs - 1) * from.stride + c <= src.len(), "combine: source out of bounds");
    assert!(to.offset + (outputs - 1) * to.stride + c <= dst.len(), "combine: destination out of bounds");
    #[cfg(target_arch = "x86_64")]
    if c.is_multiple_of(8) && inputs <= 8 && super::super::gemm::has_fma() {
        // SAFETY: the asserts bound every row read and written; AVX2 and FMA are present.
        return unsafe { avx2::combine(w, inputs, src, from, dst, to, c, accumulate) };
    }
    for (p, weights) in w.chunks_exact(inputs).enumerate() {
        let out = &mut dst[to.offset + p * to.stride..][..c];
        if !accumulate {
            out.fill(0.0);
        }
        for (r, &w) in weights.iter().enumerate() {
            out.iter_mut().zip(&src[from.offset + r * from.stride..][..c]).for_each(|(o, &x)| *o += w * x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Rows, Tiles, TILE};
    use std::arch::x86_64::*;

    /// Coefficient `i` in every lane.
    #[inline(always)]
    unsafe fn at(w: &[f32], i: usize) -> __m256 {
        _mm256_set1_ps(*w.get_unchecked(i))
    }

    /// `bt` in pairs: point 0 from the even rows, infinity from the odd ones, and each pair
    /// (p, p + 1) as E + O and E - O, E over the even rows 2.., O over the odd rows ..A-2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input<const A: usize>(bt: &[f32], tiles: Tiles, src: *const f32, c: usize, dst: *mut f32) {
        let plane = tiles.count() * c;
        tiles.each(|tile, row| {
            for j in (0..c).step_by(8) {
                let mut x = [_mm256_setzero_ps(); A];
                for (r, xr) in x.iter_mut().enumerate() {
                    *xr = _mm256_loadu_ps(src.add((row + r) * c + j));
                }
                let out = dst.add(tile * c + j);
                let mut zero = _mm256_mul_ps(at(bt, 0), x[0]);
                for r in (2..A - 1).step_by(2) {
                    zero = _mm256_fmadd_ps(at(bt, r), x[r], zero);
                }
                _mm256_storeu_ps(out, zero);
                let last = (A - 1) * A;
                let mut inf = _mm256_mul_ps(at(bt, last + 1), x[1]);
                for r in (3..A).step_by(2) {
                    inf = _mm256_fmadd_ps(at(bt, last + r), x[r], inf);
                }
                _mm256_storeu_ps(out.add((A - 1) * plane), inf);
                for p in (1..A - 1).step_by(2) {
                    let mut even = _mm256_mul_ps(at(bt, p * A + 2), x[2]);
                    for r in (4..A - 1).step_by(2) {
                        even = _mm256_fmadd_ps(at(bt, p * A + r), x[r], even);
                    }
                    let mut odd = _mm256_mul_ps(at(bt, p * A + 1), x[1]);
                    for r in (3..A - 2).step_by(2) {
                        odd = _mm256_fmadd_ps(at(bt, p * A + r), x[r], odd);
                    }
                    _mm256_storeu_ps(out.add(p * plane), _mm256_add_ps(even, odd));
                    _mm256_storeu_ps(out.add((p + 1) * plane), _mm256_sub_ps(even, odd));
                }
            }
        });
    }

    /// `a` in pairs: point 0 is row 0, infinity row TILE - 1, and each pair (p, p + 1) is
    /// E + O and E - O with E from rows 0 and 2, O from rows 1 and 3.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gradient<const A: usize>(a: &[f32], tiles: Tiles, src: *const f32, c: usize, dst: *mut f32) {
        let plane = tiles.count() * c;
        tiles.each(|tile, row| {
            for j in (0..c).step_by(8) {
                let mut d = [_mm256_setzero_ps(); TILE];
                for (r, dr) in d.iter_mut().enumerate() {
                    *dr = _mm256_loadu_ps(src.add((row + r) * c + j));
                }
                let out = dst.add(tile * c + j);
                _mm256_storeu_ps(out, _mm256_mul_ps(at(a, 0), d[0]));
                let last = (A - 1) * TILE;
                _mm256_storeu_ps(out.add((A - 1) * plane), _mm256_mul_ps(at(a, last + TILE - 1), d[TILE - 1]));
                for p in (1..A - 1).step_by(2) {
                    let even = _mm256_fmadd_ps(at(a, p * TILE + 2), d[2], _mm256_mul_ps(at(a, p * TILE), d[0]));
                    let odd = _mm256_fmadd_ps(at(a, p * TILE + 3), d[3], _mm256_mul_ps(at(a, p * TILE + 1), d[1]));
                    _mm256_storeu_ps(out.add(p * plane), _mm256_add_ps(even, odd));
                    _mm256_storeu_ps(out.add((p + 1) * plane), _mm256_sub_ps(even, odd));
                }
            }
        });
    }

    /// Where `output` writes its pooled rows (`super::Pooled` as a pointer).
    #[derive(Clone, Copy)]
    pub struct Pool {
        pub out: *mut f32,
        pub seg: usize,
        pub pad: usize,
    }

    impl Pool {
        pub const NONE: Pool = Pool { out: std::ptr::null_mut(), seg: 0, pad: 0 };
    }

    /// `at` in pairs: output j takes each pair's sum (j even) or difference (j odd) times
    /// p^j, point 0 only in output 0 and infinity only in the last. With `POOL`, rows (0, 1)
    /// and (2, 3) are also max-pooled and ReLU'd into `pool`: `max(o, e)` is `o > e ? o : e`
    /// and `max(0, v)` is `0 > v ? 0 : v`, `pool_relu`'s operations, NaN included.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output<const A: usize, const POOL: bool>(
        at_: &[f32],
        tiles: Tiles,
        src: *const f32,
        c: usize,
        dst: *mut f32,
        pool: Pool,
    ) {
        let (plane, per_sample) = (tiles.count() * c, tiles.conv.t / TILE);
        tiles.each(|tile, row| {
            for j in (0..c).step_by(8) {
                let from = src.add(tile * c + j);
                let mut x = [_mm256_setzero_ps(); A];
                for (p, xp) in x.iter_mut().enumerate() {
                    *xp = _mm256_loadu_ps(from.add(p * plane));
                }
                // Pair q of points (2q + 1, 2q + 2): their sum in slot 2q + 1, difference in 2q + 2.
                let mut sd = x;
                for p in (1..A - 1).step_by(2) {
                    sd[p] = _mm256_add_ps(x[p], x[p + 1]);
                    sd[p + 1] = _mm256_sub_ps(x[p], x[p + 1]);
                }
                let mut y = [_mm256_setzero_ps(); TILE];
                for (out, acc) in y.iter_mut().enumerate() {
                    let base = out * A;
                    let pick = out % 2; // 0: sums, 1: differences
                    *acc = _mm256_mul_ps(at(at_, base + 1), sd[1 + pick]);
                    for p in (3..A - 1).step_by(2) {
                        *acc = _mm256_fmadd_ps(at(at_, base + p), sd[p + pick], *acc);
                    }
                    if out == 0 {
                        *acc = _mm256_fmadd_ps(at(at_, base), x[0], *acc);
                    }
                    if out == TILE - 1 {
                        *acc = _mm256_fmadd_ps(at(at_, base + A - 1), x[A - 1], *acc);
                    }
                    _mm256_storeu_ps(dst.add((row + out) * c + j), *acc);
                }
                if POOL {
                    let (s, i) = (tile / per_sample, tile % per_sample);
                    let first = s * pool.seg + pool.pad + TILE / 2 * i;
                    for q in 0..TILE / 2 {
                        let max = _mm256_max_ps(y[2 * q + 1], y[2 * q]);
                        _mm256_storeu_ps(pool.out.add((first + q) * c + j), _mm256_max_ps(_mm256_setzero_ps(), max));
                    }
                }
            }
        });
    }

    /// `combine` in registers, eight channels at a time: the inputs' rows are loaded once and
    /// every output is one chain of multiply-adds. Skipping the third of the coefficients that
    /// are zero made it slower, with a branch per coefficient (2.2 against 1.85 ms a step) or
    /// with lists of the nonzero ones (whose indexing moves the rows out of registers); the
    /// paired passes above skip them by construction instead.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn combine(
        coef: &[f32],
        inputs: usize,
        src: &[f32],
        from: Rows,
        dst: &mut [f32],
        to: Rows,
        c: usize,
        accumulate: bool,
    ) {
        let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
        for j in (0..c).step_by(8) {
            let mut x = [_mm256_setzero_ps(); 8];
            for (r, xr) in x.iter_mut().enumerate().take(inputs) {
                *xr = _mm256_loadu_ps(src.add(from.offset + r * from.stride + j));
            }
            for (p, weights) in coef.chunks_exact(inputs).enumerate() {
                let out = dst.add(to.offset + p * to.stride + j);
                let mut acc = if accumulate { _mm256_loadu_ps(out) } else { _mm256_setzero_ps() };
                for (&w, &xr) in weights.iter().zip(&x) {
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(w), xr, acc);
                }
                _mm256_storeu_ps(out, acc);
            }
        }
    }
}
