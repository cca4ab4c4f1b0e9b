//! Max-pool by 2 along time, then ReLU, and its backward. The forward pass also records, per
//! pooled value and channel, which row of its pair won and whether the ReLU let it through
//! (the route): the backward pass then reads two bits instead of the pair's two outputs, and
//! those outputs need not stay in cache. (The Winograd layers pool in their output pass, with
//! the same operations and the same route.)

use super::{relu, Conv};

/// Where a layer's pooled output goes: pooled row i of sample s is row `s * seg + pad + i` of
/// `out` (the next layer's padded input, or the last layer's features); its route is row
/// `s * t / 2 + i` of `route` (`route_bytes` a row).
pub struct Pooled<'a> {
    pub out: &'a mut [f32],
    pub seg: usize,
    pub pad: usize,
    pub route: &'a mut [u8],
}

/// Bytes of one pooled row's route: two bitsets of `c` bits (bit o of byte o / 8), the first
/// set where the pair's even row gets the gradient, the second where the odd row does; in
/// neither where the pooled value is not positive.
pub fn route_bytes(c: usize) -> usize {
    2 * c.div_ceil(8)
}

/// `pool_relu`'s operations on one channel: the pooled value and its route bits (even, odd).
/// `max(o, e)` is `o > e ? o : e` and ReLU keeps NaN (a diverged member must show a NaN loss),
/// whose gradient is stopped.
#[inline(always)]
fn pool_one(e: f32, o: f32) -> (f32, bool, bool) {
    let odd = o > e;
    let pooled = relu(if odd { o } else { e });
    let through = pooled > 0.0;
    (pooled, through && !odd, through && odd)
}

/// Max-pools `y`'s rows (sample s's at `s * conv.seg()`) by 2, then ReLU, into `pooled`.
pub fn pool_relu(y: &[f32], conv: Conv, b: usize, pooled: Pooled) {
    let (c, half, width) = (conv.c_out, conv.t / 2, route_bytes(conv.c_out));
    assert!(b == 0 || ((b - 1) * conv.seg() + conv.t) * c <= y.len(), "pool: rows out of bounds");
    assert!(
        b == 0 || ((b - 1) * pooled.seg + pooled.pad + half) * c <= pooled.out.len(),
        "pool: pooled rows out of bounds"
    );
    assert!(b * half * width <= pooled.route.len(), "pool: route out of bounds");
    let rows = Rows { conv, b, seg: pooled.seg, pad: pooled.pad };
    #[cfg(target_arch = "x86_64")]
    {
        let (y, out, route) = (y.as_ptr(), pooled.out.as_mut_ptr(), pooled.route.as_mut_ptr());
        // SAFETY: as in `pool_relu_backward`.
        match super::lanes::lanes(c) {
            16 => return unsafe { simd::forward_avx512(rows, y, out, route) },
            8 => return unsafe { simd::forward_avx2(rows, y, out, route) },
            _ => {}
        }
    }
    rows.each(0, |pair, at, bits| {
        let (even, odd) = y[pair..pair + 2 * c].split_at(c);
        let dst = &mut pooled.out[at..at + c];
        let (to_even, to_odd) = pooled.route[bits..bits + width].split_at_mut(width / 2);
        to_even.fill(0);
        to_odd.fill(0);
        for (o, (d, (&e, &od))) in dst.iter_mut().zip(even.iter().zip(odd)).enumerate() {
            let (value, e_bit, o_bit) = pool_one(e, od);
            *d = value;
            to_even[o / 8] |= (e_bit as u8) << (o % 8);
            to_odd[o / 8] |= (o_bit as u8) << (o % 8);
        }
    });
}

