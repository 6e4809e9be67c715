//! Residual-quantization assignment: greedy (`beam = 1`) and beam search, plus decoding.
//!
//! Distances are computed as `||r||² - 2·r·cᵀ + ||c||²`, the `r·cᵀ` part with a cache-blocked
//! GEMM over a tile of rows, fused with the argmin while the tile is hot in cache. The GEMM form
//! loses precision to cancellation when `||r||` is large against the gaps between distances, so
//! every codeword whose approximate distance lies within a rounding window of the minimum is
//! re-ranked with an exact `Σ (r - c)²` accumulated in f64. The code chosen is therefore the
//! exact nearest codeword of the f32 residual, ties going to the lowest code.
//!
//! Work is split into tiles of a fixed number of rows that do not depend on the thread count,
//! and each tile is computed by one thread: the result is bit-identical for any pool size.

use rayon::prelude::*;

use crate::codebooks::{sq_dist, sq_norm, Codebooks};
use crate::error::{check_finite, Error, Result};

/// Rows of the distance GEMM per tile (the whole tile's residuals stay in L2 across levels).
const TILE_ROWS: usize = 256;
/// Largest beam width accepted; more than `K^(L-1)` beams never changes the result anyway.
pub const MAX_BEAM: usize = 4096;
/// Unit round-off of f32.
const U: f32 = f32::EPSILON / 2.0;

/// Codes and per-level errors of an encoding, both row-major (n, L).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    /// `codes[i * L + l]`: the code of item `i` at level `l`.
    pub codes: Vec<u16>,
    /// `errors[i * L + l]`: `||x_i - Σ_{m<=l} c_m||²`, the squared residual left after level `l`.
    pub errors: Vec<f32>,
}

/// Encodes the rows of `x` (row-major (n, D)) with residual quantization.
///
/// `beam = 1` is greedy: at each level, the nearest codeword to the current residual.
/// `beam = B > 1` keeps the `B` best partial encodings by total residual error at every level
/// (as faiss's `ResidualQuantizer` does) and also carries the greedy path, so the result is
/// never worse than greedy.
pub fn encode(cb: &Codebooks, x: &[f32], beam: usize) -> Result<Encoding> {
    let d = cb.dim();
    if x.len() % d != 0 {
        return Err(Error::shape(
            "x",
            format!("a multiple of D = {d} values (n, {d})"),
            x.len(),
        ));
    }
    if beam == 0 || beam > MAX_BEAM {
        return Err(Error::value(
            "beam",
            format!("1 <= beam <= {MAX_BEAM}"),
            beam,
        ));
    }
    check_finite("x", x)?;
    let n = x.len() / d;
    let levels = cb.levels();
    let mut enc = Encoding {
        codes: vec![0; n * levels],
        errors: vec![0.0; n * levels],
    };
    // More beams than partial encodings at the second-to-last level change nothing.
    let beam = beam.min(
        cb.sizes()[..levels - 1]
            .iter()
            .try_fold(1usize, |acc, &k| acc.checked_mul(k))
            .unwrap_or(usize::MAX),
    );
    if beam == 1 {
        tiles(
            &mut enc,
            x,
            TILE_ROWS,
            levels,
            d,
            GreedyScratch::default,
            |s, x, c, e| s.run(cb, x, c, e),
        );
    } else {
        let items = (TILE_ROWS / (beam + 1)).max(1);
        tiles(
            &mut enc,
            x,
            items,
            levels,
            d,
            || BeamScratch::new(beam),
            |s, x, c, e| s.run(cb, x, c, e),
        );
    }
    Ok(enc)
}

/// Runs `work` on fixed tiles of `rows` rows in parallel, one scratch space per rayon task.
fn tiles<S, I, W>(
    enc: &mut Encoding,
    x: &[f32],
    rows: usize,
    levels: usize,
    d: usize,
    init: I,
    work: W,
) where
    I: Fn() -> S + Sync + Send,
    W: Fn(&mut S, &[f32], &mut [u16], &mut [f32]) + Sync + Send,
{
    enc.codes
        .par_chunks_mut(rows * levels)
        .zip(enc.errors.par_chunks_mut(rows * levels))
        .zip(x.par_chunks(rows * d))
        .for_each_init(init, |s, ((c, e), x)| work(s, x, c, e));
}

