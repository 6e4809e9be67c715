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

use multiversion::multiversion;
use rayon::prelude::*;

use crate::codebooks::Codebooks;
use crate::error::{check_finite, Error, Result};
use crate::kernels::{self, sq_dist, sq_norm, sub_sq_norm};

/// Rows of the distance GEMM per tile (the whole tile's residuals stay in L2 across levels).
pub(crate) const TILE_ROWS: usize = 256;
/// Items per tile in beam search (the GEMM runs over the items, not their beams), fewer when
/// their scratch (`beam × (K + 2·D)` floats each) would pass [`BEAM_TILE_BYTES`].
const BEAM_TILE_ITEMS: usize = 128;
/// Scratch of one beam-search tile (per worker thread).
const BEAM_TILE_BYTES: usize = 64 << 20;
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
    let len = crate::alloc::elements::<f32>("x", &[n, levels])?;
    let mut enc = Encoding {
        codes: crate::alloc::try_filled("x", len, 0)?,
        errors: crate::alloc::try_filled("x", len, 0.0)?,
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
            |s, x, c, e| greedy_tile(s, cb, x, c, e),
        );
    } else {
        // Each item holds `beam` residuals (now and next level) and `beam × K` distances.
        let max_k = cb.sizes().iter().copied().max().unwrap_or(1);
        let per_item = beam
            .saturating_mul(max_k.saturating_add(2 * d))
            .saturating_mul(std::mem::size_of::<f32>());
        if per_item > MAX_CROSS_BYTES {
            return Err(Error::value(
                "beam",
                format!("beam x (K + 2*D) x 4 bytes <= {MAX_CROSS_BYTES} of scratch per item"),
                format!("beam {beam} with K = {max_k}, D = {d}"),
            ));
        }
        let items = (BEAM_TILE_BYTES / per_item).clamp(1, BEAM_TILE_ITEMS);
        let cross = cross_tables(cb)?;
        tiles(
            &mut enc,
            x,
            items,
            levels,
            d,
            || BeamScratch::new(beam, &cross),
            |s, x, c, e| beam_tile(s, cb, x, c, e),
        );
    }
    Ok(enc)
}

