//! Collision resolution: making semantic IDs unique.
//!
//! Two items with the same codes cannot be told apart by a generative model. The primitive
//! here, [`group_ranks`], groups items by their full code tuple and numbers them inside each
//! group in a deterministic order (by a per-item cost when given, then by item id). TIGER's
//! suffix method is that number appended as an extra level; capacity-based methods keep the
//! first `C` of each group and move the rest.

use rayon::prelude::*;

use crate::error::{check_finite, Error, Result};
use crate::MAX_CODEBOOK_SIZE;

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

/// Summary of a grouping of code tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Number of distinct code tuples.
    pub groups: usize,
    /// Size of the largest group.
    pub max_group: usize,
    /// Number of groups with more than one item.
    pub colliding_groups: usize,
}

/// Checks `codes` ((n, L) row-major) against the level sizes and `item_ids` (`None`: the
/// row indices) for length and uniqueness.
pub fn check_table(codes: &[u16], sizes: &[usize], item_ids: Option<&[i64]>) -> Result<()> {
    let levels = sizes.len();
    if levels == 0 {
        return Err(Error::shape("sizes", "at least one level", "0 levels"));
    }
    if let Some((l, &k)) = sizes
        .iter()
        .enumerate()
        .find(|(_, &k)| !(1..=MAX_CODEBOOK_SIZE).contains(&k))
    {
        return Err(Error::value(
            "sizes",
            format!("1 <= K <= {MAX_CODEBOOK_SIZE} per level (codes are uint16)"),
            format!("{k} at level {l}"),
        ));
    }
    let rows = codes.len() / levels;
    if rows >= u32::MAX as usize {
        // Rows are indexed as u32 in the ranking, the moves and the trie.
        return Err(Error::value("codes", "fewer than 2^32 - 1 rows", rows));
    }
    if let Some(ids) = item_ids {
        if codes.len() != ids.len() * levels {
            return Err(Error::shape(
                "codes",
                format!("({}, {levels}) to match item_ids", ids.len()),
                format!("{} values", codes.len()),
            ));
        }
    } else if codes.len() % levels != 0 {
        return Err(Error::shape(
            "codes",
            format!("(n, {levels})"),
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
    let Some(item_ids) = item_ids else {
        return Ok(());
    };
    if !increasing(item_ids) {
        let mut sorted = item_ids.to_vec();
        sorted.par_sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::value(
                "item_ids",
                "unique item ids",
                format!("{} more than once", w[0]),
            ));
        }
    }
    Ok(())
}

/// Whether `ids` is strictly increasing (then unique, with index order = id order).
fn increasing(ids: &[i64]) -> bool {
    ids.par_windows(2).all(|w| w[0] < w[1])
}

fn key_bits(sizes: &[usize]) -> u32 {
    sizes.iter().map(|&k| bits_of(k)).sum()
}

fn pack_row(row: &[u16], bits: &[u32]) -> u64 {
    row.iter()
        .zip(bits)
        .fold(0u64, |acc, (&c, &b)| (acc << b) | c as u64)
}

/// Packs each code tuple into one `u64` (level 0 most significant), when the levels' bit
/// widths fit; the packed keys order like the tuples.
pub fn pack(codes: &[u16], sizes: &[usize]) -> Option<Vec<u64>> {
    if key_bits(sizes) > 64 {
        return None;
    }
    let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
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
/// `cost` (ascending, when given) then item id (`None`: the row index). Deterministic for any
/// thread count.
pub fn group_ranks(
    codes: &[u16],
    sizes: &[usize],
    item_ids: Option<&[i64]>,
    cost: Option<&[f32]>,
) -> Result<GroupRanks> {
    let n = codes.len() / sizes.len().max(1);
    let mut rank = crate::alloc::try_filled("codes", n, 0u32)?;
    let out = SharedSlice(rank.as_mut_ptr());
    // SAFETY: `rank_groups` calls `write` once per row < n (rows form a permutation).
    let (groups, max_group, colliding_groups) =
        rank_groups(codes, sizes, item_ids, cost, |row, r| unsafe {
            out.write(row, r)
        })?;
    Ok(GroupRanks {
        rank,
        groups,
        max_group,
        colliding_groups,
    })
}

/// The grouping of [`group_ranks`], calling `write(row, rank)` exactly once for every row
/// (from several threads, for distinct rows) and returning (groups, max group, colliding
/// groups).
fn rank_groups(
    codes: &[u16],
    sizes: &[usize],
    item_ids: Option<&[i64]>,
    cost: Option<&[f32]>,
    write: impl Fn(usize, u32) + Sync,
) -> Result<(usize, usize, usize)> {
    check_table(codes, sizes, item_ids)?;
    let levels = sizes.len();
    let n = codes.len() / levels;
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
    let id = |i: usize| item_ids.map_or(i as i64, |ids| ids[i]);
    let in_order = item_ids.is_none_or(increasing);
    let idx_bits = bits_of(n.max(2));
    let cost_bits = |i: usize| cost.map_or(0, |c| ordered_bits(c[i]));
    if cost.is_none() && in_order && key_bits(sizes) <= PARTITION_MAX_BITS {
        return Ok(rank_by_partition(codes, sizes, write));
    }
    if cost.is_none() && in_order && key_bits(sizes) + idx_bits <= 64 {
        // Fast path: ids in row order and no cost, so (code tuple, row) packed in one u64
        // sorts into (code tuple, item id) order; a parallel LSD radix sort of plain integers
        // gives the same result for any thread count.
        let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
        let mut packed: Vec<u64> = crate::alloc::with_capacity(n);
        codes
            .par_chunks(levels)
            .enumerate()
            .map(|(i, row)| (pack_row(row, &bits) << idx_bits) | i as u64)
            .collect_into_vec(&mut packed);
        crate::alloc::sort_u64(&mut packed);
        let mask = (1u64 << idx_bits) - 1;
        return Ok(rank_sorted(
            &packed,
            |p| (p & mask) as usize,
            |a, b| a >> idx_bits == b >> idx_bits,
            write,
        ));
    }
    Ok(match pack(codes, sizes) {
        // Contiguous (key, cost, id, row) records: ids are unique, so the order is total and
        // an unstable parallel sort is the same for any thread count.
        Some(keys) => {
            let mut recs: Vec<(u64, u32, i64, u32)> = (0..n)
                .into_par_iter()
                .map(|i| (keys[i], cost_bits(i), id(i), i as u32))
                .collect();
            recs.par_sort_unstable();
            rank_sorted(&recs, |r| r.3 as usize, |a, b| a.0 == b.0, write)
        }
        None => {
            let row = |i: u32| &codes[i as usize * levels..(i as usize + 1) * levels];
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.par_sort_unstable_by(|&a, &b| {
                row(a)
                    .cmp(row(b))
                    .then(cost_bits(a as usize).cmp(&cost_bits(b as usize)))
                    .then(id(a as usize).cmp(&id(b as usize)))
            });
            rank_sorted(&order, |&i| i as usize, |&a, &b| row(a) == row(b), write)
        }
    })
}

/// Widest packed code tuple `rank_by_partition` takes.
const PARTITION_MAX_BITS: u32 = 32;
/// Low key bits counted inside one partition (a 256 KiB counter array, L2-resident).
const PARTITION_LOW_BITS: u32 = 16;

/// Ranks rows inside groups of equal codes in row order, without sorting: a stable parallel
/// scatter of the rows into partitions by the high bits of their packed code tuple, then, per
/// partition (in parallel), one pass in row order with a counter per low-bits key:
/// `rank = count[key]++`. Same ranks and counts as sorting (code tuple, row). Returns
/// (groups, max group, colliding groups).
fn rank_by_partition(
    codes: &[u16],
    sizes: &[usize],
    write: impl Fn(usize, u32) + Sync,
) -> (usize, usize, usize) {
    const CHUNK: usize = 1 << 16;
    let levels = sizes.len();
    let n = codes.len() / levels;
    let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
    let total = key_bits(sizes);
    let low = PARTITION_LOW_BITS.min(total);
    let parts = 1usize << (total - low);
    let low_mask = (1u32 << low) - 1;
    let mut keys: Vec<u32> = crate::alloc::with_capacity(n);
    codes
        .par_chunks(levels)
        .map(|row| pack_row(row, &bits) as u32)
        .collect_into_vec(&mut keys);
    // Per fixed chunk of rows: how many fall in each partition.
    let hist: Vec<Vec<u32>> = keys
        .par_chunks(CHUNK)
        .map(|ch| {
            let mut h = vec![0u32; parts];
            for &k in ch {
                h[(k >> low) as usize] += 1;
            }
            h
        })
        .collect();
    // Partition-major, chunk-minor offsets: the scatter is stable (row order kept).
    let mut start = vec![0usize; parts + 1];
    let mut offsets = vec![vec![0usize; parts]; hist.len()];
    let mut at = 0usize;
    for p in 0..parts {
        start[p] = at;
        for (c, h) in hist.iter().enumerate() {
            offsets[c][p] = at;
            at += h[p] as usize;
        }
    }
    start[parts] = at;
    // Each entry carries its row (high bits) and its low key bits, so the ranking pass reads
    // its partition sequentially.
    let mut rows: Vec<u64> = crate::alloc::filled(n, 0);
    let dst = SharedSlice(rows.as_mut_ptr());
    keys.par_chunks(CHUNK)
        .zip(offsets.into_par_iter())
        .enumerate()
        .for_each(|(c, (ch, mut off))| {
            for (j, &k) in ch.iter().enumerate() {
                let p = (k >> low) as usize;
                let entry = (((c * CHUNK + j) as u64) << 32) | (k & low_mask) as u64;
                // SAFETY: the offsets give every (chunk, partition) its own disjoint range.
                unsafe { dst.write(off[p], entry) };
                off[p] += 1;
            }
        });
    drop(keys);
    (0..parts)
        .into_par_iter()
        .map_init(
            || vec![0u32; 1 << low],
            |count, p| {
                let part = &rows[start[p]..start[p + 1]];
                for &e in part {
                    let k = (e as u32) as usize;
                    write((e >> 32) as usize, count[k]);
                    count[k] += 1;
                }
                let (mut groups, mut max, mut colliding) = (0usize, 0usize, 0usize);
                for &e in part {
                    let k = (e as u32) as usize;
                    let c = count[k] as usize;
                    if c > 0 {
                        groups += 1;
                        max = max.max(c);
                        colliding += (c > 1) as usize;
                        count[k] = 0;
                    }
                }
                (groups, max, colliding)
            },
        )
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1.max(b.1), a.2 + b.2))
}

