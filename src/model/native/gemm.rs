//! A small single-precision matrix product for the CPU kernels: C (+)= A B, with A read
//! through arbitrary row and column strides. A convolution over channels-last rows is then one
//! product whose A rows overlap (row t of the unfolded input starts at x[t * C_in]), so the
//! unfolded matrix is never built; its transpose (for the weight gradient) is the same memory
//! with the strides swapped.
//!
//! Register tiles of 6 x 16 (12 AVX2 accumulators, as in BLIS's Haswell kernel), or 8 x 32
//! with AVX-512 (16 accumulators of 16 lanes), over k-blocks that keep the touched rows of A
//! and B in L1. Deterministic: the summation order depends on the shapes only, so equal inputs
//! give bit-identical outputs (exact resume relies on it). Every C element is the same chain of
//! fused multiply-adds in both vector widths (from zero over a k-block's depth, then added to
//! C), so the AVX2 and AVX-512 tiles agree bit for bit and a run may resume on either kind of
//! x86-64 CPU (the plain-Rust tiles, without FMA, round differently).

// Rows and columns of a register tile: AVX2's (and the plain-Rust one's), and AVX-512's (two
// registers a row).
const MR: usize = 6;
pub const NR: usize = 16;
#[cfg(target_arch = "x86_64")]
const MR_512: usize = 8;
#[cfg(target_arch = "x86_64")]
const NR_512: usize = 32;
/// Depth of a k-block: MR rows of A and KC rows of B (KC x NR_512 floats = 32 KB) stay in L1.
const KC: usize = 256;

/// The tile kernels a CPU can run, slowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

/// A read-only matrix view: element (i, j) is `data[offset + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Strided<'a> {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn rows(data: &'a [f32], offset: usize, cols: usize) -> Strided<'a> {
        Strided { data, offset, rs: cols, cs: 1 }
    }

    fn last_index(&self, rows: usize, cols: usize) -> usize {
        self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// C[m x n] = A[m x k] B[k x n], plus C's old value when `accumulate`. B and C are row-major
/// with unit column stride (B's rows `b.rs` apart, C's rows `crs` apart).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Strided,
    c: &mut [f32],
    c_offset: usize,
    crs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|i| c[c_offset + i * crs..][..n].fill(0.0));
        }
        return;
    }
    // The kernels below index through raw pointers: every access is inside these bounds.
    assert!(a.last_index(m, k) < a.data.len(), "gemm: A out of bounds");
    assert!(b.cs == 1 && b.last_index(k, n) < b.data.len(), "gemm: B out of bounds");
    assert!(c_offset + (m - 1) * crs + n <= c.len(), "gemm: C out of bounds");
    let isa = isa();
    for l0 in (0..k).step_by(KC) {
        let block = Tile {
            kc: KC.min(k - l0),
            a: unsafe { a.data.as_ptr().add(a.offset + l0 * a.cs) },
            ars: a.rs,
            acs: a.cs,
            b: unsafe { b.data.as_ptr().add(b.offset + l0 * b.rs) },
            brs: b.rs,
            c: c[c_offset..].as_mut_ptr(),
            crs,
            acc: accumulate || l0 > 0,
        };
        // SAFETY: the asserts above bound every row < m, column < n and depth < k; `isa` says
        // which instructions the CPU has.
        unsafe { block.run(m, n, isa) };
    }
}

/// One register tile's operands: C[mr x nr] (+)= sum over kc of A column times B row; or a
/// k-block's, its tiles at offsets from these pointers.
struct Tile {
    kc: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    brs: usize,
    c: *mut f32,
    crs: usize,
    acc: bool,
}