/// `out (m, n) = a (m, k) · b (n, k)ᵀ`, all row-major, on the calling thread.
fn matmul_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && out.len() >= m * n);
    if m == 0 {
        return;
    }
    // SAFETY: the strides describe `a` as (m, k) row-major, `b` read as its transpose (k, n),
    // and `out` as (m, n) row-major; the asserts above keep every access in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Half-width of the window in which GEMM-form distances at level `l` may be misordered by
/// rounding, for a residual of squared norm `rn` (a bound on `|ε|` of `||c||² - 2 r·c`, with
/// `2|r·c| <= ||r||² + ||c||²` and a `√D`-growth rounding model plus slack).
fn window(cb: &Codebooks, l: usize, rn: f32) -> f32 {
    U * (16.0 + 4.0 * (cb.dim() as f32).sqrt()) * (rn + cb.max_norm(l))
}

/// The exact nearest codeword of level `l` to `r` (`||r||² = rn`), given the GEMM dot products
/// `dots[j] = r·c_j`. Returns the code and its exact squared distance; ties → lowest code.
fn nearest(cb: &Codebooks, l: usize, r: &[f32], rn: f32, dots: &[f32]) -> (usize, f64) {
    let norms = cb.norms(l);
    let (mut best, mut best_v) = (0, f32::INFINITY);
    for (j, (&c, &g)) in norms.iter().zip(dots).enumerate() {
        let v = c - 2.0 * g;
        if v < best_v {
            best_v = v;
            best = j;
        }
    }
    let limit = best_v + 2.0 * window(cb, l, rn);
    let mut best_d = sq_dist(r, cb.codeword(l, best));
    for (j, (&c, &g)) in norms.iter().zip(dots).enumerate() {
        if j != best && c - 2.0 * g <= limit {
            let dj = sq_dist(r, cb.codeword(l, j));
            if dj < best_d || (dj == best_d && j < best) {
                best_d = dj;
                best = j;
            }
        }
    }
    (best, best_d)
}

fn sub_assign(r: &mut [f32], c: &[f32]) {
    r.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
}

#[derive(Default)]
struct GreedyScratch {
    resid: Vec<f32>,
    rnorm: Vec<f32>,
    dots: Vec<f32>,
}

impl GreedyScratch {
    fn run(&mut self, cb: &Codebooks, x: &[f32], codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let rows = x.len() / d;
        self.resid.clear();
        self.resid.extend_from_slice(x);
        self.rnorm.clear();
        self.rnorm.extend(x.chunks_exact(d).map(sq_norm));
        for l in 0..levels {
            let k = cb.sizes()[l];
            self.dots.resize(rows * k, 0.0);
            matmul_nt(&self.resid, cb.level(l), rows, k, d, &mut self.dots);
            for (i, r) in self.resid.chunks_exact_mut(d).enumerate() {
                let (code, _) = nearest(cb, l, r, self.rnorm[i], &self.dots[i * k..(i + 1) * k]);
                codes[i * levels + l] = code as u16;
                sub_assign(r, cb.codeword(l, code));
                self.rnorm[i] = sq_norm(r);
                errors[i * levels + l] = self.rnorm[i];
            }
        }
    }
}

/// The beams of a tile of items, stored compactly: the beams of item `i` are rows
/// `start[i]..start[i + 1]` of every per-beam array.
#[derive(Default)]
struct BeamSet {
    resid: Vec<f32>,
    rnorm: Vec<f32>,
    codes: Vec<u16>,
    errors: Vec<f32>,
    start: Vec<usize>,
    /// Row of the greedy path's beam, per item.
    greedy: Vec<usize>,
}

impl BeamSet {
    fn clear(&mut self) {
        self.resid.clear();
        self.rnorm.clear();
        self.codes.clear();
        self.errors.clear();
        self.start.clear();
        self.start.push(0);
        self.greedy.clear();
    }

