//! The vector operations Winograd's passes use, for AVX2's 8 lanes and AVX-512's 16, so that
//! one generic body (`kernels::simd`) serves both widths. A lane computes the same operations
//! in either width, so both give the same bits (the layer test compares them).

use std::arch::x86_64::*;

/// A vector of f32 lanes. The methods are unsafe: the caller must run on a CPU with the
/// type's features, and `load` and `store` need `N` floats behind their pointer.
pub trait Lanes: Copy {
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self * b + c`, rounded once.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self > o ? self : o` in each lane (NaN in either gives `o`), as `maxps` does.
    unsafe fn max(self, o: Self) -> Self;
}

/// Implements `Lanes` for one register type from its intrinsics.
macro_rules! impl_lanes {
    ($t:ty, $n:literal, $features:literal, $zero:ident, $set1:ident, $load:ident, $store:ident,
     $add:ident, $sub:ident, $mul:ident, $fma:ident, $max:ident) => {
        impl Lanes for $t {
            const N: usize = $n;
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn zero() -> Self {
                $zero()
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn splat(v: f32) -> Self {
                $set1(v)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load(p: *const f32) -> Self {
                $load(p)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn store(self, p: *mut f32) {
                $store(p, self)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn add(self, o: Self) -> Self {
                $add(self, o)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn sub(self, o: Self) -> Self {
                $sub(self, o)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn mul(self, o: Self) -> Self {
                $mul(self, o)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                $fma(self, b, c)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn max(self, o: Self) -> Self {
                $max(self, o)
            }
        }
    };
}

impl_lanes!(__m256, 8, "avx2,fma", _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
    _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_fmadd_ps, _mm256_max_ps);
impl_lanes!(__m512, 16, "avx512f", _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_fmadd_ps, _mm512_max_ps);