/// Ranks inside groups of a sorted sequence: `row(s)` is the item of sorted entry `s`,
/// `same(a, b)` whether adjacent entries share a group, `write(row, rank)` stores a rank.
/// Segments split at group boundaries are ranked in parallel; the result does not depend on
/// the split. Returns (groups, max group, colliding groups).
fn rank_sorted<T: Sync>(
    sorted: &[T],
    row: impl Fn(&T) -> usize + Sync,
    same: impl Fn(&T, &T) -> bool + Sync,
    write: impl Fn(usize, u32) + Sync,
) -> (usize, usize, usize) {
    let n = sorted.len();
    let parts = 64.min(n.max(1));
    // Each cut moves forward to a group boundary; a cut inside the group the previous cut
    // already walked through starts from there, so one giant group is walked once, not 64 times.
    let mut cuts: Vec<usize> = Vec::with_capacity(parts + 1);
    for p in 0..parts {
        let mut j = (p * n / parts).max(cuts.last().copied().unwrap_or(0));
        while j > 0 && j < n && same(&sorted[j - 1], &sorted[j]) {
            j += 1;
        }
        cuts.push(j);
    }
    cuts.push(n);
    cuts.dedup();
    cuts.par_windows(2)
        .map(|w| {
            let (mut groups, mut max_group, mut colliding) = (0usize, 0usize, 0usize);
            let mut start = w[0];
            while start < w[1] {
                let mut end = start + 1;
                while end < w[1] && same(&sorted[end - 1], &sorted[end]) {
                    end += 1;
                }
                for (r, e) in sorted[start..end].iter().enumerate() {
                    write(row(e), r as u32);
                }
                groups += 1;
                max_group = max_group.max(end - start);
                colliding += usize::from(end - start > 1);
                start = end;
            }
            (groups, max_group, colliding)
        })
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1.max(b.1), a.2 + b.2))
}

