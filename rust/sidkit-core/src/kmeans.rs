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
    let key = |i: usize, p: usize| Reverse((crate::collide::ordered_bits(ranked[i][p].0), i, p));
    let mut heap: BinaryHeap<_> = (0..n).map(|i| key(i, 0)).collect();
    while let Some(Reverse((_, i, p))) = heap.pop() {
        let (dd, j) = ranked[i][p];
        let j = j as usize;
        let room = load[j] < floor || (load[j] == floor && big_left > 0);
        if room {
            if load[j] == floor {
                big_left -= 1;
            }
            load[j] += 1;
            label[i] = j as u32;
            dist[i] = dd;
        } else if p + 1 < ranked[i].len() {
            heap.push(key(i, p + 1));
        } else {
            // All its candidates are full: the nearest centroid that still has room.
            let point = &x[i * d..(i + 1) * d];
            let (dd, j) = (0..k)
                .filter(|&j| load[j] < floor || (load[j] == floor && big_left > 0))
                .map(|j| (dist_to(point, j), j))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .ok_or_else(|| {
                    Error::value("x", "a centroid with room", "none (internal error)")
                })?;
            if load[j] == floor {
                big_left -= 1;
            }
            load[j] += 1;
            label[i] = j as u32;
            dist[i] = dd;
        }
    }
    // Total capacity is exactly n and every point can try every centroid, so all are placed.
    debug_assert!(label.iter().all(|&l| l != u32::MAX));
    Ok((label, dist))
}
