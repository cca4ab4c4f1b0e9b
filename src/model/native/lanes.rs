//! The vector operations of Winograd's passes and the pooling's backward, for AVX2's 8 lanes and
//! AVX-512's 16, so that one generic body serves both widths (`widths!`). A lane computes the
//! same operations in either width, so both give the same bits (the layer tests compare them).

use super::gemm::{isa, Isa};
use std::arch::x86_64::*;

/// The lanes a register holds for rows of `c` channels on this CPU: 16 (AVX-512), 8 (AVX2) or
/// 0 (neither fits: plain Rust).
pub fn lanes(c: usize) -> usize {
    match isa() {
        Isa::Avx512 if c.is_multiple_of(16) => 16,
        Isa::Avx512 | Isa::Avx2 if c.is_multiple_of(8) => 8,
        _ => 0,
    }
}

/// Two entry points for a generic body: `$avx512` compiled with AVX-512, `$avx2` with AVX2
/// and FMA, each running `$body` in its registers (inlined, so with its features).
macro_rules! widths {
    ($avx512:ident, $avx2:ident, $body:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $avx512($($arg: $ty),*) $(-> $ret)? {
            $body::<std::arch::x86_64::__m512>($($arg),*)
        }

        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $body::<std::arch::x86_64::__m256>($($arg),*)
        }
    };
}
pub(crate) use widths;

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
    /// Bit i set where lane i of `self` > lane i of `o` (never with a NaN).
    unsafe fn gt(self, o: Self) -> u32;
    /// Lane i of `self` where bit i of `bits` is set, else 0.
    unsafe fn keep(self, bits: u32) -> Self;
}

/// Implements `Lanes` for one register type from its intrinsics.
macro_rules! impl_lanes {
    ($t:ty, $n:literal, $features:literal, $zero:ident, $set1:ident, $load:ident, $store:ident,
     $add:ident, $sub:ident, $mul:ident, $fma:ident, $max:ident, $($mask:item)*) => {
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
            $($mask)*
        }
    };
}

impl_lanes!(__m256, 8, "avx2,fma", _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
    _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_fmadd_ps, _mm256_max_ps,
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gt(self, o: Self) -> u32 {
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(self, o)) as u32
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn keep(self, bits: u32) -> Self {
        // Each lane's own bit, spread over the lane: all ones where it is set.
        let own = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits as i32), own), own);
        _mm256_and_ps(self, _mm256_castsi256_ps(set))
    }
);
impl_lanes!(__m512, 16, "avx512f", _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
    _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_fmadd_ps, _mm512_max_ps,
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gt(self, o: Self) -> u32 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self, o) as u32
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn keep(self, bits: u32) -> Self {
        _mm512_maskz_mov_ps(bits as u16, self)
    }
);
