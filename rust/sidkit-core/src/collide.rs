//! Collision resolution: making semantic IDs unique.
//!
//! Two items with the same codes cannot be told apart by a generative model. The primitive
//! here, [`group_ranks`], groups items by their full code tuple and numbers them inside each
//! group in a deterministic order (by a per-item cost when given, then by item id). TIGER's
//! suffix method is that number appended as an extra level; capacity-based methods keep the
//! first `C` of each group and move the rest.

use rayon::prelude::*;

use crate::error::{check_finite, Error, Result};

/// Items grouped by code tuple and numbered inside each group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRanks {
    /// Per item: its position inside its group, 0-based, in (cost, item id) order.
    pub rank: Vec<u32>,
    /// Number of distinct code tuples.
    pub groups: usize,
    /// Size of the largest group.
    pub max_group: usize,
    /// Number of groups with more than one item.
    pub colliding_groups: usize,
}

/// Checks `codes` ((n, L) row-major) against the level sizes and `item_ids` for length and
/// uniqueness.
pub fn check_table(codes: &[u16], sizes: &[usize], item_ids: &[i64]) -> Result<()> {
    let levels = sizes.len();
    if levels == 0 {
        return Err(Error::shape("sizes", "at least one level", "0 levels"));
    }
    if codes.len() != item_ids.len() * levels {
        return Err(Error::shape(
            "codes",
            format!("({}, {levels}) to match item_ids", item_ids.len()),
            format!("{} values", codes.len()),
        ));
    }
    let bad = codes
        .par_chunks(levels)
        .enumerate()
        .find_first(|(_, row)| row.iter().zip(sizes).any(|(&c, &k)| c as usize >= k));
    if let Some((i, row)) = bad {
        let l = row
            .iter()
            .zip(sizes)
            .position(|(&c, &k)| c as usize >= k)
            .unwrap_or(0);
        return Err(Error::value(
            "codes",
            format!("0 <= code < {} at level {l}", sizes[l]),
            format!("{} at row {i}", row[l]),
        ));
    }
    let mut sorted = item_ids.to_vec();
    sorted.par_sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::value(
            "item_ids",
            "unique item ids",
            format!("{} more than once", w[0]),
        ));
    }
    Ok(())
}

fn pack_row(row: &[u16], bits: &[u32]) -> u64 {
    row.iter()
        .zip(bits)
        .fold(0u64, |acc, (&c, &b)| (acc << b) | c as u64)
}

/// Packs each code tuple into one `u64` (level 0 most significant), when the levels' bit
/// widths fit; the packed keys order like the tuples.
pub fn pack(codes: &[u16], sizes: &[usize]) -> Option<Vec<u64>> {
    let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
    if bits.iter().sum::<u32>() > 64 {
        return None;
    }
    Some(
        codes
            .par_chunks(sizes.len())
            .map(|row| {
                row.iter()
                    .zip(&bits)
                    .fold(0u64, |acc, (&c, &b)| (acc << b) | c as u64)
            })
            .collect(),
    )
}

/// Groups the rows of `codes` ((n, L) row-major) and ranks the items of each group by
/// `cost` (ascending, when given) then `item_ids`. Deterministic for any thread count.
pub fn group_ranks(
    codes: &[u16],
    sizes: &[usize],
    item_ids: &[i64],
    cost: Option<&[f32]>,
) -> Result<GroupRanks> {
    check_table(codes, sizes, item_ids)?;
    let n = item_ids.len();
    if let Some(c) = cost {
        if c.len() != n {
            return Err(Error::shape(
                "cost",
                format!("({n},) to match item_ids"),
                c.len(),
            ));
        }
        check_finite("cost", c)?;
    }
    let levels = sizes.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let cost_of = |i: u32| cost.map_or(0.0, |c| c[i as usize]);
    // Sort by (code tuple, cost, item id): item ids are unique, so the order is total and an
    // unstable parallel sort gives the same result for any thread count.
    match pack(codes, sizes) {
        Some(keys) => order.par_sort_unstable_by(|&a, &b| {
            keys[a as usize]
                .cmp(&keys[b as usize])
                .then(cost_of(a).total_cmp(&cost_of(b)))
                .then(item_ids[a as usize].cmp(&item_ids[b as usize]))
        }),
        None => {
            let row = |i: u32| &codes[i as usize * levels..(i as usize + 1) * levels];
            order.par_sort_unstable_by(|&a, &b| {
                row(a)
                    .cmp(row(b))
                    .then(cost_of(a).total_cmp(&cost_of(b)))
                    .then(item_ids[a as usize].cmp(&item_ids[b as usize]))
            })
        }
    }
    let same = |a: u32, b: u32| {
        codes[a as usize * levels..(a as usize + 1) * levels]
            == codes[b as usize * levels..(b as usize + 1) * levels]
    };
    let mut rank = vec![0u32; n];
    let (mut groups, mut max_group, mut colliding) = (0, 0, 0);
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && same(order[start], order[end]) {
            end += 1;
        }
        for (r, &i) in order[start..end].iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        groups += 1;
        max_group = max_group.max(end - start);
        colliding += usize::from(end - start > 1);
        start = end;
    }
    Ok(GroupRanks {
        rank,
        groups,
        max_group,
        colliding_groups: colliding,
    })
}

