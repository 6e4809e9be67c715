//! Capacity-constrained ("balanced") assignment for balanced k-means (OneRec's balanced
//! RQ-KMeans): every cluster receives between floor(n/K) and ceil(n/K) points.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::codebooks::Codebooks;
use crate::error::{check_finite, Error, Result};

/// Nearest centroids kept per point before falling back to a full scan.
const CANDIDATES: usize = 64;

/// Greedy capacity-constrained assignment of the rows of `x` ((n, D)) to the codewords of
/// level `level` of `centroids`: all (point, centroid) pairs are taken in increasing squared
/// distance (ties → point index, then centroid index), and a pair is accepted when the point
/// is still free and the centroid has room. Exactly `n mod K` centroids may take
/// `ceil(n / K)` points, the others `floor(n / K)`, so every point is placed. Returns the
/// label of every point and its squared distance. Deterministic for any thread count.
pub fn balanced_assign(
    centroids: &Codebooks,
    level: usize,
    x: &[f32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    let (d, k) = (centroids.dim(), centroids.sizes()[level]);
    if x.len() % d != 0 {
        return Err(Error::shape(
            "x",
            format!("a multiple of D = {d} values"),
            x.len(),
        ));
    }
    check_finite("x", x)?;
    let n = x.len() / d;
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // Every point's `CANDIDATES` nearest centroids, nearest first (exact distances).
    let dist_to =
        |p: &[f32], j: usize| crate::kernels::sq_dist(p, centroids.codeword(level, j)) as f32;
    let by = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let take = CANDIDATES.min(k);
    let ranked: Vec<Vec<(f32, u32)>> = x
        .par_chunks(d)
        .map(|p| {
            let mut row: Vec<(f32, u32)> = (0..k).map(|j| (dist_to(p, j), j as u32)).collect();
            if take < k {
                row.select_nth_unstable_by(take - 1, by);
                row.truncate(take);
                row.shrink_to_fit(); // n rows of K pairs would be 2 GB at 1M x 256
            }
            row.sort_unstable_by(by);
            row
        })
        .collect();
    let (floor, mut big_left) = (n / k, n % k);
    let mut load = vec![0usize; k];
    let mut label = vec![u32::MAX; n];
    let mut dist = vec![0.0f32; n];
    // Lazy global greedy: each point offers its next-nearest centroid; the smallest distance
    // is served first, as a sort of all n·K pairs would.
    // A point whose candidates are all full offers the nearest centroid that still has room,
    // as slot `take + j` (after its candidates, in centroid order), with its real distance: it
    // waits its turn in the heap like any pair. Centroids only fill up, so when it is served
    // and its centroid has filled meanwhile, the next offer is no nearer than this one.
    let key = |dd: f32, i: usize, p: usize| Reverse((crate::collide::ordered_bits(dd), i, p));
    let has_room = |load: &[usize], big_left: usize, j: usize| {
        load[j] < floor || (load[j] == floor && big_left > 0)
    };
    let mut heap: BinaryHeap<_> = (0..n).map(|i| key(ranked[i][0].0, i, 0)).collect();
    while let Some(Reverse((_, i, p))) = heap.pop() {
        let (dd, j) = match ranked[i].get(p) {
            Some(&(dd, j)) => (dd, j as usize),
            None => {
                let j = p - ranked[i].len();
                (dist_to(&x[i * d..(i + 1) * d], j), j)
            }
        };
        if has_room(&load, big_left, j) {
            if load[j] == floor {
                big_left -= 1;
            }
            load[j] += 1;
            label[i] = j as u32;
            dist[i] = dd;
        } else if p + 1 < ranked[i].len() {
            heap.push(key(ranked[i][p + 1].0, i, p + 1));
        } else {
            let point = &x[i * d..(i + 1) * d];
            let (dd, j) = (0..k)
                .filter(|&j| has_room(&load, big_left, j))
                .map(|j| (dist_to(point, j), j))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .ok_or_else(|| {
                    Error::value("x", "a centroid with room", "none (internal error)")
                })?;
            heap.push(key(dd, i, ranked[i].len() + j));
        }
    }
    // Total capacity is exactly n and every point can try every centroid, so all are placed.
    debug_assert!(label.iter().all(|&l| l != u32::MAX));
    Ok((label, dist))
}

/// The k-means update step: the mean of the rows of `x` ((n, D)) with each label in `0..k`.
/// Returns the (k, D) means (rows of empty clusters are zero) and the (k,) member counts.
/// Sums run in f64 over each cluster's members in row order (a counting sort groups them),
/// one cluster per task, so the result does not depend on the thread count.
pub fn centroid_means(
    x: &[f32],
    d: usize,
    labels: &[u32],
    k: usize,
) -> Result<(Vec<f32>, Vec<u64>)> {
    if d == 0 || x.len() % d != 0 {
        return Err(Error::shape(
            "x",
            format!("a multiple of D = {d} values"),
            x.len(),
        ));
    }
    let n = x.len() / d;
    if labels.len() != n {
        return Err(Error::shape(
            "labels",
            format!("({n},)"),
            format!("({},)", labels.len()),
        ));
    }
    if k == 0 {
        return Err(Error::value("k", ">= 1", k));
    }
    if n > u32::MAX as usize {
        // Member rows are stored as u32.
        return Err(Error::shape("x", format!("at most {} rows", u32::MAX), n));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(Error::value("labels", format!("values in 0..{k}"), bad));
    }
    let len = crate::alloc::elements::<f32>("k", &[k, d])?;
    let mut means = crate::alloc::try_filled("k", len, 0.0f32)?;
    let mut counts = crate::alloc::try_filled("k", k, 0u64)?;
    for &l in labels {
        counts[l as usize] += 1;
    }
    let mut start = crate::alloc::try_filled("k", k + 1, 0usize)?;
    for j in 0..k {
        start[j + 1] = start[j] + counts[j] as usize;
    }
    let mut members = vec![0u32; n];
    let mut fill = start.clone();
    for (i, &l) in labels.iter().enumerate() {
        members[fill[l as usize]] = i as u32;
        fill[l as usize] += 1;
    }
    // Every row is read exactly once here, so the finite check rides along (non-finite sums,
    // the largest |v|); only when a cluster is bad is `x` scanned for the first bad value.
    let bad = means
        .par_chunks_mut(d)
        .enumerate()
        .map(|(j, out)| {
            let rows = &members[start[j]..start[j + 1]];
            if rows.is_empty() {
                return false;
            }
            let mut acc = vec![0.0f64; d];
            let mut big = [0.0f32; crate::kernels::LANES];
            for (t, &i) in rows.iter().enumerate() {
                if let Some(&next) = rows.get(t + 1) {
                    prefetch(&x[next as usize * d..(next as usize + 1) * d]);
                }
                accumulate(&mut acc, &x[i as usize * d..(i as usize + 1) * d], &mut big);
            }
            let inv = 1.0 / rows.len() as f64;
            out.iter_mut()
                .zip(&acc)
                .for_each(|(o, &a)| *o = (a * inv) as f32);
            acc.iter().any(|a| !a.is_finite()) | big.iter().any(|&b| b > crate::error::MAX_ABS)
        })
        .reduce(|| false, |a, b| a | b);
    if bad {
        check_finite("x", x)?;
    }
    Ok((means, counts))
}

/// `x[i] -= centroids[labels[i]]` for every row of `x` ((n, D), in place): the residuals of
/// one residual-k-means level, in parallel without a gathered (n, D) temporary. `centroids`
/// is (k, D); labels must lie in `0..k`. Checked before anything is written.
pub fn subtract_centroids(
    x: &mut [f32],
    d: usize,
    centroids: &[f32],
    labels: &[u32],
) -> Result<()> {
    if d == 0 || centroids.is_empty() || centroids.len() % d != 0 {
        return Err(Error::shape(
            "centroids",
            format!("(K >= 1, D = {d})"),
            centroids.len(),
        ));
    }
    if labels.len().checked_mul(d) != Some(x.len()) {
        return Err(Error::shape(
            "x",
            format!("({}, {d}) (one row per label)", labels.len()),
            x.len(),
        ));
    }
    let k = centroids.len() / d;
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(Error::value("labels", format!("values in 0..{k}"), bad));
    }
    x.par_chunks_mut(d)
        .with_min_len(64)
        .zip(labels.par_iter())
        .for_each(|(r, &l)| {
            let c = &centroids[l as usize * d..(l as usize + 1) * d];
            r.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
        });
    Ok(())
}