/// A raw pointer for parallel writes to provably disjoint indices.
struct SharedSlice<T>(*mut T);
unsafe impl<T: Send> Sync for SharedSlice<T> {}
impl<T> SharedSlice<T> {
    /// # Safety
    /// `i` must be in bounds and no other thread may access index `i` concurrently.
    unsafe fn write(&self, i: usize, v: T) {
        *self.0.add(i) = v;
    }
}

/// TIGER's suffix resolution: the codes with one more level holding each item's rank in its
/// collision group, (n, L + 1) row-major, and the grouping. Fails when a group has more items
/// than `max_suffix` (default: 65,536, the `u16` limit).
pub fn suffix(
    codes: &[u16],
    sizes: &[usize],
    item_ids: Option<&[i64]>,
    cost: Option<&[f32]>,
    max_suffix: Option<usize>,
) -> Result<(Vec<u16>, Grouping)> {
    let levels = sizes.len().max(1);
    let n = codes.len() / levels;
    // The codes, each row followed by its rank, written straight into the output.
    const ROWS: usize = 1 << 14;
    let len = crate::alloc::elements::<u16>("codes", &[n, levels + 1])?;
    let mut out: Vec<u16> = crate::alloc::try_filled("codes", len, 0)?;
    out.par_chunks_mut(ROWS * (levels + 1))
        .zip(codes.par_chunks(ROWS * levels))
        .for_each(|(o, c)| {
            for (orow, crow) in o.chunks_exact_mut(levels + 1).zip(c.chunks_exact(levels)) {
                orow[..levels].copy_from_slice(crow);
            }
        });
    let dst = SharedSlice(out.as_mut_ptr());
    let stride = levels + 1;
    // SAFETY: each row's rank is written once, at its own row's last column (< n * stride).
    let (groups, max_group, colliding_groups) =
        rank_groups(codes, sizes, item_ids, cost, |row, r| unsafe {
            dst.write(row * stride + levels, r.min(u16::MAX as u32) as u16)
        })?;
    let limit = max_suffix.unwrap_or(1 << 16).min(1 << 16);
    if max_group > limit {
        return Err(Error::value(
            "max_suffix",
            format!("every collision group to fit in {limit} suffix values"),
            format!("a group of {max_group} items"),
        ));
    }
    let g = Grouping {
        groups,
        max_group,
        colliding_groups,
    };
    Ok((out, g))
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
    let (d, levels, sizes) = (cb.dim(), cb.levels(), cb.sizes());
    let n = item_ids.len();
    if n.checked_mul(d) != Some(x.len()) {
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
    let groups = group_ranks(codes, sizes, Some(item_ids), Some(&cost))?;
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
    // Items sharing a prefix (all levels but the last) compete for the same last-level codes,
    // and only with each other: each prefix is resolved on its own, in parallel, which gives
    // the same result as one global cheapest-move-first pass over all of them.
    let low_bits = (1u64 << bits_of(k_last)) - 1;
    let mut by_prefix: Vec<u32> = (0..n as u32).collect();
    by_prefix.par_sort_unstable_by_key(|&i| {
        let i = i as usize;
        (keys[i] & !low_bits, !is_fixed(i), groups.rank[i], i)
    });
    let prefix_of = |j: usize| keys[by_prefix[j] as usize] & !low_bits;
    let mut runs = Vec::new();
    let mut start = 0;
    for j in 1..=n {
        if j == n || prefix_of(j) != prefix_of(start) {
            runs.push(start..j);
            start = j;
        }
    }
    let ctx = PrefixCtx {
        cb,
        x,
        codes,
        item_ids,
        cost: &cost,
        capacity,
        candidates,
        order,
    };
    let results: Vec<PrefixMoves> = runs
        .into_par_iter()
        .map(|run| ctx.resolve_prefix(&by_prefix[run], &is_fixed))
        .collect();
    let mut out = codes.to_vec();
    let (mut moved, mut unresolved, mut added) = (Vec::new(), Vec::new(), 0.0f64);
    for r in results {
        for (i, code, dist) in r.moves {
            out[i as usize * levels + last] = code;
            moved.push(i);
            added += (dist - cost[i as usize]) as f64;
        }
        unresolved.extend(r.unresolved);
    }
    unresolved.sort_unstable();
    // Escalation: an item whose candidates had no room tries every code of its prefix and
    // then the next-nearest codes of the level above, each with its nearest last-level codes,
    // until one has room.
    if levels >= 2 && !unresolved.is_empty() {
        let esc = Escalation {
            cb,
            x,
            cost: &cost,
            capacity,
            skip: candidates,
            block: Escalation::block_for(sizes),
        };
        unresolved = esc.run(&mut out, &unresolved, &mut moved, &mut added);
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

/// Escalation of the items whose `candidates` nearest codes had no room. In row order, each
/// item finds two places: the nearest free last-level code under its own prefix past those
/// `candidates` (in exact distance order), and the nearest free one under the first other code of the level above
/// (nearest first) that has room; it takes the cheaper of the two (ties: its own prefix).
/// Both are measured as the same squared reconstruction error. The searches (the
/// alternatives' order and the last-level orders under its own code and the first other one)
/// are planned in parallel for blocks of items; only the placement, which must see earlier
/// placements, runs in row order, so the result is that of the one-item-at-a-time loop.
struct Escalation<'a> {
    cb: &'a crate::Codebooks<'a>,
    x: &'a [f32],
    cost: &'a [f32],
    capacity: usize,
    /// Codes of its own prefix an item skips, nearest first: the `candidates` it already tried.
    skip: usize,
    /// Items planned at once, in parallel.
    block: usize,
}

/// One stuck item's search: the alternative codes of the level above in probe order, and the
/// last-level codes (with their squared distances) in probe order under its own code and
/// under the first other one.
struct Plan {
    alts: Ranked<(f64, usize)>,
    own: Ranked<(f64, usize)>,
    first: Option<Ranked<(f64, usize)>>,
}

/// Candidates `(squared distance, code)` in probe order (nearest first, ties: lower code),
/// sorted lazily: the nearest [`HEAD`] at once (most searches end there), longer stretches
/// as a search reaches them. The order is the full sort's either way.
struct Ranked<T> {
    v: Vec<T>,
    sorted: usize,
}

/// Candidates sorted when a [`Ranked`] list is made.
const HEAD: usize = 8;

/// A candidate's probe order: by distance, then by code.
trait Probe: Copy {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering;
}

impl Probe for (f64, usize) {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
    }
}

impl Probe for (f32, u16) {
    fn order(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
    }
}

impl<T: Probe> Ranked<T> {
    /// The `keep` first candidates of `v` in probe order (all of them when `keep >= v.len()`).
    fn new(mut v: Vec<T>, keep: usize) -> Self {
        if keep == 0 {
            v.clear();
        } else if keep < v.len() {
            v.select_nth_unstable_by(keep - 1, T::order);
            v.truncate(keep);
            v.shrink_to_fit(); // a mover keeps `keep` candidates, not the whole codebook
        }
        let head = HEAD.min(v.len());
        if head > 0 && head < v.len() {
            v.select_nth_unstable_by(head - 1, T::order);
        }
        v[..head].sort_unstable_by(T::order);
        Ranked { v, sorted: head }
    }

    /// The `p`-th candidate in probe order. A search past the sorted part sorts the next
    /// stretch, four times as long as what is sorted so far (or up to `p`).
    fn get(&mut self, p: usize) -> Option<T> {
        let n = self.v.len();
        if p >= self.sorted && p < n {
            let next = (4 * self.sorted).max(p + 1).min(n);
            let tail = &mut self.v[self.sorted..];
            if next < n {
                tail.select_nth_unstable_by(next - self.sorted - 1, T::order);
            }
            tail[..next - self.sorted].sort_unstable_by(T::order);
            self.sorted = next;
        }
        self.v.get(p).copied()
    }
}

impl Escalation<'_> {
    /// Items planned at once: up to 4,096, fewer for large codebooks, so that a block's plans
    /// (a candidate per code of the last two levels, 16 bytes each) stay within 64 MiB.
    fn block_for(sizes: &[usize]) -> usize {
        let per_item: usize = sizes[sizes.len().saturating_sub(2)..].iter().sum();
        ((1usize << 22) / per_item.max(1)).clamp(1, 4096)
    }

    /// Places `unresolved` rows of `out`; returns the rows still without room.
    fn run(
        &self,
        out: &mut [u16],
        unresolved: &[u32],
        moved: &mut Vec<u32>,
        added: &mut f64,
    ) -> Vec<u32> {
        let (levels, sizes) = (self.cb.levels(), self.cb.sizes());
        let bits: Vec<u32> = sizes.iter().map(|&k| bits_of(k)).collect();
        let stuck: rustc_hash::FxHashSet<u32> = unresolved.iter().copied().collect();
        let mut taken: rustc_hash::FxHashMap<u64, u32> = rustc_hash::FxHashMap::default();
        for (i, row) in out.chunks(levels).enumerate() {
            if !stuck.contains(&(i as u32)) {
                *taken.entry(pack_row(row, &bits)).or_insert(0) += 1;
            }
        }
        let (up, last) = (levels - 2, levels - 1);
        let (mut still, mut tuple) = (Vec::new(), vec![0u16; levels]);
        for block in unresolved.chunks(self.block) {
            let mut plans: Vec<Plan> = {
                let out = &*out;
                block
                    .par_iter()
                    .map(|&row| self.plan(out, row as usize))
                    .collect()
            };
            for (&row, plan) in block.iter().zip(&mut plans) {
                let i = row as usize;
                let own = out[i * levels + up] as usize;
                let mut has_room = |a: usize, j: usize| {
                    tuple.copy_from_slice(&out[i * levels..(i + 1) * levels]);
                    tuple[up] = a as u16;
                    tuple[last] = j as u16;
                    // A probe inserts nothing: only a placement adds to the map.
                    (taken.get(&pack_row(&tuple, &bits)).copied().unwrap_or(0) as usize)
                        < self.capacity
                };
                // The nearest free code under its own prefix...
                let mut pick: Option<(f64, usize, usize)> = None;
                let mut q = self.skip;
                while let Some((dist, j)) = plan.own.get(q) {
                    q += 1;
                    if has_room(own, j) {
                        pick = Some((dist, own, j));
                        break;
                    }
                }
                // ... against the nearest free one under the first other prefix with room.
                let (mut p, mut alt) = (0, 0);
                'alts: while let Some((_, a)) = plan.alts.get(p) {
                    p += 1;
                    if a == own {
                        continue;
                    }
                    let mut later;
                    let list = match (alt, plan.first.as_mut()) {
                        (0, Some(first)) => first,
                        _ => {
                            later = self.last_level(&self.base(out, i), a);
                            &mut later
                        }
                    };
                    alt += 1;
                    let mut q = 0;
                    while let Some((dist, j)) = list.get(q) {
                        q += 1;
                        if has_room(a, j) {
                            if pick.is_none_or(|(d, _, _)| dist < d) {
                                pick = Some((dist, a, j));
                            }
                            break 'alts;
                        }
                    }
                }
                match pick {
                    Some((dist, a, j)) => {
                        tuple.copy_from_slice(&out[i * levels..(i + 1) * levels]);
                        tuple[up] = a as u16;
                        tuple[last] = j as u16;
                        *taken.entry(pack_row(&tuple, &bits)).or_insert(0) += 1;
                        out[i * levels..(i + 1) * levels].copy_from_slice(&tuple);
                        moved.push(row);
                        *added += dist - self.cost[i] as f64;
                    }
                    None => still.push(row),
                }
            }
        }
        still
    }

    /// Item `i`'s residual after every level above `up` (its own codes there).
    fn base(&self, out: &[u16], i: usize) -> Vec<f32> {
        let (d, levels) = (self.cb.dim(), self.cb.levels());
        let mut base = self.x[i * d..(i + 1) * d].to_vec();
        for l in 0..levels - 2 {
            let c = self.cb.codeword(l, out[i * levels + l] as usize);
            base.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
        }
        base
    }

    /// Codes of level `l` in probe order for the residual `r`.
    fn ranked(&self, r: &[f32], l: usize) -> Ranked<(f64, usize)> {
        let k = self.cb.sizes()[l];
        let v = (0..k).map(|j| (crate::kernels::sq_dist(r, self.cb.codeword(l, j)), j));
        Ranked::new(v.collect(), k)
    }

    /// The last level's codes in probe order under alternative `a` of the level above.
    fn last_level(&self, base: &[f32], a: usize) -> Ranked<(f64, usize)> {
        let up = self.cb.levels() - 2;
        let r: Vec<f32> = base
            .iter()
            .zip(self.cb.codeword(up, a))
            .map(|(&p, &q)| p - q)
            .collect();
        self.ranked(&r, up + 1)
    }

    fn plan(&self, out: &[u16], i: usize) -> Plan {
        let levels = self.cb.levels();
        let up = levels - 2;
        let base = self.base(out, i);
        let own = out[i * levels + up] as usize;
        let mut alts = self.ranked(&base, up);
        let first = (0..)
            .map_while(|p| alts.get(p))
            .find(|&(_, a)| a != own)
            .map(|(_, a)| self.last_level(&base, a));
        let mut own_codes = self.last_level(&base, own);
        own_codes.get(self.skip); // sorted up to where the placement starts, here in parallel
        Plan {
            own: own_codes,
            alts,
            first,
        }
    }
}

