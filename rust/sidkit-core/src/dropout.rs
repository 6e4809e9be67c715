//! Counter-based dropout for CPU training.
//!
//! torch draws a CPU dropout mask with one Mersenne-Twister number per element on one thread;
//! in sidkit's TIGER training step that (with the casts and multiplies around it) was the
//! largest cost after the matrix products. Here element `i` is kept when the 16-bit lane
//! `i % 4` of the `i / 4`-th output of SplitMix64 seeded with `seed` is `>= cut`, so:
//!
//! - the mask is a pure function of `(seed, i)`: the same on any thread count, and the
//!   backward pass recomputes it from the seed instead of storing it;
//! - `p` is rounded to `cut / 65536`; kept values are scaled by `1 / (1 - cut / 65536)`, so
//!   the output is unbiased for the rounded `p`;
//! - mask, scale and multiply are one pass over the data, in parallel, and bfloat16 inputs
//!   are scaled in f32 and rounded once (round to nearest even), as torch rounds;
//! - like torch's `x * mask * scale`, every element is multiplied (by `scale` or by 0), so a
//!   NaN or infinity in `x` gives NaN in the output even where it is dropped.

use multiversion::multiversion;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Elements per parallel task (a multiple of 4: every task starts on a whole SplitMix64 word).
const CHUNK: usize = 1 << 15;
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The `k`-th output (0-based) of SplitMix64 started from state `seed`.
#[inline(always)]
pub fn splitmix64(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A dropout mask: drop probability `p` rounded to a multiple of 1/65536, and a seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    seed: u64,
    cut: u32,
}

impl Dropout {
    /// `p` in [0, 1]; fails on NaN or a value outside.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::value("p", "a drop probability in [0, 1]", p));
        }
        Ok(Dropout {
            seed,
            cut: (p * 65536.0).round() as u32,
        })
    }

    /// The drop probability actually used: `p` rounded to a multiple of 1/65536.
    pub fn p(&self) -> f64 {
        self.cut as f64 / 65536.0
    }

    /// The factor kept elements are multiplied by (`1 / (1 - p)`; 0 when everything drops).
    pub fn scale(&self) -> f32 {
        if self.cut >= 65536 {
            0.0
        } else {
            (65536.0 / (65536 - self.cut) as f64) as f32
        }
    }

    /// Whether element `i` is kept.
    #[inline(always)]
    pub fn keeps(&self, i: usize) -> bool {
        let word = splitmix64(self.seed, (i / 4) as u64);
        ((word >> (16 * (i % 4))) & 0xFFFF) as u32 >= self.cut
    }

    /// `out[i] = x[i] * scale` where element `i` is kept, else `x[i] * 0` (0 with `x`'s
    /// sign; NaN for NaN or inf, as torch's dropout gives).
    pub fn apply_f32(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.apply(x, out, fill_f32)
    }

    /// The same for bfloat16 data given as raw bits: each value is scaled in f32 and rounded
    /// to the nearest bfloat16 (ties to even).
    pub fn apply_bf16(&self, x: &[u16], out: &mut [u16]) -> Result<()> {
        self.apply(x, out, fill_bf16)
    }

    fn apply<T: Copy + Send + Sync>(
        &self,
        x: &[T],
        out: &mut [T],
        fill: fn(u64, u16, u64, f32, &[T], &mut [T]),
    ) -> Result<()> {
        if x.len() != out.len() {
            return Err(Error::shape(
                "out",
                format!("{} elements (as many as x)", x.len()),
                out.len(),
            ));
        }
        // p = 1: every lane "kept" with factor 0, so x * 0 everywhere.
        let (cut, scale) = match u16::try_from(self.cut) {
            Ok(cut) => (cut, self.scale()),
            Err(_) => (0, 0.0),
        };
        let seed = self.seed;
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (o, xs))| fill(seed, cut, (c * CHUNK / 4) as u64, scale, xs, o));
        Ok(())
    }
}