/// Asks the CPU to start loading `row` (the next member row: they are scattered in `x`).
#[inline(always)]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch hint never faults; the address is inside `row`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `acc += row` in f64 and `big[i] = max(big[i], |row_i|)` over lanes. A NaN or infinity
/// in `row` makes `acc` non-finite (f64 sums of f32 values cannot overflow), so `acc` and
/// `big` together tell whether every value was finite and within range.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2+fma"
))]
fn accumulate(acc: &mut [f64], row: &[f32], big: &mut [f32; crate::kernels::LANES]) {
    use crate::kernels::LANES;
    let split = row.len() - row.len() % LANES;
    for (a, r) in acc[..split]
        .chunks_exact_mut(LANES)
        .zip(row[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            a[i] += r[i] as f64;
            let v = r[i].abs();
            big[i] = if v > big[i] { v } else { big[i] };
        }
    }
    for (i, (a, &v)) in acc[split..].iter_mut().zip(&row[split..]).enumerate() {
        *a += v as f64;
        big[i] = if v.abs() > big[i] { v.abs() } else { big[i] };
    }
}

/// Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007; the greedy variant of scikit-learn)
/// of `k` centres from the rows of `x` ((n, D)). The first centre is row `uniform[0] · n`; each
/// next one is the best of `trials` candidates drawn with probability proportional to the
/// squared distance to the nearest centre so far — the candidate leaving the smallest total
/// squared distance (ties → first drawn). `trials = 1` is plain k-means++; scikit-learn uses
/// `2 + ln k`. Draw `t` of centre `j` uses `uniform[1 + (j - 1) · trials + t]` in [0, 1): the
/// caller owns the random stream, so seeding is reproducible, and sums run over fixed chunks
/// in a fixed order, so it does not depend on the thread count. Returns the chosen rows.
pub fn kmeans_pp(
    x: &[f32],
    d: usize,
    k: usize,
    trials: usize,
    uniform: &[f64],
) -> Result<Vec<usize>> {
    if d == 0 || x.len() % d != 0 {
        return Err(Error::shape(
            "x",
            format!("a multiple of D = {d} values"),
            x.len(),
        ));
    }
    let n = x.len() / d;
    if k == 0 || k > n {
        return Err(Error::value(
            "k",
            format!("1..={n} (the number of points)"),
            k,
        ));
    }
    if trials == 0 {
        return Err(Error::value("trials", ">= 1", trials));
    }
    let draws = (k - 1).checked_mul(trials).and_then(|t| t.checked_add(1));
    let Some(draws) = draws.filter(|&dr| uniform.len() >= dr) else {
        return Err(Error::shape(
            "uniform",
            format!(
                "at least 1 + (k - 1) * trials = {} values",
                1 + (k as u128 - 1) * trials as u128
            ),
            uniform.len(),
        ));
    };
    if let Some(u) = uniform.iter().find(|u| !(0.0..1.0).contains(*u)) {
        return Err(Error::value("uniform", "values in [0, 1)", u));
    }
    check_finite("x", x)?;
    const CHUNK: usize = 1024;
    // Points per sub-block of a chunk: about 128 KiB of rows.
    let sub = (32_768 / d).clamp(1, CHUNK);
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let first = ((uniform[0] * n as f64) as usize).min(n - 1);
    let mut chosen = vec![first];
    let mut d2: Vec<f64> = x
        .par_chunks(d)
        .map(|p| crate::kernels::sq_dist(p, row(first)))
        .collect();
    let mut sums: Vec<f64> = d2.par_chunks(CHUNK).map(|c| c.iter().sum()).collect();
    // Candidate distances, chunk-major: the points of chunk c (from `base = c·CHUNK`, `len`
    // of them) hold candidate t's distances at `cand_d2[base·trials + t·len ..][..len]`, and
    // its chunk sum at `cand_sums[c·trials + t]`: each chunk's block is written in place by
    // one worker (nothing else is allocated per draw).
    let trials = trials.min(draws - 1).max(1); // k = 1 draws no candidates
    let len = crate::alloc::elements::<f64>("trials", &[trials, n])?;
    let mut cand_d2 = crate::alloc::try_filled("trials", len, 0.0f64)?;
    let nchunks = sums.len();
    let mut cand_sums = crate::alloc::try_filled("trials", trials * nchunks, 0.0f64)?;
    for draw in uniform[1..draws].chunks_exact(trials) {
        let total: f64 = sums.iter().sum();
        let cands: Vec<usize> = draw
            .iter()
            .map(|&u| {
                if total > 0.0 {
                    d2_sample(&d2, &sums, CHUNK, u * total)
                } else {
                    // Every point coincides with a centre (e.g. constant data): any row will do.
                    ((u * n as f64) as usize).min(n - 1)
                }
            })
            .collect();
        // One pass over the points computes every candidate's distances and chunk sums.
        cand_d2
            .par_chunks_mut(CHUNK * trials)
            .zip(cand_sums.par_chunks_mut(trials))
            .zip(d2.par_chunks(CHUNK).zip(x.par_chunks(CHUNK * d)))
            .for_each(|((block, chunk_sums), (dc, xc))| {
                let m = dc.len();
                // Sub-blocks of points small enough to stay in L2 while every candidate
                // scans them (a whole chunk at D = 768 is 3 MB); the same values either way.
                for s0 in (0..m).step_by(sub) {
                    let s1 = (s0 + sub).min(m);
                    for (t, &c) in cands.iter().enumerate() {
                        min_dists(
                            &mut block[t * m + s0..t * m + s1],
                            &dc[s0..s1],
                            &xc[s0 * d..s1 * d],
                            row(c),
                        );
                    }
                }
                for t in 0..cands.len() {
                    chunk_sums[t] = block[t * m..(t + 1) * m].iter().sum();
                }
            });
        let potential =
            |t: usize| -> f64 { (0..nchunks).map(|ci| cand_sums[ci * trials + t]).sum() };
        let best = (0..trials)
            .min_by(|&a, &b| potential(a).total_cmp(&potential(b)).then(a.cmp(&b)))
            .unwrap_or(0);
        chosen.push(cands[best]);
        for (ci, dc) in d2.chunks_mut(CHUNK).enumerate() {
            let (base, m) = (ci * CHUNK, dc.len());
            dc.copy_from_slice(&cand_d2[base * trials + best * m..base * trials + (best + 1) * m]);
            sums[ci] = cand_sums[ci * trials + best];
        }
    }
    Ok(chosen)
}