/// How `reassign` orders the moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOrder {
    /// Global greedy by added quantization error: the cheapest (item, code) move first.
    Knn,
    /// Items in a seeded random order, each taking its nearest code with room (FORGE's random).
    Random(u64),
}

/// What fixed-length reassignment did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassigned {
    /// The new (n, L) codes; only moved items differ from the input.
    pub codes: Vec<u16>,
    /// Items (row indices) given a new last-level code.
    pub moved: Vec<u32>,
    /// Items that had to move but found no code with room among their candidates.
    pub unresolved: Vec<u32>,
    /// Sum over moved items of the increase in squared quantization error.
    pub added_error: f64,
    /// Grouping of the input codes.
    pub groups: GroupRanks,
}

/// Fixed-length collision resolution: keeps the `capacity` items of each SID closest to its
/// reconstruction (ties → item id) and moves every other item to the nearest last-level code
/// under the same prefix that still has room, among its `candidates` nearest codes.
///
/// Items marked in `fixed` (e.g. the existing rows of a table being extended) never move and
/// take their SID's room first, even beyond `capacity`.
#[allow(clippy::too_many_arguments)]
pub fn reassign(
    cb: &crate::Codebooks,
    x: &[f32],
    codes: &[u16],
    item_ids: &[i64],
    capacity: usize,
    candidates: usize,
    order: MoveOrder,
    fixed: Option<&[bool]>,
) -> Result<Reassigned> {
    use std::collections::{BinaryHeap, HashMap};

    let (d, levels, sizes) = (cb.dim(), cb.levels(), cb.sizes());
    let n = item_ids.len();
    if x.len() != n * d {
        return Err(Error::shape(
            "embeddings",
            format!("({n}, {d})"),
            format!("{} values", x.len()),
        ));
    }
    if capacity == 0 {
        return Err(Error::value("capacity", "capacity >= 1", 0));
    }
    check_finite("embeddings", x)?;
    let last = levels - 1;
    let k_last = sizes[last];
    let candidates = candidates.clamp(1, k_last);
    // Current squared quantization error of every item.
    crate::rq::check_codes(cb, codes)?;
    let recon = crate::rq::decode(cb, codes)?;
    let cost: Vec<f32> = x
        .par_chunks(d)
        .zip(recon.par_chunks(d))
        .map(|(a, b)| crate::kernels::sq_dist(a, b) as f32)
        .collect();
    let groups = group_ranks(codes, sizes, item_ids, Some(&cost))?;
    let keys = pack(codes, sizes).ok_or_else(|| {
        Error::value(
            "codes",
            "code tuples of at most 64 bits for reassign",
            format!("sizes {sizes:?}"),
        )
    })?;
    if let Some(f) = fixed {
        if f.len() != n {
            return Err(Error::shape(
                "fixed",
                format!("({n},) to match item_ids"),
                f.len(),
            ));
        }
    }
    let is_fixed = |i: usize| fixed.is_some_and(|f| f[i]);
    // Fixed items take their slots first; the others keep theirs in rank order while room lasts.
    let mut taken: HashMap<u64, u32> = HashMap::with_capacity(groups.groups);
    for i in (0..n).filter(|&i| is_fixed(i)) {
        *taken.entry(keys[i]).or_insert(0) += 1;
    }
    let mut by_rank: Vec<u32> = (0..n as u32).filter(|&i| !is_fixed(i as usize)).collect();
    by_rank.sort_unstable_by_key(|&i| (groups.rank[i as usize], i));
    let mut movers = Vec::new();
    for i in by_rank {
        let count = taken.entry(keys[i as usize]).or_insert(0);
        if (*count as usize) < capacity {
            *count += 1;
        } else {
            movers.push(i);
        }
    }
    movers.sort_unstable();
    // Each mover's candidate last-level codes, nearest first, from its residual before the
    // last level: one GEMM per tile of movers.
    let cand: Vec<Vec<(f32, u16)>> = movers
        .par_chunks(256)
        .flat_map_iter(|tile| {
            let mut resid = Vec::with_capacity(tile.len() * d);
            for &i in tile {
                let i = i as usize;
                let mut r = x[i * d..(i + 1) * d].to_vec();
                for l in 0..last {
                    let c = cb.codeword(l, codes[i * levels + l] as usize);
                    r.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
                }
                resid.extend_from_slice(&r);
            }
            let mut dist = Vec::new();
            crate::rq::distances(cb, last, &resid, tile.len(), &mut dist);
            let rows: Vec<Vec<(f32, u16)>> = resid
                .chunks(d)
                .zip(dist.chunks(k_last))
                .map(|(r, v)| {
                    let rn = crate::kernels::sq_norm(r) as f32;
                    let mut row: Vec<(f32, u16)> = v
                        .iter()
                        .enumerate()
                        .map(|(j, &e)| ((rn + e).max(0.0), j as u16))
                        .collect();
                    let by =
                        |a: &(f32, u16), b: &(f32, u16)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                    if candidates < row.len() {
                        row.select_nth_unstable_by(candidates - 1, by);
                        row.truncate(candidates);
                    }
                    row.sort_unstable_by(by);
                    row
                })
                .collect();
            rows
        })
        .collect();
    let low_bits = (1u64 << bits_of(k_last)) - 1;
    let slot = |i: usize, code: u16| (keys[i] & !low_bits) | code as u64;
    let mut out = codes.to_vec();
    let (mut moved, mut unresolved, mut added) = (Vec::new(), Vec::new(), 0.0f64);
    let mut place = |m: usize, code: u16, dist: f32, taken: &mut HashMap<u64, u32>| -> bool {
        let i = movers[m] as usize;
        let count = taken.entry(slot(i, code)).or_insert(0);
        if (*count as usize) >= capacity {
            return false;
        }
        *count += 1;
        out[i * levels + last] = code;
        moved.push(i as u32);
        added += (dist - cost[i]) as f64;
        true
    };
    match order {
        MoveOrder::Knn => {
            // Lazy global greedy: each mover offers its next candidate; the cheapest added
            // error goes first (ties → item id, then code), as a sorted list of all pairs would.
            #[derive(PartialEq, Eq, PartialOrd, Ord)]
            struct Offer(std::cmp::Reverse<(u32, i64, u16)>, usize, usize);
            let offer = |m: usize, p: usize| {
                let (dist, code) = cand[m][p];
                let i = movers[m] as usize;
                Offer(
                    std::cmp::Reverse((ordered_bits(dist - cost[i]), item_ids[i], code)),
                    m,
                    p,
                )
            };
            let mut heap: BinaryHeap<Offer> = (0..movers.len()).map(|m| offer(m, 0)).collect();
            while let Some(Offer(_, m, p)) = heap.pop() {
                let (dist, code) = cand[m][p];
                if place(m, code, dist, &mut taken) {
                    continue;
                }
                if p + 1 < cand[m].len() {
                    heap.push(offer(m, p + 1));
                } else {
                    unresolved.push(movers[m]);
                }
            }
        }
        MoveOrder::Random(seed) => {
            let mut ordered: Vec<usize> = (0..movers.len()).collect();
            // SplitMix64-keyed shuffle: deterministic for a seed, independent of threads.
            ordered.sort_by_key(|&m| splitmix(seed ^ item_ids[movers[m] as usize] as u64));
            for m in ordered {
                if !cand[m]
                    .iter()
                    .any(|&(dist, code)| place(m, code, dist, &mut taken))
                {
                    unresolved.push(movers[m]);
                }
            }
        }
    }
    unresolved.sort_unstable();
    // Escalation: an item whose prefix has no room left tries the next-nearest codes of the
    // level above, each with its nearest last-level codes, until one has room.
    if levels >= 2 && !unresolved.is_empty() {
        let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
        let up = levels - 2;
        let mut still = Vec::new();
        for &row in &unresolved {
            let i = row as usize;
            let mut base = x[i * d..(i + 1) * d].to_vec();
            for l in 0..up {
                let c = cb.codeword(l, out[i * levels + l] as usize);
                base.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
            }
            let nearest_first = |r: &[f32], l: usize| {
                let mut v: Vec<(f64, usize)> = (0..sizes[l])
                    .map(|j| (crate::kernels::sq_dist(r, cb.codeword(l, j)), j))
                    .collect();
                v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                v
            };
            let mut placed = false;
            'alts: for (_, a) in nearest_first(&base, up) {
                if a == out[i * levels + up] as usize {
                    continue;
                }
                let r: Vec<f32> = base
                    .iter()
                    .zip(cb.codeword(up, a))
                    .map(|(&p, &q)| p - q)
                    .collect();
                for (dist, j) in nearest_first(&r, last) {
                    let mut tuple = out[i * levels..(i + 1) * levels].to_vec();
                    tuple[up] = a as u16;
                    tuple[last] = j as u16;
                    let count = taken.entry(pack_row(&tuple, &bits)).or_insert(0);
                    if (*count as usize) < capacity {
                        *count += 1;
                        out[i * levels..(i + 1) * levels].copy_from_slice(&tuple);
                        moved.push(row);
                        added += dist - cost[i] as f64;
                        placed = true;
                        break 'alts;
                    }
                }
            }
            if !placed {
                still.push(row);
            }
        }
        unresolved = still;
    }
    moved.sort_unstable();
    Ok(Reassigned {
        codes: out,
        moved,
        unresolved,
        added_error: added,
        groups,
    })
}

fn bits_of(k: usize) -> u32 {
    usize::BITS - (k.max(2) - 1).leading_zeros()
}

/// Bits of a float that order like the float (for use as an integer sort key).
fn ordered_bits(f: f32) -> u32 {
    let b = f.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
