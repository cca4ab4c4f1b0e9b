//! The transforms' passes over a layer: every tile's rows into the points (`bt`, or `a` for
//! the output gradient) and the points back into rows (`at`), and `combine`, the dense sum
//! they fall back to (and that transforms the weights).
//!
//! The vector passes (`simd`: one body for AVX2's and AVX-512's registers, which give the same
//! bits) use the pairing of the points (`transform::paired`): each pair of rows comes from an
//! even and an odd half sum, 32 instead of 64 operations per tile and channel for `bt`, 20
//! instead of 32 for `at` and for `a`, and one call runs every tile (instead of a call with its
//! bounds checks per tile). Summing in another order than the dense transform moves results by
//! f32 roundings only (the layer test bounds both).

use super::super::pool::route_bytes;
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
    /// vector passes' closures compile with their features.)
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

/// Which pass: its rows in per tile, the dense transform it computes, the vector kernel.
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
/// `pooled`, those rows max-pooled by 2 and ReLU'd into it instead, with their route (as
/// `pool::pool_relu` does, while the rows are in registers: the vector passes write no `dst`).
pub fn output_rows(tf: &Transform, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32], pooled: Option<Pooled>) {
    tiles.check(TILE, dst.len(), tf.alpha, src.len(), c);
    if let Some(pooled) = &pooled {
        assert!(tiles.offset == 0 && c == tiles.conv.c_out, "winograd: only a layer's output is pooled");
        let rows = (tiles.b - 1) * pooled.seg + pooled.pad + tiles.conv.t / 2;
        assert!(rows * c <= pooled.out.len(), "winograd: pooled rows out of bounds");
        assert!(tiles.b * tiles.conv.t / 2 * route_bytes(c) <= pooled.route.len(), "winograd: route out of bounds");
    }
    run(tf, Pass::Output, tiles, src, c, dst, pooled)
}