/// What resolving one prefix decided: (row, new last-level code, its squared distance).
struct PrefixMoves {
    moves: Vec<(u32, u16, f32)>,
    unresolved: Vec<u32>,
}

/// Shared, read-only inputs of the per-prefix resolution.
struct PrefixCtx<'a> {
    cb: &'a crate::Codebooks<'a>,
    x: &'a [f32],
    codes: &'a [u16],
    item_ids: &'a [i64],
    cost: &'a [f32],
    capacity: usize,
    candidates: usize,
    order: MoveOrder,
}

impl PrefixCtx<'_> {
    /// Resolves the items of one prefix: `items` come fixed first, then by rank in their SID.
    fn resolve_prefix(
        &self,
        items: &[u32],
        is_fixed: &(impl Fn(usize) -> bool + Sync),
    ) -> PrefixMoves {
        let (cb, d) = (self.cb, self.cb.dim());
        let (levels, last) = (cb.levels(), cb.levels() - 1);
        let k = cb.sizes()[last];
        let mut taken = vec![0u32; k];
        let mut movers = Vec::new();
        for &i in items {
            let code = self.codes[i as usize * levels + last] as usize;
            if is_fixed(i as usize) || (taken[code] as usize) < self.capacity {
                taken[code] += 1;
            } else {
                movers.push(i);
            }
        }
        let mut result = PrefixMoves {
            moves: Vec::new(),
            unresolved: Vec::new(),
        };
        if movers.is_empty() {
            return result;
        }
        // Distances of every mover's residual before the last level to every last-level
        // codeword: the movers share their prefix, so one reconstruction serves all.
        let first = movers[0] as usize;
        let mut prefix = vec![0.0f32; d];
        for l in 0..last {
            let c = cb.codeword(l, self.codes[first * levels + l] as usize);
            prefix.iter_mut().zip(c).for_each(|(a, &b)| *a += b);
        }
        let mut resid = Vec::with_capacity(movers.len() * d);
        for &i in &movers {
            let xi = &self.x[i as usize * d..(i as usize + 1) * d];
            resid.extend(xi.iter().zip(&prefix).map(|(&a, &b)| a - b));
        }
        // In blocks of movers, so the (movers, K) distance matrix stays within 64 MiB; each
        // mover keeps only its `candidates` nearest codes.
        let take = self.candidates.min(k);
        let block = ((16usize << 20) / k).max(1);
        let (mut dist, mut cands) = (Vec::new(), Vec::with_capacity(movers.len()));
        for rb in resid.chunks(block * d) {
            crate::rq::distances(cb, last, rb, rb.len() / d, &mut dist);
            cands.extend(rb.chunks(d).zip(dist.chunks(k)).map(|(r, v)| {
                let rn = crate::kernels::sq_norm(r) as f32;
                let row = v
                    .iter()
                    .enumerate()
                    .map(|(j, &e)| ((rn + e).max(0.0), j as u16));
                Ranked::new(row.collect(), take)
            }));
        }
        let mut cands: Vec<Ranked<(f32, u16)>> = cands;
        let mut place = |m: usize, (dist, code): (f32, u16)| {
            if (taken[code as usize] as usize) >= self.capacity {
                return false;
            }
            taken[code as usize] += 1;
            result.moves.push((movers[m], code, dist));
            true
        };
        match self.order {
            MoveOrder::Knn => {
                // Lazy greedy: each mover offers its next candidate; the cheapest added error
                // goes first (ties → item id, then code), as a sorted list of all pairs would.
                use std::cmp::Reverse;
                let key = |m: usize, p: usize, (dist, code): (f32, u16)| {
                    let i = movers[m] as usize;
                    (
                        Reverse((ordered_bits(dist - self.cost[i]), self.item_ids[i], code)),
                        m,
                        p,
                    )
                };
                let mut heap: std::collections::BinaryHeap<_> = (0..movers.len())
                    .filter_map(|m| cands[m].get(0).map(|c| key(m, 0, c)))
                    .collect();
                let mut stuck = Vec::new();
                while let Some((_, m, p)) = heap.pop() {
                    let c = cands[m].v[p]; // sorted when its key was made
                    if place(m, c) {
                        continue;
                    }
                    match cands[m].get(p + 1) {
                        Some(next) => heap.push(key(m, p + 1, next)),
                        None => stuck.push(movers[m]),
                    }
                }
                result.unresolved = stuck;
            }
            MoveOrder::Random(seed) => {
                let mut shuffled: Vec<usize> = (0..movers.len()).collect();
                // SplitMix64-keyed shuffle: deterministic for a seed, independent of threads.
                shuffled
                    .sort_by_key(|&m| splitmix(seed ^ self.item_ids[movers[m] as usize] as u64));
                let mut stuck = Vec::new();
                for m in shuffled {
                    let mut p = 0;
                    let placed = loop {
                        match cands[m].get(p) {
                            Some(c) if place(m, c) => break true,
                            Some(_) => p += 1,
                            None => break false,
                        }
                    };
                    if !placed {
                        stuck.push(movers[m]);
                    }
                }
                result.unresolved = stuck;
            }
        }
        result
    }
}