impl Tile {
    /// Every tile of the k-block C[m x n] (+)= A[m x kc] B[kc x n].
    unsafe fn run(&self, m: usize, n: usize, isa: Isa) {
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => return self.avx512_tiles(m, n),
            Isa::Avx2 => return self.avx2_tiles(m, n),
            Isa::Portable => {}
        }
        let _ = isa;
        self.tiles::<false>(m, n)
    }

    /// The tile at row `i0` and column `j0` of this one.
    unsafe fn at(&self, i0: usize, j0: usize) -> Tile {
        Tile { a: self.a.add(i0 * self.ars), b: self.b.add(j0), c: self.c.add(i0 * self.crs + j0), ..*self }
    }

    /// The tile loop compiled with AVX2, so that each tile's kernel is inlined into it: a call
    /// per tile cost a tenth of the short products (k = 16 or 32) Winograd's points make.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tiles(&self, m: usize, n: usize) {
        self.tiles::<true>(m, n)
    }

    /// The AVX-512 tile loop: 8 x 32 tiles, and a register a row where 16 columns or fewer
    /// are left (the layers with 16 channels), masked past the last column.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_tiles(&self, m: usize, n: usize) {
        for i0 in (0..m).step_by(MR_512) {
            for j0 in (0..n).step_by(NR_512) {
                let (mr, nr, tile) = (MR_512.min(m - i0), NR_512.min(n - j0), self.at(i0, j0));
                match nr {
                    NR_512 => tile.avx512_rows::<2, true>(mr, nr),
                    17.. => tile.avx512_rows::<2, false>(mr, nr),
                    16 => tile.avx512_rows::<1, true>(mr, nr),
                    _ => tile.avx512_rows::<1, false>(mr, nr),
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn tiles<const AVX2: bool>(&self, m: usize, n: usize) {
        for i0 in (0..m).step_by(MR) {
            for j0 in (0..n).step_by(NR) {
                let (mr, nr, tile) = (MR.min(m - i0), NR.min(n - j0), self.at(i0, j0));
                #[cfg(target_arch = "x86_64")]
                if AVX2 {
                    if nr == NR {
                        tile.avx2_rows::<true>(mr, nr)
                    } else {
                        tile.avx2_rows::<false>(mr, nr)
                    }
                    continue;
                }
                tile.portable(mr, nr)
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_rows<const FULL: bool>(&self, mr: usize, nr: usize) {
        match mr {
            6 => self.avx2::<6, FULL>(nr),
            5 => self.avx2::<5, FULL>(nr),
            4 => self.avx2::<4, FULL>(nr),
            3 => self.avx2::<3, FULL>(nr),
            2 => self.avx2::<2, FULL>(nr),
            _ => self.avx2::<1, FULL>(nr),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn avx512_rows<const W: usize, const FULL: bool>(&self, mr: usize, nr: usize) {
        match mr {
            8 => self.avx512::<8, W, FULL>(nr),
            7 => self.avx512::<7, W, FULL>(nr),
            6 => self.avx512::<6, W, FULL>(nr),
            5 => self.avx512::<5, W, FULL>(nr),
            4 => self.avx512::<4, W, FULL>(nr),
            3 => self.avx512::<3, W, FULL>(nr),
            2 => self.avx512::<2, W, FULL>(nr),
            _ => self.avx512::<1, W, FULL>(nr),
        }
    }

    /// R rows of A against W registers of 16 columns of B; with `FULL` false only the first
    /// `nr` columns are read and written (masked: nothing past the matrix is touched). The
    /// same chain per element as `avx2`, so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const W: usize, const FULL: bool>(&self, nr: usize) {
        use std::arch::x86_64::*;
        let masks: [__mmask16; W] = std::array::from_fn(|w| ((1u32 << nr.saturating_sub(16 * w).min(16)) - 1) as u16);
        let mut acc = [[_mm512_setzero_ps(); W]; R];
        for l in 0..self.kc {
            let b = self.b.add(l * self.brs);
            let mut bv = [_mm512_setzero_ps(); W];
            for (w, v) in bv.iter_mut().enumerate() {
                *v = if FULL { _mm512_loadu_ps(b.add(16 * w)) } else { _mm512_maskz_loadu_ps(masks[w], b.add(16 * w)) };
            }
            let a = self.a.add(l * self.acs);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * self.ars));
                for (r, &v) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(av, v, *r);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (w, &r) in row.iter().enumerate() {
                let c = self.c.add(i * self.crs + 16 * w);
                if FULL {
                    let r = if self.acc { _mm512_add_ps(_mm512_loadu_ps(c), r) } else { r };
                    _mm512_storeu_ps(c, r);
                } else {
                    let r = if self.acc { _mm512_add_ps(_mm512_maskz_loadu_ps(masks[w], c), r) } else { r };
                    _mm512_mask_storeu_ps(c, masks[w], r);
                }
            }
        }
    }

    /// Any tile, in plain Rust (CPUs without AVX2 and FMA).
    unsafe fn portable(&self, mr: usize, nr: usize) {
        let mut acc = [[0.0f32; NR]; MR];
        for l in 0..self.kc {
            let b = std::slice::from_raw_parts(self.b.add(l * self.brs), nr);
            for (i, row) in acc.iter_mut().enumerate().take(mr) {
                let a = *self.a.add(i * self.ars + l * self.acs);
                for (r, &bv) in row.iter_mut().zip(b) {
                    *r += a * bv;
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(mr) {
            let c = std::slice::from_raw_parts_mut(self.c.add(i * self.crs), nr);
            for (cv, &r) in c.iter_mut().zip(row) {
                *cv = if self.acc { *cv + r } else { r };
            }
        }
    }

    /// R rows of A against 16 columns of B; with `FULL` false only the first `nr` columns
    /// are read and written (masked loads and stores, so nothing past the matrix is touched).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const FULL: bool>(&self, nr: usize) {
        use std::arch::x86_64::*;
        let live = _mm256_set1_epi32(nr as i32);
        let m0 = _mm256_cmpgt_epi32(live, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let m1 = _mm256_cmpgt_epi32(live, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
        // No closures here: they would not inherit this function's target features, and a
        // non-inlined load in the inner loop costs a third of the speed.
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for l in 0..self.kc {
            let b = self.b.add(l * self.brs);
            let (b0, b1) = if FULL {
                (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)))
            } else {
                (_mm256_maskload_ps(b, m0), _mm256_maskload_ps(b.add(8), m1))
            };
            let a = self.a.add(l * self.acs);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i * self.ars));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let c = self.c.add(i * self.crs);
            let (mut r0, mut r1) = (row[0], row[1]);
            if FULL {
                if self.acc {
                    r0 = _mm256_add_ps(_mm256_loadu_ps(c), r0);
                    r1 = _mm256_add_ps(_mm256_loadu_ps(c.add(8)), r1);
                }
                _mm256_storeu_ps(c, r0);
                _mm256_storeu_ps(c.add(8), r1);
            } else {
                // Through a buffer: masked stores are slow on AMD's cores (the first layer's
                // 10-column product ran at 10.5 GFLOP/s with them, 13.9 without).
                let mut buf = [0f32; NR];
                if self.acc {
                    std::ptr::copy_nonoverlapping(c, buf.as_mut_ptr(), nr);
                    r0 = _mm256_add_ps(_mm256_loadu_ps(buf.as_ptr()), r0);
                    r1 = _mm256_add_ps(_mm256_loadu_ps(buf.as_ptr().add(8)), r1);
                }
                _mm256_storeu_ps(buf.as_mut_ptr(), r0);
                _mm256_storeu_ps(buf.as_mut_ptr().add(8), r1);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), c, nr);
            }
        }
    }
}

/// The widest tiles this CPU runs (std caches the CPUID queries); a test may ask for narrower.
pub fn isa() -> Isa {
    #[cfg(test)]
    if let Some(isa) = tests::FORCED.with(std::cell::Cell::get) {
        return isa;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") { Isa::Avx512 } else { Isa::Avx2 };
        }
    }
    Isa::Portable
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: Strided, b: Strided) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let av = a.data[a.offset + i * a.rs + l * a.cs] as f64;
                    c[i * n + j] += av * b.data[b.offset + l * b.rs + j] as f64;
                }
            }
        }
        c
    }

    fn values(len: usize, salt: u64) -> Vec<f32> {
        (0..len as u64).map(|i| ((i * 2654435761 + salt) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    thread_local! {
        /// Set by a test to run narrower tiles than the CPU has.
        pub static FORCED: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
    }

    /// Every kind of tile this CPU can run, narrowest last; runs `f` with each forced.
    pub fn each_isa(mut f: impl FnMut(Isa)) {
        let widest = isa();
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable].into_iter().filter(|&i| i <= widest) {
            FORCED.with(|f| f.set(Some(isa)));
            f(isa);
        }
        FORCED.with(|f| f.set(None));
    }

    /// Shapes that hit full tiles, every edge, several k-blocks and overlapping rows of A; with
    /// each kind of tile the CPU has.
    #[test]
    fn matches_the_naive_product_on_edges_strides_and_overlapping_rows() {
        each_isa(|_| products_match_the_naive_one());
    }

    fn products_match_the_naive_one() {
        let shapes =
            [(1, 1, 1), (6, 16, 5), (13, 33, 300), (7, 16, 600), (40, 20, 3), (17, 70, 40), (9, 31, 2), (11, 57, 530)];
        for &(m, n, k) in &shapes {
            let x = values(m * 3 + k + 8, 1);
            // Overlapping rows: row i starts 3 floats after row i-1, like a convolution's windows.
            let a = Strided { data: &x, offset: 2, rs: 3, cs: 1 };
            let y = values(k * n + 5, 7);
            let b = Strided { data: &y, offset: 5, rs: n, cs: 1 };
            let want = naive(m, n, k, a, b);
            let mut c = vec![0.5f32; m * (n + 2) + 1];
            gemm(m, n, k, a, b, &mut c, 1, n + 2, true);
            // Nothing written past a row's n columns, nor before C.
            let outside = (0..m).flat_map(|i| [1 + i * (n + 2) + n, 2 + i * (n + 2) + n]).chain([0]);
            assert!(outside.filter(|&i| i < c.len()).all(|i| c[i] == 0.5), "({m},{n},{k}): a store past the tile");
            for i in 0..m {
                for j in 0..n {
                    let got = c[1 + i * (n + 2) + j] as f64 - 0.5;
                    assert!(
                        (got - want[i * n + j]).abs() < 1e-3,
                        "({m},{n},{k}) at ({i},{j}): {got} vs {}",
                        want[i * n + j]
                    );
                }
            }
            // Transposed A (column stride > row stride), overwriting C.
            let at = Strided { data: &x, offset: 0, rs: 1, cs: m };
            let x_len_needed = m * k;
            if x_len_needed <= x.len() {
                let want = naive(m, n, k, at, b);
                gemm(m, n, k, at, b, &mut c, 0, n, false);
                for (i, w) in want.iter().enumerate() {
                    assert!((c[i] as f64 - w).abs() < 1e-3);
                }
            }
        }
    }

    #[test]
    fn equal_inputs_give_identical_bits() {
        let x = values(64 * 160, 3);
        let y = values(160 * 32, 9);
        let run = || {
            let mut c = vec![0.0f32; 64 * 32];
            gemm(64, 32, 160, Strided::rows(&x, 0, 160), Strided::rows(&y, 0, 32), &mut c, 0, 32, false);
            c
        };
        assert_eq!(run(), run());
    }

    /// The AVX2 and AVX-512 tiles give the same bits (the same chain of fused multiply-adds per
    /// element), on full tiles, both kinds of edge (one register and two, masked), short rows,
    /// several k-blocks, overwriting and accumulating; and neither writes past a row's n columns.
    #[test]
    fn avx2_and_avx512_tiles_agree_bit_for_bit() {
        if isa() < Isa::Avx512 {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let shapes = [(64, 32, 600), (13, 48, 17), (30, 16, 300), (9, 70, 5), (5, 7, 260), (11, 57, 530), (3, 31, 257)];
        let shapes = shapes.iter().chain(&[(2, 17, 1), (4, 25, 256)]);
        for (&(m, n, k), accumulate) in shapes.flat_map(|s| [(s, true), (s, false)]) {
            let (x, y) = (values(m * k, 5), values(k * n, 11));
            let crs = n + 3;
            let run = |isa| {
                FORCED.with(|f| f.set(Some(isa)));
                let mut c = values(m * crs, 2);
                (0..m).for_each(|i| c[i * crs + n..][..3].fill(f32::NAN));
                gemm(m, n, k, Strided::rows(&x, 0, k), Strided::rows(&y, 0, n), &mut c, 0, crs, accumulate);
                FORCED.with(|f| f.set(None));
                assert!((0..m).all(|i| c[i * crs + n..][..3].iter().all(|v| v.is_nan())), "({m},{n},{k}): past n");
                c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert!(run(Isa::Avx2) == run(Isa::Avx512), "({m},{n},{k}), accumulate {accumulate}");
        }
    }
}