/// `out_i = min(d2_i, ||x_i - c||²)` for the rows of one chunk.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2+fma"
))]
fn min_dists(out: &mut [f64], d2: &[f64], x: &[f32], c: &[f32]) {
    for ((o, &v), p) in out.iter_mut().zip(d2).zip(x.chunks_exact(c.len())) {
        *o = v.min(crate::kernels::sq_dist(p, c));
    }
}

/// The point a D² draw lands on: `target` in [0, Σ d2), searched chunk sums first. Rounding
/// may land on a zero-weight point; then the nearest earlier (else later) weighted one.
fn d2_sample(d2: &[f64], sums: &[f64], chunk: usize, mut target: f64) -> usize {
    let mut c = sums.len() - 1;
    for (ci, &s) in sums.iter().enumerate() {
        if target < s {
            c = ci;
            break;
        }
        target -= s;
    }
    let base = c * chunk;
    let part = &d2[base..(base + chunk).min(d2.len())];
    let mut pick = base + part.len() - 1;
    for (i, &v) in part.iter().enumerate() {
        if target < v {
            pick = base + i;
            break;
        }
        target -= v;
    }
    if d2[pick] > 0.0 {
        return pick;
    }
    (0..pick)
        .rev()
        .find(|&i| d2[i] > 0.0)
        .or_else(|| d2.iter().position(|&v| v > 0.0))
        .unwrap_or(pick)
}