/// The pooled values' gradient `grad` (laid out as `pool_relu` wrote its output: row
/// `s * seg + pad + i`) back to the rows of `dy` (sample s's output row r at `s * conv.seg() +
/// r + 2 * conv.pad`, as `Layer::dy`) that its route names; the others get zero.
pub fn pool_relu_backward(
    conv: Conv,
    b: usize,
    route: &[u8],
    (grad, seg, pad): (&[f32], usize, usize),
    dy: &mut [f32],
) {
    let (c, half) = (conv.c_out, conv.t / 2);
    assert!(b == 0 || ((b - 1) * seg + pad + half) * c <= grad.len(), "pool: gradient rows out of bounds");
    assert!(b * half * route_bytes(c) <= route.len(), "pool: route out of bounds");
    assert!(b * conv.seg() * c <= dy.len(), "pool: dy rows out of bounds");
    let rows = Rows { conv, b, seg, pad };
    #[cfg(target_arch = "x86_64")]
    {
        let (g, r, d) = (grad.as_ptr(), route.as_ptr(), dy.as_mut_ptr());
        // SAFETY: the asserts bound every row read and written; `lanes` checks the CPU and that
        // rows are whole registers.
        match super::lanes::lanes(c) {
            16 => return unsafe { simd::backward_avx512(rows, g, r, d) },
            8 => return unsafe { simd::backward_avx2(rows, g, r, d) },
            _ => {}
        }
    }
    let width = route_bytes(c);
    rows.each(2 * conv.pad, |pair, at, bits| {
        let (to_even, to_odd) = route[bits..bits + width].split_at(width / 2);
        let (d_even, d_odd) = dy[pair..pair + 2 * c].split_at_mut(c);
        for (o, &g) in grad[at..at + c].iter().enumerate() {
            let bit = |set: &[u8]| set[o / 8] >> (o % 8) & 1 == 1;
            d_even[o] = if bit(to_even) { g } else { 0.0 };
            d_odd[o] = if bit(to_odd) { g } else { 0.0 };
        }
    });
}

/// The geometry of a layer's pooling: `b` samples of `conv`'s output, pooled into rows
/// `seg` apart after `pad` rows (as `Pooled`).
#[derive(Clone, Copy)]
struct Rows {
    conv: Conv,
    b: usize,
    seg: usize,
    pad: usize,
}