// The tile workers are compiled for several instruction sets and picked at run time: the
// wheel targets baseline x86-64, but the kernels inlined here want AVX-512 or AVX2. The lane
// structure of every reduction is fixed in the source, so all versions give the same bits.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
    "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
))]
fn greedy_tile(
    s: &mut GreedyScratch,
    cb: &Codebooks,
    x: &[f32],
    codes: &mut [u16],
    errors: &mut [f32],
) {
    s.run(cb, x, codes, errors)
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
    "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
))]
fn beam_tile(
    s: &mut BeamScratch,
    cb: &Codebooks,
    x: &[f32],
    codes: &mut [u16],
    errors: &mut [f32],
) {
    s.run(cb, x, codes, errors)
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

/// `out (m, n) = alpha·out + beta·a (m, d)·b (n, d)ᵀ`, all row-major, on the calling thread
/// (`alpha` is 1 when `accumulate`, else `out` is overwritten).
#[allow(clippy::too_many_arguments)]
fn gemm_nt(
    a: &[f32],
    m: usize,
    b: &[f32],
    n: usize,
    d: usize,
    out: &mut [f32],
    beta: f32,
    accumulate: bool,
) {
    assert!(a.len() >= m * d && b.len() >= n * d && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the strides describe `a` as (m, d) row-major, `b` read as its transpose (d, n),
    // and `out` as (m, n) row-major; the assert keeps every access in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            d,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out[i, j] = ||c_j||² - 2·r_i·c_j` for the `rows` vectors in `r` and the codewords of
/// level `l`: the squared distance minus `||r_i||²`, which does not change the argmin.
/// One cache-blocked GEMM accumulating onto the prefilled norms.
#[inline(always)]
pub(crate) fn distances(cb: &Codebooks, l: usize, r: &[f32], rows: usize, out: &mut Vec<f32>) {
    out.clear();
    for _ in 0..rows {
        out.extend_from_slice(cb.norms(l));
    }
    gemm_nt(
        r,
        rows,
        cb.level(l),
        cb.sizes()[l],
        cb.dim(),
        out,
        -2.0,
        true,
    );
}

/// `2·c^m_i·c^l_j` for every pair of levels `m < l`: `tables[l][m]` is (K_m, K_l) row-major.
/// With them, beam search gets every beam's distances from one GEMM of the *input* per level
/// (faiss's "beam LUT"): `||r_b - c||² = ||r_b||² + ||c||² - 2 x·c + Σ_{m<l} 2 c^m_{b_m}·c`.
/// Their total size is bounded by [`MAX_CROSS_BYTES`]: past it, beam search is an error
/// naming `beam` (greedy needs no tables).
fn cross_tables(cb: &Codebooks) -> Result<Vec<Vec<Vec<f32>>>> {
    let (d, sizes) = (cb.dim(), cb.sizes());
    let pairs: usize = (0..sizes.len())
        .flat_map(|l| (0..l).map(move |m| sizes[m] * sizes[l]))
        .sum();
    if pairs.saturating_mul(4) > MAX_CROSS_BYTES {
        return Err(Error::value(
            "beam",
            format!(
                "1 (greedy) for these codebooks: beam search keeps Σ K_m·K_l codeword products, \
                 at most {} MiB",
                MAX_CROSS_BYTES >> 20
            ),
            format!(
                "a beam over level sizes {sizes:?} ({} MiB)",
                (pairs * 4) >> 20
            ),
        ));
    }
    (0..cb.levels())
        .map(|l| {
            (0..l)
                .map(|m| {
                    let mut t = crate::alloc::try_filled("beam", sizes[m] * sizes[l], 0.0)?;
                    gemm_nt(
                        cb.level(m),
                        sizes[m],
                        cb.level(l),
                        sizes[l],
                        d,
                        &mut t,
                        2.0,
                        false,
                    );
                    Ok(t)
                })
                .collect()
        })
        .collect()
}

/// Bound on the beam search's codeword-product tables (1 GiB: three levels of 8,192 codes).
pub const MAX_CROSS_BYTES: usize = 1 << 30;

/// Half-width of the window in which GEMM-form values `||c||² - 2 r·c` at level `l` may be
/// misordered by rounding, for a residual of squared norm `rn`: the dot product's error grows
/// with `||r||·||c||`, the norm's with `||c||²`.
#[inline(always)]
fn window(cb: &Codebooks, l: usize, rn: f32) -> f32 {
    let cn = cb.max_norm(l);
    rounding(cb) * (2.0 * (rn * cn).sqrt() + cn) + underflow(cb)
}

/// The same window for beam distances assembled from `x·c` and the cross tables: each of the
/// dot products summed there (`x·c`, `c^m·c`) brings its own `||a||·||c||`-sized error.
#[inline(always)]
fn beam_window(cb: &Codebooks, l: usize, xn: f32, rn: f32) -> f32 {
    let cn = cb.max_norm(l);
    let cross: f32 = (0..l).map(|m| 2.0 * (cb.max_norm(m) * cn).sqrt()).sum();
    rounding(cb) * (2.0 * (xn * cn).sqrt() + cross + cn + rn) + (l as f32 + 2.0) * underflow(cb)
}

/// Relative rounding allowance of a length-D f32 dot product (`√D` growth, with slack).
#[inline(always)]
fn rounding(cb: &Codebooks) -> f32 {
    U * (16.0 + 4.0 * (cb.dim() as f32).sqrt())
}

/// Absolute rounding allowance: a product that falls into f32's subnormal range keeps an
/// absolute error of up to one subnormal step (2^-149), which no relative term covers (tiny
/// inputs, e.g. embeddings scaled by 1e-22). A norm and a dot product: 2·D + 4 such steps.
#[inline(always)]
fn underflow(cb: &Codebooks) -> f32 {
    (2.0 * cb.dim() as f32 + 4.0) * f32::from_bits(1)
}

/// The exact nearest codeword of level `l` to `r`, given `v[j] ≈ ||r - c_j||² - ||r||²`
/// accurate to ± `tol`. Codewords within `2·tol` of the smallest `v` are re-ranked by their
/// exact distance (ties → lowest code); usually there is only one.
#[inline(always)]
fn nearest(cb: &Codebooks, l: usize, r: &[f32], tol: f32, v: &[f32]) -> usize {
    let limit = kernels::min(v) + 2.0 * tol;
    let (mut best, mut best_d, mut seen) = (0, f64::INFINITY, 0);
    kernels::for_each_at_most(v, limit, |j| {
        seen += 1;
        if seen == 1 {
            best = j;
            return;
        }
        if seen == 2 {
            best_d = sq_dist(r, cb.codeword(l, best));
        }
        let dj = sq_dist(r, cb.codeword(l, j));
        if dj < best_d {
            best_d = dj;
            best = j;
        }
    });
    best
}

#[derive(Default)]
struct GreedyScratch {
    resid: Vec<f32>,
    rnorm: Vec<f32>,
    dist: Vec<f32>,
}

impl GreedyScratch {
    #[inline(always)]
    fn run(&mut self, cb: &Codebooks, x: &[f32], codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let rows = x.len() / d;
        self.resid.clear();
        self.resid.extend_from_slice(x);
        self.rnorm.clear();
        self.rnorm
            .extend(x.chunks_exact(d).map(|r| sq_norm(r) as f32));
        for l in 0..levels {
            let k = cb.sizes()[l];
            distances(cb, l, &self.resid, rows, &mut self.dist);
            for (i, r) in self.resid.chunks_exact_mut(d).enumerate() {
                let tol = window(cb, l, self.rnorm[i]);
                let code = nearest(cb, l, r, tol, &self.dist[i * k..(i + 1) * k]);
                codes[i * levels + l] = code as u16;
                self.rnorm[i] = sub_sq_norm(r, cb.codeword(l, code)) as f32;
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
    #[inline(always)]
    fn push_child(&mut self, from: &BeamSet, parent: usize, cb: &Codebooks, l: usize, code: usize) {
        let (d, levels) = (cb.dim(), cb.levels());
        let r0 = self.resid.len();
        self.resid
            .extend_from_slice(&from.resid[parent * d..(parent + 1) * d]);
        let rn = sub_sq_norm(&mut self.resid[r0..], cb.codeword(l, code)) as f32;
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

struct BeamScratch<'t> {
    beam: usize,
    cross: &'t [Vec<Vec<f32>>],
    cur: BeamSet,
    next: BeamSet,
    /// `||x_i||²` per item of the tile.
    xnorm: Vec<f32>,
    /// `||c_j||² - 2 x_i·c_j` per item (from one GEMM of the input).
    xdist: Vec<f32>,
    /// `≈ ||r_b - c_j||² - ||r_b||²` per beam.
    dist: Vec<f32>,
    top: Vec<Cand>,
}

impl<'t> BeamScratch<'t> {
    fn new(beam: usize, cross: &'t [Vec<Vec<f32>>]) -> Self {
        Self {
            beam,
            cross,
            cur: BeamSet::default(),
            next: BeamSet::default(),
            xnorm: Vec::new(),
            xdist: Vec::new(),
            dist: Vec::new(),
            top: Vec::with_capacity(beam + 1),
        }
    }

    /// Every beam's `dist` row at level `l`: its item's `xdist` row plus the cross-table rows
    /// of the beam's earlier codes.
    #[inline(always)]
    fn beam_distances(&mut self, cb: &Codebooks, l: usize) {
        let (k, levels) = (cb.sizes()[l], cb.levels());
        let cur = &self.cur;
        self.dist.clear();
        for i in 0..cur.start.len() - 1 {
            for b in cur.start[i]..cur.start[i + 1] {
                let xrow = &self.xdist[i * k..(i + 1) * k];
                let table_row = |m: usize| {
                    let code = cur.codes[b * levels + m] as usize;
                    &self.cross[l][m][code * k..(code + 1) * k]
                };
                let row0 = self.dist.len();
                if l == 0 {
                    self.dist.extend_from_slice(xrow);
                } else {
                    self.dist
                        .extend(xrow.iter().zip(table_row(0)).map(|(&a, &t)| a + t));
                }
                for m in 1..l {
                    let row = &mut self.dist[row0..];
                    row.iter_mut().zip(table_row(m)).for_each(|(a, &t)| *a += t);
                }
            }
        }
    }

    #[inline(always)]
    fn run(&mut self, cb: &Codebooks, x: &[f32], codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let items = x.len() / d;
        // Level 0 starts from one beam per item: the item itself, no codes yet.
        self.cur.clear();
        self.cur.resid.extend_from_slice(x);
        self.xnorm.clear();
        self.xnorm
            .extend(x.chunks_exact(d).map(|r| sq_norm(r) as f32));
        self.cur.rnorm.extend_from_slice(&self.xnorm);
        self.cur.codes.resize(items * levels, 0);
        self.cur.errors.resize(items * levels, 0.0);
        self.cur.start.extend(1..=items);
        self.cur.greedy.extend(0..items);
        for l in 0..levels {
            distances(cb, l, x, items, &mut self.xdist);
            self.beam_distances(cb, l);
            if l + 1 == levels {
                self.finish(cb, codes, errors);
            } else {
                self.extend(cb, l);
                std::mem::swap(&mut self.cur, &mut self.next);
            }
        }
    }

    /// Keeps the `beam` best children of each item's beams (plus the greedy path's child).
    #[inline(always)]
    fn extend(&mut self, cb: &Codebooks, l: usize) {
        let (d, k) = (cb.dim(), cb.sizes()[l]);
        let (cur, beam) = (&self.cur, self.beam);
        self.next.clear();
        for i in 0..cur.start.len() - 1 {
            // Top-`beam` smallest by (error, parent, code): candidates arrive in increasing
            // (parent, code) order, so a tie never displaces an earlier candidate.
            let top = &mut self.top;
            top.clear();
            for b in cur.start[i]..cur.start[i + 1] {
                let v = &self.dist[b * k..(b + 1) * k];
                let rn = cur.rnorm[b];
                // Once the list is full, only codes beating its worst entry can enter: the
                // bound is refreshed every block of lanes, so most blocks are skipped whole.
                let mut worst = top.get(beam - 1).map_or(f32::INFINITY, |t| t.0);
                for (c, ch) in v.chunks(kernels::LANES).enumerate() {
                    let mut mask = kernels::mask_at_most(ch, worst - rn);
                    while mask != 0 {
                        let j = c * kernels::LANES + mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        let e = rn + v[j];
                        if e >= worst {
                            continue;
                        }
                        if top.len() == beam {
                            top.pop();
                        }
                        let at = top.partition_point(|t| t.0 <= e);
                        top.insert(at, (e, b, j));
                        worst = top.get(beam - 1).map_or(f32::INFINITY, |t| t.0);
                    }
                }
            }
            let g = cur.greedy[i];
            let gr = &cur.resid[g * d..(g + 1) * d];
            let tol = beam_window(cb, l, self.xnorm[i], cur.rnorm[g]);
            let gj = nearest(cb, l, gr, tol, &self.dist[g * k..(g + 1) * k]);
            let row0 = self.next.rnorm.len();
            let mut greedy_row = None;
            for (t, &(_, b, j)) in self.top.iter().enumerate() {
                if b == g && j == gj {
                    greedy_row = Some(row0 + t);
                }
                self.next.push_child(cur, b, cb, l, j);
            }
            let greedy_row = greedy_row.unwrap_or_else(|| {
                self.next.push_child(cur, g, cb, l, gj);
                self.next.rnorm.len() - 1
            });
            self.next.greedy.push(greedy_row);
            self.next.start.push(self.next.rnorm.len());
        }
    }

    /// Picks each item's exact best final extension and writes its codes and errors.
    #[inline(always)]
    fn finish(&self, cb: &Codebooks, codes: &mut [u16], errors: &mut [f32]) {
        let (d, levels) = (cb.dim(), cb.levels());
        let l = levels - 1;
        let k = cb.sizes()[l];
        let cur = &self.cur;
        for i in 0..cur.start.len() - 1 {
            let beams = cur.start[i]..cur.start[i + 1];
            let (mut best_e, mut rn_max) = (f32::INFINITY, 0.0f32);
            for b in beams.clone() {
                rn_max = rn_max.max(cur.rnorm[b]);
                best_e = best_e.min(cur.rnorm[b] + kernels::min(&self.dist[b * k..(b + 1) * k]));
            }
            let limit = best_e + 2.0 * beam_window(cb, l, self.xnorm[i], rn_max);
            // Starts at this item's first beam: never another item's row, even if no candidate
            // passed the window (only possible with non-finite values, which are refused).
            let (mut best, mut best_d) = ((beams.start, 0), f64::INFINITY);
            for b in beams {
                let r = &cur.resid[b * d..(b + 1) * d];
                let v = &self.dist[b * k..(b + 1) * k];
                kernels::for_each_at_most(v, limit - cur.rnorm[b], |j| {
                    let dj = sq_dist(r, cb.codeword(l, j));
                    if dj < best_d {
                        best_d = dj;
                        best = (b, j);
                    }
                });
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
    let len = crate::alloc::elements::<f32>("codes", &[n, d])?;
    let mut out = crate::alloc::try_filled("codes", len, 0.0f32)?;
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

/// For every row of `x` ((rows, D), one tile) against level `l` of `cb`: the exact nearest
/// codeword (ties → lowest code), its squared distance, and a lower bound on the squared
/// distance to every other codeword (the GEMM value of the runner-up minus its rounding
/// window). Used by k-means' bounded (Hamerly) assignment.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
    "x86_64+avx2+fma+bmi1+bmi2+lzcnt+popcnt",
))]
pub(crate) fn bound_tile(
    cb: &Codebooks,
    l: usize,
    x: &[f32],
    dist: &mut Vec<f32>,
    labels: &mut [u32],
    err: &mut [f32],
    second: &mut [f32],
) {
    let (d, k) = (cb.dim(), cb.sizes()[l]);
    let rows = x.len() / d;
    distances(cb, l, x, rows, dist);
    for (i, r) in x.chunks_exact(d).enumerate() {
        let rn = sq_norm(r) as f32;
        let tol = window(cb, l, rn);
        let v = &mut dist[i * k..(i + 1) * k];
        let best = nearest(cb, l, r, tol, v);
        v[best] = f32::INFINITY;
        let runner_up = kernels::min(v);
        labels[i] = best as u32;
        err[i] = sq_dist(r, cb.codeword(l, best)) as f32;
        second[i] = (runner_up + rn - 2.0 * tol).max(0.0);
    }
}