/// Elements per block: the 16 SplitMix64 words of a block are computed together (SIMD 64-bit
/// multiplies), then their 64 16-bit lanes select element by element (SIMD compare + blend).
const BLOCK: usize = 64;

#[inline(always)]
fn lanes(seed: u64, first_word: u64) -> [u16; BLOCK] {
    let mut words = [0u64; BLOCK / 4];
    for (j, w) in words.iter_mut().enumerate() {
        *w = splitmix64(seed, first_word + j as u64);
    }
    let mut lanes = [0u16; BLOCK];
    for (j, w) in words.iter().enumerate() {
        for k in 0..4 {
            lanes[4 * j + k] = (w >> (16 * k)) as u16;
        }
    }
    lanes
}

#[inline(always)]
fn fill_with<T: Copy>(
    seed: u64,
    cut: u16,
    first_word: u64,
    x: &[T],
    out: &mut [T],
    scale: f32,
    times: impl Fn(T, f32) -> T,
) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    for (b, (o, xs)) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)).enumerate() {
        let lanes = lanes(seed, first_word + (b * BLOCK / 4) as u64);
        for ((o, &v), &lane) in o.iter_mut().zip(xs).zip(&lanes) {
            *o = times(v, if lane >= cut { scale } else { 0.0 });
        }
    }
}

// Compiled for several instruction sets and picked at run time (the wheel targets baseline
// x86-64); the arithmetic is the same in every version, so every version gives the same bits.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
    "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
))]
fn fill_f32(seed: u64, cut: u16, first_word: u64, scale: f32, x: &[f32], out: &mut [f32]) {
    fill_with(seed, cut, first_word, x, out, scale, |v, f| v * f)
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
    "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
))]
fn fill_bf16(seed: u64, cut: u16, first_word: u64, scale: f32, x: &[u16], out: &mut [u16]) {
    fill_with(seed, cut, first_word, x, out, scale, |v, f| {
        f32_to_bf16(bf16_to_f32(v) * f)
    })
}