/// A pass after its bounds are checked: the paired vector kernel where it applies, else `combine`
/// per tile (then `pool_relu` over the output rows, for a pooled output pass).
fn run(tf: &Transform, pass: Pass, tiles: Tiles, src: &[f32], c: usize, dst: &mut [f32], mut pooled: Option<Pooled>) {
    #[cfg(target_arch = "x86_64")]
    if tf.paired {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let pool = pooled.as_mut().map(|p| {
            let (out, route) = (p.out.as_mut_ptr(), p.route.as_mut_ptr());
            simd::Pool { out, seg: p.seg, pad: p.pad, route }
        });
        // SAFETY: the callers' asserts bound every row, point and pooled row the kernels touch;
        // `lanes` checks the CPU's features and that c is whole registers; `paired` holds, so
        // the kernels' sums are the transforms.
        let done = unsafe {
            match simd::lanes(c) {
                16 => simd::paired_avx512(tf, pass, tiles, s, c, d, pool),
                8 => simd::paired_avx2(tf, pass, tiles, s, c, d, pool),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    let count = tiles.count();
    tiles.each(|tile, row| match pass {
        Pass::Input => combine(&tf.bt, src, rows(row, c), dst, points(tile, count, c), c, false),
        Pass::Gradient => combine(&tf.a, src, rows(row, c), dst, points(tile, count, c), c, false),
        Pass::Output => combine(&tf.at, src, points(tile, count, c), dst, rows(row, c), c, false),
    });
    if let Some(pooled) = pooled {
        super::super::pool::pool_relu(dst, tiles.conv, tiles.b, pooled);
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
    if inputs <= 8 {
        // SAFETY: the asserts bound every row read and written; `lanes` checks the CPU.
        match simd::lanes(c) {
            16 => return unsafe { simd::combine_avx512(w, inputs, src, from, dst, to, c, accumulate) },
            8 => return unsafe { simd::combine_avx2(w, inputs, src, from, dst, to, c, accumulate) },
            _ => {}
        }
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
mod simd {
    pub use crate::model::native::lanes::lanes;
    use crate::model::native::lanes::{widths, Lanes};
    use crate::model::native::pool::{pool_register, route_bytes};
    use super::super::transform::Transform;
    use super::{Pass, Rows, Tiles, TILE};

    // The paired pass for `tf`'s alpha (6 or 8); false where there is none (the caller falls
    // back to `combine`).
    widths!(paired_avx512, paired_avx2, paired,
        (tf: &Transform, pass: Pass, tiles: Tiles, s: *const f32, c: usize, d: *mut f32, pool: Option<Pool>) -> bool);
    widths!(combine_avx512, combine_avx2, combine,
        (w: &[f32], inputs: usize, src: &[f32], from: Rows, dst: &mut [f32], to: Rows, c: usize, acc: bool));

    /// The body of both: inlined into each, so it compiles with its features.
    #[inline(always)]
    unsafe fn paired<V: Lanes>(
        tf: &Transform,
        pass: Pass,
        tiles: Tiles,
        s: *const f32,
        c: usize,
        d: *mut f32,
        pool: Option<Pool>,
    ) -> bool {
        let (at, none) = (&tf.at.w, Pool::NONE);
        match (pass, tf.alpha, pool) {
            (Pass::Input, 8, _) => input::<V, 8>(&tf.bt.w, tiles, s, c, d),
            (Pass::Input, 6, _) => input::<V, 6>(&tf.bt.w, tiles, s, c, d),
            (Pass::Gradient, 8, _) => gradient::<V, 8>(&tf.a.w, tiles, s, c, d),
            (Pass::Gradient, 6, _) => gradient::<V, 6>(&tf.a.w, tiles, s, c, d),
            (Pass::Output, 8, None) => output::<V, 8, false>(at, tiles, s, c, d, none),
            (Pass::Output, 6, None) => output::<V, 6, false>(at, tiles, s, c, d, none),
            (Pass::Output, 8, Some(pool)) => output::<V, 8, true>(at, tiles, s, c, d, pool),
            (Pass::Output, 6, Some(pool)) => output::<V, 6, true>(at, tiles, s, c, d, pool),
            _ => return false,
        }
        true
    }

    /// Coefficient `i` in every lane.
    #[inline(always)]
    unsafe fn at<V: Lanes>(w: &[f32], i: usize) -> V {
        V::splat(*w.get_unchecked(i))
    }

    /// `bt` in pairs: point 0 from the even rows, infinity from the odd ones, and each pair
    /// (p, p + 1) as E + O and E - O, E over the even rows 2.., O over the odd rows ..A-2.
    #[inline(always)]
    unsafe fn input<V: Lanes, const A: usize>(bt: &[f32], tiles: Tiles, src: *const f32, c: usize, dst: *mut f32) {
        let plane = tiles.count() * c;
        tiles.each(|tile, row| {
            for j in (0..c).step_by(V::N) {
                let mut x = [V::zero(); A];
                for (r, xr) in x.iter_mut().enumerate() {
                    *xr = V::load(src.add((row + r) * c + j));
                }
                let out = dst.add(tile * c + j);
                let mut zero = at::<V>(bt, 0).mul(x[0]);
                for r in (2..A - 1).step_by(2) {
                    zero = at::<V>(bt, r).mul_add(x[r], zero);
                }
                zero.store(out);
                let last = (A - 1) * A;
                let mut inf = at::<V>(bt, last + 1).mul(x[1]);
                for r in (3..A).step_by(2) {
                    inf = at::<V>(bt, last + r).mul_add(x[r], inf);
                }
                inf.store(out.add((A - 1) * plane));
                for p in (1..A - 1).step_by(2) {
                    let mut even = at::<V>(bt, p * A + 2).mul(x[2]);
                    for r in (4..A - 1).step_by(2) {
                        even = at::<V>(bt, p * A + r).mul_add(x[r], even);
                    }
                    let mut odd = at::<V>(bt, p * A + 1).mul(x[1]);
                    for r in (3..A - 2).step_by(2) {
                        odd = at::<V>(bt, p * A + r).mul_add(x[r], odd);
                    }
                    even.add(odd).store(out.add(p * plane));
                    even.sub(odd).store(out.add((p + 1) * plane));
                }
            }
        });
    }

    /// `a` in pairs: point 0 is row 0, infinity row TILE - 1, and each pair (p, p + 1) is
    /// E + O and E - O with E from rows 0 and 2, O from rows 1 and 3.
    #[inline(always)]
    unsafe fn gradient<V: Lanes, const A: usize>(a: &[f32], tiles: Tiles, src: *const f32, c: usize, dst: *mut f32) {
        let plane = tiles.count() * c;
        tiles.each(|tile, row| {
            for j in (0..c).step_by(V::N) {
                let mut d = [V::zero(); TILE];
                for (r, dr) in d.iter_mut().enumerate() {
                    *dr = V::load(src.add((row + r) * c + j));
                }
                let out = dst.add(tile * c + j);
                at::<V>(a, 0).mul(d[0]).store(out);
                let last = (A - 1) * TILE;
                at::<V>(a, last + TILE - 1).mul(d[TILE - 1]).store(out.add((A - 1) * plane));
                for p in (1..A - 1).step_by(2) {
                    let even = at::<V>(a, p * TILE + 2).mul_add(d[2], at::<V>(a, p * TILE).mul(d[0]));
                    let odd = at::<V>(a, p * TILE + 3).mul_add(d[3], at::<V>(a, p * TILE + 1).mul(d[1]));
                    even.add(odd).store(out.add(p * plane));
                    even.sub(odd).store(out.add((p + 1) * plane));
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
        pub route: *mut u8,
    }

    impl Pool {
        pub const NONE: Pool = Pool { out: std::ptr::null_mut(), seg: 0, pad: 0, route: std::ptr::null_mut() };
    }

    /// `at` in pairs: output j takes each pair's sum (j even) or difference (j odd) times
    /// p^j, point 0 only in output 0 and infinity only in the last. With `POOL`, rows (0, 1)
    /// and (2, 3) are also max-pooled and ReLU'd into `pool`, with their route: `max(o, e)` is
    /// `o > e ? o : e` and `max(0, v)` is `0 > v ? 0 : v`, `pool::pool_one`'s operations, NaN
    /// included.
    #[inline(always)]
    unsafe fn output<V: Lanes, const A: usize, const POOL: bool>(
        at_: &[f32],
        tiles: Tiles,
        src: *const f32,
        c: usize,
        dst: *mut f32,
        pool: Pool,
    ) {
        let (plane, per_sample) = (tiles.count() * c, tiles.conv.t / TILE);
        tiles.each(|tile, row| {
            for j in (0..c).step_by(V::N) {
                let from = src.add(tile * c + j);
                let mut x = [V::zero(); A];
                for (p, xp) in x.iter_mut().enumerate() {
                    *xp = V::load(from.add(p * plane));
                }
                // Pair q of points (2q + 1, 2q + 2): their sum in slot 2q + 1, difference in 2q + 2.
                let mut sd = x;
                for p in (1..A - 1).step_by(2) {
                    sd[p] = x[p].add(x[p + 1]);
                    sd[p + 1] = x[p].sub(x[p + 1]);
                }
                let mut y = [V::zero(); TILE];
                for (out, acc) in y.iter_mut().enumerate() {
                    let base = out * A;
                    let pick = out % 2; // 0: sums, 1: differences
                    *acc = at::<V>(at_, base + 1).mul(sd[1 + pick]);
                    for p in (3..A - 1).step_by(2) {
                        *acc = at::<V>(at_, base + p).mul_add(sd[p + pick], *acc);
                    }
                    if out == 0 {
                        *acc = at::<V>(at_, base).mul_add(x[0], *acc);
                    }
                    if out == TILE - 1 {
                        *acc = at::<V>(at_, base + A - 1).mul_add(x[A - 1], *acc);
                    }
                    if !POOL {
                        acc.store(dst.add((row + out) * c + j));
                    }
                }
                if POOL {
                    let (s, i) = (tile / per_sample, tile % per_sample);
                    let first = s * pool.seg + pool.pad + TILE / 2 * i;
                    let width = route_bytes(c);
                    for q in 0..TILE / 2 {
                        let out = pool.out.add((first + q) * c + j);
                        let route = pool.route.add((tile * TILE / 2 + q) * width + j / 8);
                        pool_register(y[2 * q], y[2 * q + 1], out, route, width / 2);
                    }
                }
            }
        });
    }

    /// `combine` in registers, a register of channels at a time: the inputs' rows are loaded
    /// once and every output is one chain of multiply-adds. Skipping the third of the
    /// coefficients that are zero made it slower, with a branch per coefficient (2.2 against
    /// 1.85 ms a step) or with lists of the nonzero ones (whose indexing moves the rows out of
    /// registers); the paired passes above skip them by construction instead.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn combine<V: Lanes>(
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
        for j in (0..c).step_by(V::N) {
            let mut x = [V::zero(); 8];
            for (r, xr) in x.iter_mut().enumerate().take(inputs) {
                *xr = V::load(src.add(from.offset + r * from.stride + j));
            }
            for (p, weights) in coef.chunks_exact(inputs).enumerate() {
                let out = dst.add(to.offset + p * to.stride + j);
                let mut acc = if accumulate { V::load(out) } else { V::zero() };
                for (&w, &xr) in weights.iter().zip(&x) {
                    acc = V::splat(w).mul_add(xr, acc);
                }
                acc.store(out);
            }
        }
    }
}
