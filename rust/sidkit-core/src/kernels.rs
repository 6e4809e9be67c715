//! Small vectorisable kernels. Floating-point reductions are written with a fixed number of
//! independent lanes: LLVM may not reorder a sequential float sum, but it does map a fixed
//! lane array onto SIMD registers. The lane order is fixed, so results are deterministic.

/// Lanes of every reduction (explicit `for i in 0..LANES` loops are what LLVM vectorises).
pub const LANES: usize = 16;

/// `Σ a_i²`, accumulated in f64 lanes.
#[inline(always)]
pub fn sq_norm(a: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            let v = ch[i] as f64;
            acc[i] += v * v;
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] += (v as f64) * (v as f64);
    }
    acc.iter().sum()
}

/// `Σ (a_i - b_i)²` of the f32 differences, accumulated in f64 lanes.
#[inline(always)]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let split = n - n % LANES;
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            let v = (ca[i] - cb[i]) as f64;
            acc[i] += v * v;
        }
    }
    for (i, (&x, &y)) in a[split..].iter().zip(&b[split..]).enumerate() {
        let v = (x - y) as f64;
        acc[i] += v * v;
    }
    acc.iter().sum()
}

/// `r -= c`, returning the new `||r||²` (the same value `sq_norm` gives).
#[inline(always)]
pub fn sub_sq_norm(r: &mut [f32], c: &[f32]) -> f64 {
    r.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
    sq_norm(r)
}

/// The smallest value of a non-empty slice without NaN.
#[inline(always)]
pub fn min(v: &[f32]) -> f32 {
    let mut m = [f32::INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            m[i] = if ch[i] < m[i] { ch[i] } else { m[i] };
        }
    }
    for (i, &x) in tail.iter().enumerate() {
        m[i] = if x < m[i] { x } else { m[i] };
    }
    m.iter()
        .copied()
        .fold(f32::INFINITY, |a, b| if b < a { b } else { a })
}

/// Bit `i` set where `ch[i] <= limit` (`ch` holds at most 32 values).
#[inline(always)]
pub fn mask_at_most(ch: &[f32], limit: f32) -> u32 {
    let mut mask = 0u32;
    for (i, &x) in ch.iter().enumerate() {
        mask |= ((x <= limit) as u32) << i;
    }
    mask
}

/// Calls `f(j)` for every `j` with `v[j] <= limit`, in increasing `j`.
#[inline(always)]
pub fn for_each_at_most(v: &[f32], limit: f32, mut f: impl FnMut(usize)) {
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut base = 0;
    for ch in chunks {
        let mut mask = 0u32;
        for i in 0..LANES {
            mask |= ((ch[i] <= limit) as u32) << i;
        }
        while mask != 0 {
            f(base + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
        base += LANES;
    }
    for (i, &x) in tail.iter().enumerate() {
        if x <= limit {
            f(base + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_plain_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
        assert!((sq_norm(&a) - plain).abs() < 1e-12);
        let plain: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum();
        assert!((sq_dist(&a, &b) - plain).abs() < 1e-12);
        assert_eq!(min(&a), a.iter().copied().fold(f32::INFINITY, f32::min));
        let mut hits = vec![];
        for_each_at_most(&a, 0.1, |j| hits.push(j));
        let want: Vec<usize> = (0..a.len()).filter(|&j| a[j] <= 0.1).collect();
        assert_eq!(hits, want);
        let mut r = a.clone();
        let n = sub_sq_norm(&mut r, &b);
        assert!((n - sq_dist(&a, &b)).abs() < 1e-12);
    }
}