impl Rows {
    /// Calls `f(pair, pooled, route)` for every pooled row, each the offset of its first
    /// element: of the pair of output rows it pools (sample s's rows from `s * conv.seg() +
    /// lead`), of the pooled row, of its route's first byte. (Inlined, so the vector passes'
    /// closures compile with their features.)
    #[inline(always)]
    fn each(&self, lead: usize, mut f: impl FnMut(usize, usize, usize)) {
        let (c, half, width) = (self.conv.c_out, self.conv.t / 2, route_bytes(self.conv.c_out));
        for s in 0..self.b {
            for i in 0..half {
                f((s * self.conv.seg() + lead + 2 * i) * c, (s * self.seg + self.pad + i) * c, (s * half + i) * width);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{route_bytes, Rows};
    use crate::model::native::lanes::{widths, Lanes};

    widths!(forward_avx512, forward_avx2, forward, (rows: Rows, y: *const f32, out: *mut f32, route: *mut u8));
    widths!(backward_avx512, backward_avx2, backward, (rows: Rows, grad: *const f32, route: *const u8, dy: *mut f32));

    #[inline(always)]
    unsafe fn forward<V: Lanes>(rows: Rows, y: *const f32, out: *mut f32, route: *mut u8) {
        let (c, width) = (rows.conv.c_out, route_bytes(rows.conv.c_out));
        rows.each(0, |pair, at, bits| {
            for j in (0..c).step_by(V::N) {
                let (even, odd) = (V::load(y.add(pair + j)), V::load(y.add(pair + c + j)));
                pool_register(even, odd, out.add(at + j), route.add(bits + j / 8), width / 2);
            }
        });
    }

    /// One register of a pair's rows pooled (`super::pool_one` lane by lane) into `out`, with
    /// its route bits at `route` and `route + half_width`.
    #[inline(always)]
    pub unsafe fn pool_register<V: Lanes>(even: V, odd: V, out: *mut f32, route: *mut u8, half_width: usize) {
        let pooled = V::zero().max(odd.max(even));
        pooled.store(out);
        let (through, odd_won) = (pooled.gt(V::zero()), odd.gt(even));
        store_bits::<V>(through & !odd_won & (u32::MAX >> (32 - V::N)), route);
        store_bits::<V>(through & odd_won, route.add(half_width));
    }

    /// Register by register: the gradient kept where each bitset's bits are set.
    #[inline(always)]
    unsafe fn backward<V: Lanes>(rows: Rows, grad: *const f32, route: *const u8, dy: *mut f32) {
        let (c, width) = (rows.conv.c_out, route_bytes(rows.conv.c_out));
        rows.each(2 * rows.conv.pad, |pair, at, bits| {
            for j in (0..c).step_by(V::N) {
                let v = V::load(grad.add(at + j));
                v.keep(load_bits::<V>(route.add(bits + j / 8))).store(dy.add(pair + j));
                v.keep(load_bits::<V>(route.add(bits + width / 2 + j / 8))).store(dy.add(pair + c + j));
            }
        });
    }

    /// A register's `V::N` bits, from `V::N / 8` bytes.
    #[inline(always)]
    pub unsafe fn load_bits<V: Lanes>(at: *const u8) -> u32 {
        let mut bytes = [0u8; 4];
        std::ptr::copy_nonoverlapping(at, bytes.as_mut_ptr(), V::N / 8);
        u32::from_le_bytes(bytes)
    }

    /// Stores a register's `V::N` bits as `V::N / 8` bytes.
    #[inline(always)]
    unsafe fn store_bits<V: Lanes>(bits: u32, at: *mut u8) {
        std::ptr::copy_nonoverlapping(bits.to_le_bytes().as_ptr(), at, V::N / 8);
    }
}

#[cfg(target_arch = "x86_64")]
pub use simd::pool_register;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::native::gemm::tests::each_isa;

    /// The forward's route sends each pooled value's gradient to the row that won its max, where
    /// the ReLU let it through, and zero to every other row, as read from the outputs themselves
    /// (ties, negative pairs, zeros and NaN included); the same bits in every vector width and
    /// in plain Rust. Channels in 16-lane registers, 8-lane ones, and neither.
    #[test]
    fn the_gradient_goes_to_the_row_that_won_the_max() {
        for c in [32, 24, 12] {
            let (b, t, pad, seg, gpad) = (3, 8, 2, 6, 1);
            let conv = Conv { c_in: 1, c_out: c, t, k: 5, pad };
            let special = [0.0, -0.0, 1.0, -1.0, f32::NAN, 0.5];
            let y: Vec<f32> = (0..conv.rows(b) * c)
                .map(|i| if i % 7 == 0 { special[i / 7 % 6] } else { ((i * 37 % 23) as f32 - 11.0) / 8.0 })
                .collect();
            let grad: Vec<f32> = (0..b * seg * c).map(|i| i as f32 + 0.25).collect();
            let mut results = Vec::new();
            each_isa(|_| {
                let (mut out, mut route) = (vec![0.0; b * seg * c], vec![0xa5; b * t / 2 * route_bytes(c)]);
                pool_relu(&y, conv, b, Pooled { out: &mut out, seg, pad: gpad, route: &mut route });
                let mut dy = vec![f32::NAN; (b * conv.seg() + 2 * pad) * c];
                pool_relu_backward(conv, b, &route, (&grad, seg, gpad), &mut dy);
                results.push((out, route, dy));
            });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (other, first) in results.iter().skip(1).zip(std::iter::repeat(&results[0])) {
                assert!(bits(&other.0) == bits(&first.0) && other.1 == first.1, "{c} channels: forwards differ");
                assert!(bits(&other.2) == bits(&first.2), "{c} channels: backwards differ");
            }
            let (out, _, dy) = &results[0];
            for (s, i, o) in (0..b).flat_map(|s| (0..t / 2).flat_map(move |i| (0..c).map(move |o| (s, i, o)))) {
                let r = s * conv.seg() + 2 * i;
                let (e, od) = (y[r * c + o], y[(r + 1) * c + o]);
                let pooled = out[(s * seg + gpad + i) * c + o];
                let g = grad[(s * seg + gpad + i) * c + o];
                let (through, odd_won) = (pooled > 0.0, od > e);
                let want = [if through && !odd_won { g } else { 0.0 }, if through && odd_won { g } else { 0.0 }];
                let got = [dy[(2 * pad + r) * c + o], dy[(2 * pad + r + 1) * c + o]];
                let at = format!("{c} channels, sample {s}, pair {i}, channel {o}");
                assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{at}");
            }
        }
    }
}