/// Nearest-centroid assignment with Hamerly's bounds (Hamerly, 2010), for Lloyd iterations.
///
/// `labels`, `err` (squared distance to the assigned centroid) and `lower` (a lower bound on
/// the distance, not squared, to every other centroid) are the state of the previous
/// iteration; `previous` holds the centroids they refer to. After the centroids move by
/// `δ_j`, a point keeps its label without a search when `||x - c_a|| < lower - max_{j≠a} δ_j`;
/// only the others go through the exact GEMM search. The labels are therefore exactly those
/// of a full search (ties → lowest index, strict inequality with a rounding margin). Without
/// `previous`, every point is searched (the first iteration). `centroids` is (K, D) and `x`
/// (n, D). Returns the number of points searched.
///
/// One pass over fixed tiles of rows: each row is read once for its bound test, and the rows
/// of a tile that fail it are gathered and searched at once while they are in cache, so a
/// bound test that prunes little costs little more than a plain search. Tiles are fixed, so
/// the result does not depend on the thread count.
pub fn assign_bounded(
    centroids: &[f32],
    x: &[f32],
    d: usize,
    labels: &mut [u32],
    err: &mut [f32],
    lower: &mut [f32],
    previous: Option<&[f32]>,
) -> Result<usize> {
    if d == 0 || centroids.is_empty() || centroids.len() % d != 0 {
        return Err(Error::shape(
            "centroids",
            format!("(K >= 1, D = {d})"),
            centroids.len(),
        ));
    }
    let k = centroids.len() / d;
    let cb = Codebooks::new(centroids, &[k], d).map_err(|e| e.renamed("codebooks", "centroids"))?;
    if x.len() % d != 0 {
        return Err(Error::shape(
            "x",
            format!("a multiple of D = {d} values"),
            x.len(),
        ));
    }
    let n = x.len() / d;
    for (arg, len) in [
        ("labels", labels.len()),
        ("err", err.len()),
        ("lower", lower.len()),
    ] {
        if len != n {
            return Err(Error::shape(arg, format!("({n},)"), format!("({len},)")));
        }
    }
    check_finite("x", x)?;
    // The largest and second-largest centroid drift, and where the largest is.
    let drift = match previous {
        None => None,
        Some(prev) => {
            if prev.len() != centroids.len() {
                return Err(Error::shape("previous", format!("({k}, {d})"), prev.len()));
            }
            if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
                return Err(Error::value("labels", format!("values in 0..{k}"), bad));
            }
            let (mut a1, mut m1, mut m2) = (0usize, 0.0f64, 0.0f64);
            for (j, (c, p)) in centroids
                .chunks_exact(d)
                .zip(prev.chunks_exact(d))
                .enumerate()
            {
                let v = crate::kernels::sq_dist(c, p).sqrt();
                if v > m1 {
                    (m2, m1, a1) = (m1, v, j);
                } else if v > m2 {
                    m2 = v;
                }
            }
            Some((a1, m1, m2))
        }
    };
    // One pass over fixed tiles of rows: the bound test reads each row once, and the rows
    // that fail it are searched right away, from a per-thread buffer, while they are in cache.
    const T: usize = crate::rq::TILE_ROWS;
    let searched = labels
        .par_chunks_mut(T)
        .zip(err.par_chunks_mut(T))
        .zip(lower.par_chunks_mut(T))
        .zip(x.par_chunks(T * d))
        .map_init(BoundScratch::default, |s, (((lab, e), lo), xt)| {
            bounded_tile(&cb, drift, xt, lab, e, lo, s)
        })
        .sum();
    Ok(searched)
}