/// The f32 value of bfloat16 bits.
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The bfloat16 nearest to `v` (ties to even; NaN stays a quiet NaN), as bits.
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // The reference outputs of Vigna's splitmix64.c started from state 0.
        let expected = [
            0xE220_A839_7B1D_CDAFu64,
            0x6E78_9E6A_A1B9_65F4,
            0x06C4_5D18_8009_454F,
        ];
        for (k, &e) in expected.iter().enumerate() {
            assert_eq!(splitmix64(0, k as u64), e);
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: goes up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0 + 1e-6), 0x3F81);
        assert_eq!(bf16_to_f32(0x3F81), 1.0 + 1.0 / 128.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
    }

    #[test]
    fn output_is_the_mask_times_the_scale() {
        let d = Dropout::new(0.25, 42).unwrap();
        assert_eq!(d.p(), 0.25);
        assert_eq!(d.scale(), 4.0 / 3.0);
        let n = 3 * CHUNK + 7; // several tasks and a ragged tail
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 48.0).collect();
        let mut out = vec![f32::NAN; n];
        d.apply_f32(&x, &mut out).unwrap();
        for i in 0..n {
            let want = if d.keeps(i) {
                x[i] * d.scale()
            } else {
                x[i] * 0.0
            };
            assert_eq!(out[i].to_bits(), want.to_bits(), "element {i}");
        }
        let kept = (0..n).filter(|&i| d.keeps(i)).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.005, "kept share {kept}");
    }

    #[test]
    fn bf16_output_rounds_the_f32_product() {
        let d = Dropout::new(0.1, 7).unwrap();
        let n = 2 * CHUNK + 5; // crosses task boundaries
        let x: Vec<u16> = (0..n)
            .map(|i| f32_to_bf16((i as f32 - 5000.0) / 37.0))
            .collect();
        let mut out = vec![0u16; x.len()];
        d.apply_bf16(&x, &mut out).unwrap();
        for i in 0..x.len() {
            let want = if d.keeps(i) {
                f32_to_bf16(bf16_to_f32(x[i]) * d.scale())
            } else {
                f32_to_bf16(bf16_to_f32(x[i]) * 0.0) // +0 or -0
            };
            assert_eq!(out[i], want);
        }
    }

    #[test]
    fn edge_probabilities_and_errors() {
        let x = vec![1.0f32; 100];
        let mut out = vec![5.0f32; 100];
        Dropout::new(0.0, 1)
            .unwrap()
            .apply_f32(&x, &mut out)
            .unwrap();
        assert_eq!(out, x);
        Dropout::new(1.0, 1)
            .unwrap()
            .apply_f32(&x, &mut out)
            .unwrap();
        assert!(out.iter().all(|&v| v == 0.0));
        // Non-finite values: NaN wherever dropped (x * 0, as torch), scaled where kept.
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -2.0];
        let d = Dropout::new(0.5, 3).unwrap();
        let x: Vec<f32> = (0..400).map(|i| special[i % 4]).collect();
        let mut out = vec![0.0f32; 400];
        d.apply_f32(&x, &mut out).unwrap();
        let (mut kept, mut dropped) = (0, 0);
        for (i, &o) in out.iter().enumerate() {
            match (i % 4, d.keeps(i)) {
                (0, _) | (1 | 2, false) => assert!(o.is_nan()),
                (1, true) => assert_eq!(o, f32::INFINITY),
                (2, true) => assert_eq!(o, f32::NEG_INFINITY),
                (_, true) => assert_eq!(o, -4.0),
                (_, false) => assert_eq!(o.to_bits(), (-0.0f32).to_bits()),
            }
            if d.keeps(i) {
                kept += 1
            } else {
                dropped += 1
            }
        }
        assert!(kept > 100 && dropped > 100);
        let mut out = vec![0.0f32; 400];
        Dropout::new(1.0, 3)
            .unwrap()
            .apply_f32(&x, &mut out)
            .unwrap();
        assert!((0..400).all(|i| if i % 4 == 3 {
            out[i] == 0.0
        } else {
            out[i].is_nan()
        }));
        assert!(Dropout::new(f64::NAN, 1).is_err());
        assert!(Dropout::new(-0.1, 1).is_err());
        assert!(Dropout::new(1.5, 1).is_err());
        let err = Dropout::new(0.1, 1)
            .unwrap()
            .apply_f32(&x, &mut out[..99])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "out: expected 400 elements (as many as x), got 99"
        );
    }

    #[test]
    fn same_mask_on_any_thread_count() {
        let d = Dropout::new(0.1, 99).unwrap();
        let x = vec![1.0f32; 5 * CHUNK + 3];
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0f32; x.len()];
            pool.install(|| d.apply_f32(&x, &mut out)).unwrap();
            out
        };
        assert_eq!(run(1), run(4));
    }

    proptest::proptest! {
        #[test]
        fn every_length_and_seed_matches_the_scalar_mask(
            n in 0usize..3 * BLOCK + 9,
            seed: u64,
            p in 0.0f64..=1.0,
            offset in 0usize..2 * CHUNK,
        ) {
            // A slice placed after `offset` elements of a longer array: the vectorised blocks of
            // every task agree with `keeps`, wherever the chunk and block boundaries fall.
            let d = Dropout::new(p, seed).unwrap();
            let len = offset + n;
            let x: Vec<f32> = (0..len).map(|i| 1.0 + (i % 3) as f32).collect();
            let mut out = vec![f32::NAN; len];
            d.apply_f32(&x, &mut out).unwrap();
            for i in offset..len {
                let want = if d.keeps(i) { x[i] * d.scale() } else { 0.0 };
                proptest::prop_assert_eq!(out[i], want);
            }
        }
    }
}