    /// Appends beam `parent` of `from` extended with `code` at level `l`.
    fn push_child(&mut self, from: &BeamSet, parent: usize, cb: &Codebooks, l: usize, code: usize) {
        let (d, levels) = (cb.dim(), cb.levels());
        let r0 = self.resid.len();
        self.resid
            .extend_from_slice(&from.resid[parent * d..(parent + 1) * d]);
        let r = &mut self.resid[r0..];
        sub_assign(r, cb.codeword(l, code));
        let rn = sq_norm(r);
        self.rnorm.push(rn);
        let c0 = self.codes.len();
        self.codes
            .extend_from_slice(&from.codes[parent * levels..(parent + 1) * levels]);
        self.codes[c0 + l] = code as u16;
        self.errors
            .extend_from_slice(&from.errors[parent * levels..(parent + 1) * levels]);
        self.errors[c0 + l] = rn;
    }
}

/// A candidate extension: approximate total error, parent beam row, code.
type Cand = (f32, usize, usize);

struct BeamScratch {
    beam: usize,
    cur: BeamSet,
    next: BeamSet,
    dots: Vec<f32>,
    top: Vec<Cand>,
}

impl BeamScratch {
    fn new(beam: usize) -> Self {
        Self {
            beam,
            cur: BeamSet::default(),
            next: BeamSet::default(),
            dots: Vec::new(),
            top: Vec::with_capacity(beam + 1),
        }
    }

    fn run(&mut self, cb: &Codebooks, x: &[f32], codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let items = x.len() / d;
        // Level 0 starts from one beam per item: the item itself, no codes yet.
        self.cur.clear();
        self.cur.resid.extend_from_slice(x);
        self.cur.rnorm.extend(x.chunks_exact(d).map(sq_norm));
        self.cur.codes.resize(items * levels, 0);
        self.cur.errors.resize(items * levels, 0.0);
        self.cur.start.extend(1..=items);
        self.cur.greedy.extend(0..items);
        for l in 0..levels {
            let k = cb.sizes()[l];
            let rows = self.cur.rnorm.len();
            self.dots.resize(rows * k, 0.0);
            matmul_nt(&self.cur.resid, cb.level(l), rows, k, d, &mut self.dots);
            if l + 1 == levels {
                self.finish(cb, codes, errors);
            } else {
                self.extend(cb, l);
                std::mem::swap(&mut self.cur, &mut self.next);
            }
        }
    }

    /// Keeps the `beam` best children of each item's beams (plus the greedy path's child).
    fn extend(&mut self, cb: &Codebooks, l: usize) {
        let (d, k) = (cb.dim(), cb.sizes()[l]);
        let norms = cb.norms(l);
        let cur = &self.cur;
        self.next.clear();
        for i in 0..cur.start.len() - 1 {
            // Top-`beam` smallest by (error, parent, code): candidates arrive in increasing
            // (parent, code) order, so a tie never displaces an earlier candidate.
            self.top.clear();
            for b in cur.start[i]..cur.start[i + 1] {
                let dots = &self.dots[b * k..(b + 1) * k];
                for (j, (&c, &g)) in norms.iter().zip(dots).enumerate() {
                    let v = cur.rnorm[b] + c - 2.0 * g;
                    if self.top.len() == self.beam {
                        if v >= self.top[self.beam - 1].0 {
                            continue;
                        }
                        self.top.pop();
                    }
                    let at = self.top.partition_point(|t| t.0 <= v);
                    self.top.insert(at, (v, b, j));
                }
            }
            let g = cur.greedy[i];
            let (gj, _) = nearest(
                cb,
                l,
                &cur.resid[g * d..(g + 1) * d],
                cur.rnorm[g],
                &self.dots[g * k..(g + 1) * k],
            );
            let row0 = self.next.rnorm.len();
            let mut greedy_row = None;
            for (t, &(_, b, j)) in self.top.iter().enumerate() {
                if b == g && j == gj {
                    greedy_row = Some(row0 + t);
                }
                self.next.push_child(cur, b, cb, l, j);
            }
            if greedy_row.is_none() {
                greedy_row = Some(self.next.rnorm.len());
                self.next.push_child(cur, g, cb, l, gj);
            }
            self.next.greedy.push(greedy_row.unwrap_or(row0));
            self.next.start.push(self.next.rnorm.len());
        }
    }