/// Per-thread buffers of [`bounded_tile`].
#[derive(Default)]
struct BoundScratch {
    rows: Vec<usize>,
    buf: Vec<f32>,
    dist: Vec<f32>,
    lab: Vec<u32>,
    err: Vec<f32>,
    second: Vec<f32>,
}

/// [`assign_bounded`] on one tile of rows: returns how many rows were searched.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq",
    "x86_64+avx2+fma"
))]
fn bounded_tile(
    cb: &Codebooks,
    drift: Option<(usize, f64, f64)>,
    x: &[f32],
    labels: &mut [u32],
    err: &mut [f32],
    lower: &mut [f32],
    s: &mut BoundScratch,
) -> usize {
    let d = cb.dim();
    s.rows.clear();
    match drift {
        None => s.rows.extend(0..labels.len()),
        Some((a1, m1, m2)) => {
            for (i, p) in x.chunks_exact(d).enumerate() {
                let a = labels[i] as usize;
                let bound = lower[i] as f64 - if a == a1 { m2 } else { m1 };
                let e2 = crate::kernels::sq_dist(p, cb.codeword(0, a));
                if e2.sqrt() * (1.0 + 1e-5) < bound {
                    err[i] = e2 as f32;
                    lower[i] = (bound * (1.0 - 1e-7)) as f32;
                } else {
                    s.rows.push(i);
                }
            }
        }
    }
    let m = s.rows.len();
    if m == 0 {
        return 0;
    }
    s.second.clear();
    s.second.resize(m, 0.0);
    if m == labels.len() {
        crate::rq::bound_tile(cb, 0, x, &mut s.dist, labels, err, &mut s.second);
        lower
            .iter_mut()
            .zip(&s.second)
            .for_each(|(lo, &v)| *lo = v.sqrt());
        return m;
    }
    s.buf.clear();
    for &i in &s.rows {
        s.buf.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    s.lab.clear();
    s.lab.resize(m, 0);
    s.err.clear();
    s.err.resize(m, 0.0);
    crate::rq::bound_tile(
        cb,
        0,
        &s.buf,
        &mut s.dist,
        &mut s.lab,
        &mut s.err,
        &mut s.second,
    );
    for (t, &i) in s.rows.iter().enumerate() {
        labels[i] = s.lab[t];
        err[i] = s.err[t];
        lower[i] = s.second[t].sqrt();
    }
    m
}