fn bits_of(k: usize) -> u32 {
    usize::BITS - (k.max(2) - 1).leading_zeros()
}

/// Bits of a float that order like the float (for use as an integer sort key).
pub(crate) fn ordered_bits(f: f32) -> u32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    /// The escalation as one item at a time, every list computed when reached (the code before
    /// blocks and plans): the reference [`Escalation::run`] must equal. Also returns the
    /// deepest alternative and last-level code (0-based, in probe order) any item took.
    fn escalate_one_at_a_time(
        e: &Escalation,
        out: &mut [u16],
        unresolved: &[u32],
        moved: &mut Vec<u32>,
        added: &mut f64,
    ) -> (Vec<u32>, (usize, usize)) {
        let (levels, sizes, d) = (e.cb.levels(), e.cb.sizes(), e.cb.dim());
        let mut taken: HashMap<Vec<u16>, usize> = HashMap::new();
        for (i, row) in out.chunks(levels).enumerate() {
            if !unresolved.contains(&(i as u32)) {
                *taken.entry(row.to_vec()).or_insert(0) += 1;
            }
        }
        let (up, last) = (levels - 2, levels - 1);
        let sorted = |r: &[f32], l: usize| {
            let mut v: Vec<(f64, usize)> = (0..sizes[l])
                .map(|j| (crate::kernels::sq_dist(r, e.cb.codeword(l, j)), j))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            v
        };
        let (mut still, mut deepest) = (Vec::new(), (0, 0));
        for &row in unresolved {
            let i = row as usize;
            let mut base = e.x[i * d..(i + 1) * d].to_vec();
            for l in 0..up {
                let c = e.cb.codeword(l, out[i * levels + l] as usize);
                base.iter_mut().zip(c).for_each(|(a, &b)| *a -= b);
            }
            let own = out[i * levels + up] as usize;
            let under = |a: usize| {
                let r: Vec<f32> = base
                    .iter()
                    .zip(e.cb.codeword(up, a))
                    .map(|(&p, &q)| p - q)
                    .collect();
                sorted(&r, last)
            };
            let tuple_of = |a: usize, j: usize| {
                let mut t = out[i * levels..(i + 1) * levels].to_vec();
                t[up] = a as u16;
                t[last] = j as u16;
                t
            };
            let free = |t: &Vec<u16>| taken.get(t).copied().unwrap_or(0) < e.capacity;
            // Its own prefix's nearest free code, and the first other prefix's with room.
            let mine = under(own)
                .into_iter()
                .enumerate()
                .skip(e.skip)
                .find(|&(_, (_, j))| free(&tuple_of(own, j)))
                .map(|(q, (dist, j))| (dist, own, j, (0, q)));
            let other = sorted(&base, up)
                .into_iter()
                .map(|(_, a)| a)
                .filter(|&a| a != own)
                .enumerate()
                .find_map(|(p, a)| {
                    under(a)
                        .into_iter()
                        .enumerate()
                        .find(|&(_, (_, j))| free(&tuple_of(a, j)))
                        .map(|(q, (dist, j))| (dist, a, j, (p, q)))
                });
            let pick = match (mine, other) {
                (Some(m), Some(o)) => Some(if o.0 < m.0 { o } else { m }),
                (m, o) => m.or(o),
            };
            match pick {
                Some((dist, a, j, depth)) => {
                    let t = tuple_of(a, j);
                    *taken.entry(t.clone()).or_insert(0) += 1;
                    out[i * levels..(i + 1) * levels].copy_from_slice(&t);
                    moved.push(row);
                    *added += dist - e.cost[i] as f64;
                    deepest = (deepest.0.max(depth.0), deepest.1.max(depth.1));
                }
                None => still.push(row),
            }
        }
        (still, deepest)
    }

    /// Blocks of planned searches place exactly as the one-at-a-time loop: several blocks of
    /// stuck items, items that exhaust the planned alternatives (crowded codes: every tuple of
    /// a few alternatives full), items that find no room at all, capacity 1 and 3.
    #[test]
    fn escalation_equals_the_one_item_at_a_time_loop() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut deepest_any = (0, 0);
        for (sizes, capacity, n, stuck_share) in [
            (vec![3usize, 6, 5], 1usize, 4000usize, 0.6f64),
            (vec![2, 8, 4], 3, 3000, 0.9),
            (vec![4, 3], 1, 2600, 0.8),
            (vec![1, 2, 2], 1, 50, 1.0), // 4 tuples for 50 items: most stay stuck
            (vec![2, 12, 20], 1, 3000, 0.9), // past the sorted heads of both lists
            (vec![1, 3, 150], 1, 400, 1.0), // deep into long lists: several sorted stretches
        ] {
            let d = 3;
            let total: usize = sizes.iter().sum();
            let data: Vec<f32> = (0..total * d)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let cb = crate::Codebooks::new(data, &sizes, d).unwrap();
            let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.5..1.5)).collect();
            let levels = sizes.len();
            // Skewed codes: most items in a few tuples, so the alternatives near them fill up.
            let codes: Vec<u16> = (0..n)
                .flat_map(|_| {
                    sizes
                        .iter()
                        .map(|&k| rng.random_range(0..k.min(2)) as u16)
                        .collect::<Vec<_>>()
                })
                .collect();
            let cost: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..2.0)).collect();
            let unresolved: Vec<u32> = (0..n as u32)
                .filter(|_| rng.random_bool(stuck_share))
                .collect();
            let e = Escalation {
                cb: &cb,
                x: &x,
                cost: &cost,
                capacity,
                skip: 1 + sizes.len() % 2, // its own prefix past its first 1 or 2 codes
                block: 64,                 // several blocks in every case
            };
            let (mut out_a, mut moved_a, mut added_a) = (codes.clone(), Vec::new(), 0.0);
            let still_a = e.run(&mut out_a, &unresolved, &mut moved_a, &mut added_a);
            let (mut out_b, mut moved_b, mut added_b) = (codes.clone(), Vec::new(), 0.0);
            let (still_b, deepest) =
                escalate_one_at_a_time(&e, &mut out_b, &unresolved, &mut moved_b, &mut added_b);
            deepest_any = (deepest_any.0.max(deepest.0), deepest_any.1.max(deepest.1));
            assert_eq!(out_a, out_b, "{sizes:?}");
            assert_eq!(moved_a, moved_b);
            assert_eq!(still_a, still_b);
            assert!(
                (added_a - added_b).abs() <= 1e-9 * added_b.abs().max(1.0),
                "{added_a} vs {added_b}"
            );
            assert!(unresolved.len() > 3 * e.block || n < e.block);
            assert!(!moved_a.is_empty());
            if levels == 3 && n == 50 {
                assert!(!still_a.is_empty());
            }
        }
        // Blocks shrink with the codebooks: at most 64 MiB of plans.
        assert_eq!(Escalation::block_for(&[256, 256, 256]), 4096);
        assert_eq!(Escalation::block_for(&[65536, 65536]), 32);
        assert_eq!(Escalation::block_for(&[7]), 4096);
        // Some item was placed past the sorted heads (the tails sorted when reached) and past
        // the planned first alternative.
        assert!(
            deepest_any.0 >= HEAD && deepest_any.1 >= 4 * HEAD,
            "{deepest_any:?}"
        );
    }

    /// The partition path against a hash-map count in row order, on clustered codes (many
    /// collisions) with several level layouts, including one partition (narrow keys) and
    /// the widest keys it takes.
    #[test]
    fn partition_ranking_matches_a_row_order_count() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for sizes in [
            vec![4usize],
            vec![256, 256, 256],
            vec![3, 1000, 7],
            vec![65536, 65536],
        ] {
            let n = 20_000;
            let codes: Vec<u16> = (0..n)
                .flat_map(|_| {
                    sizes
                        .iter()
                        .map(|&k| rng.random_range(0..k.min(6)) as u16)
                        .collect::<Vec<_>>()
                })
                .collect();
            let ranks: Vec<std::sync::atomic::AtomicU32> = (0..n)
                .map(|_| std::sync::atomic::AtomicU32::new(u32::MAX))
                .collect();
            let (groups, max, colliding) = rank_by_partition(&codes, &sizes, |r, k| {
                ranks[r].store(k, std::sync::atomic::Ordering::Relaxed)
            });
            let mut count: HashMap<&[u16], u32> = HashMap::new();
            for (i, row) in codes.chunks(sizes.len()).enumerate() {
                let c = count.entry(row).or_insert(0);
                assert_eq!(
                    ranks[i].load(std::sync::atomic::Ordering::Relaxed),
                    *c,
                    "{sizes:?} row {i}"
                );
                *c += 1;
            }
            assert_eq!(groups, count.len());
            assert_eq!(max, *count.values().max().unwrap() as usize);
            assert_eq!(colliding, count.values().filter(|&&c| c > 1).count());
        }
    }
}