    /// Picks each item's exact best final extension and writes its codes and errors.
    fn finish(&self, cb: &Codebooks, codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let l = levels - 1;
        let k = cb.sizes()[l];
        let norms = cb.norms(l);
        let cur = &self.cur;
        for i in 0..cur.start.len() - 1 {
            let beams = cur.start[i]..cur.start[i + 1];
            let approx = |b: usize, j: usize| cur.rnorm[b] + norms[j] - 2.0 * self.dots[b * k + j];
            let (mut best_v, mut rn_max) = (f32::INFINITY, 0.0f32);
            for b in beams.clone() {
                rn_max = rn_max.max(cur.rnorm[b]);
                for j in 0..k {
                    best_v = best_v.min(approx(b, j));
                }
            }
            let limit = best_v + 2.0 * window(cb, l, rn_max);
            let (mut best, mut best_d) = ((0, 0), f64::INFINITY);
            for b in beams {
                let r = &cur.resid[b * d..(b + 1) * d];
                for j in 0..k {
                    if approx(b, j) <= limit {
                        let dj = sq_dist(r, cb.codeword(l, j));
                        if dj < best_d {
                            best_d = dj;
                            best = (b, j);
                        }
                    }
                }
            }
            let (b, j) = best;
            let out = i * levels..(i + 1) * levels;
            codes[out.clone()].copy_from_slice(&cur.codes[b * levels..(b + 1) * levels]);
            codes[i * levels + l] = j as u16;
            errors[out].copy_from_slice(&cur.errors[b * levels..(b + 1) * levels]);
            errors[i * levels + l] = best_d as f32;
        }
    }
}

/// A code value as stored by a caller (`u16`, `u32`, `i64`, ...), checked before use.
pub trait Code: Copy + Send + Sync {
    /// The code as an index, or `None` if it is negative or does not fit.
    fn index(self) -> Option<usize>;
}

macro_rules! impl_code {
    ($($t:ty),*) => {$(
        impl Code for $t {
            fn index(self) -> Option<usize> {
                usize::try_from(self).ok()
            }
        }
    )*};
}
impl_code!(u8, u16, u32, u64, i16, i32, i64);

/// Checks that `codes` (row-major (n, L)) all lie in `0..K_l`; names the first one that does not.
pub fn check_codes<C: Code>(cb: &Codebooks, codes: &[C]) -> Result<()> {
    let levels = cb.levels();
    if codes.len() % levels != 0 {
        return Err(Error::shape(
            "codes",
            format!("a multiple of L = {levels} values (n, {levels})"),
            codes.len(),
        ));
    }
    for (i, row) in codes.chunks_exact(levels).enumerate() {
        for (l, (&c, &k)) in row.iter().zip(cb.sizes()).enumerate() {
            if c.index().is_none_or(|c| c >= k) {
                return Err(Error::value(
                    "codes",
                    format!("0 <= code < {k} at level {l}"),
                    format!("an out-of-range code at row {i}, level {l}"),
                ));
            }
        }
    }
    Ok(())
}

/// Reconstructs `Σ_l C_l[codes[i, l]]` for each row of `codes` (row-major (n, L)).
pub fn decode<C: Code>(cb: &Codebooks, codes: &[C]) -> Result<Vec<f32>> {
    check_codes(cb, codes)?;
    let (d, levels) = (cb.dim(), cb.levels());
    let n = codes.len() / levels;
    let mut out = vec![0.0f32; n * d];
    out.par_chunks_mut(TILE_ROWS * d)
        .zip(codes.par_chunks(TILE_ROWS * levels))
        .for_each(|(out, codes)| {
            for (o, row) in out.chunks_exact_mut(d).zip(codes.chunks_exact(levels)) {
                for (l, &c) in row.iter().enumerate() {
                    let w = cb.codeword(l, c.index().unwrap_or(0));
                    o.iter_mut().zip(w).for_each(|(a, &b)| *a += b);
                }
            }
        });
    Ok(out)
}
