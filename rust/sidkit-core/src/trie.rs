//! A compact prefix trie of valid SIDs, stored as flat arrays (CSR by depth), no pointers.
//!
//! Nodes are numbered depth by depth, each depth in lexicographic order of its prefixes:
//! node 0 is the root, then the distinct 1-code prefixes, then the 2-code prefixes, ... and
//! the leaves (full SIDs). The children of a node are therefore one contiguous range of node
//! ids, `first_child[v]..first_child[v + 1]`, sorted by code — a walk is a binary search per
//! level, and a batch of beams carries plain node ids (states), as in STATIC's vectorised trie.

use rayon::prelude::*;

use crate::collide::{check_table, pack};
use crate::error::{Error, Result};

/// Node id that marks "no node" (an invalid prefix).
pub const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq)]
pub struct Trie {
    sizes: Vec<usize>,
    /// First node id of each depth, `depth + 2` entries (the last is the node count).
    depth_start: Vec<u32>,
    /// Code of every node (the root's is 0 and unused).
    code: Vec<u16>,
    /// Children of internal node `v`: `first_child[v]..first_child[v + 1]`.
    first_child: Vec<u32>,
    /// Items of leaf `leaf`: `item_start[leaf]..item_start[leaf + 1]` of `items`.
    item_start: Vec<u32>,
    items: Vec<i64>,
}

impl Trie {
    /// Builds the trie of the rows of `codes` ((n, L) row-major, each below its level's
    /// size) mapping to `item_ids`. A SID shared by several items is an error unless
    /// `allow_duplicates`, where its leaf keeps all of them (in item id order).
    pub fn new(
        codes: &[u16],
        sizes: &[usize],
        item_ids: &[i64],
        allow_duplicates: bool,
    ) -> Result<Self> {
        check_table(codes, sizes, Some(item_ids))?;
        let levels = sizes.len();
        let n = item_ids.len();
        if n >= NONE as usize {
            return Err(Error::value("codes", "fewer than 2^32 - 1 rows", n));
        }
        let row = |i: u32| &codes[i as usize * levels..(i as usize + 1) * levels];
        // Rows in (SID, item id) order.
        let order: Vec<u32> = match pack(codes, sizes) {
            Some(keys) if levels > 0 => {
                let idx_bits = 64 - (n.max(2) as u64 - 1).leading_zeros();
                let key_bits: u32 = sizes
                    .iter()
                    .map(|&k| 64 - (k.max(2) as u64 - 1).leading_zeros())
                    .sum();
                if key_bits + idx_bits <= 64 && item_ids.par_windows(2).all(|w| w[0] < w[1]) {
                    let mut packed: Vec<u64> = keys
                        .par_iter()
                        .enumerate()
                        .map(|(i, &k)| (k << idx_bits) | i as u64)
                        .collect();
                    crate::alloc::sort_u64(&mut packed);
                    let mask = (1u64 << idx_bits) - 1;
                    packed.par_iter().map(|&p| (p & mask) as u32).collect()
                } else {
                    let mut recs: Vec<(u64, i64, u32)> = (0..n)
                        .into_par_iter()
                        .map(|i| (keys[i], item_ids[i], i as u32))
                        .collect();
                    recs.par_sort_unstable();
                    recs.par_iter().map(|r| r.2).collect()
                }
            }
            _ => {
                let mut order: Vec<u32> = (0..n as u32).collect();
                order.par_sort_unstable_by(|&a, &b| {
                    row(a)
                        .cmp(row(b))
                        .then(item_ids[a as usize].cmp(&item_ids[b as usize]))
                });
                order
            }
        };
        // Distinct full SIDs, and for each sorted row the depth at which it leaves the previous
        // row's path (0 = a new level-0 code; `levels` = same SID as the previous row).
        let diverge: Vec<usize> = (0..n)
            .into_par_iter()
            .map(|j| {
                if j == 0 {
                    return 0;
                }
                let (a, b) = (row(order[j - 1]), row(order[j]));
                a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(levels)
            })
            .collect();
        if !allow_duplicates {
            if let Some(j) = (1..n).find(|&j| diverge[j] == levels) {
                return Err(Error::value(
                    "codes",
                    "unique SIDs (resolve collisions with sidkit.resolve first, or pass allow_duplicates=True)",
                    format!(
                        "items {} and {} share a SID",
                        item_ids[order[j - 1] as usize], item_ids[order[j] as usize]
                    ),
                ));
            }
        }
        // Count nodes per depth: a row opens a new node at every depth below its divergence.
        let mut depth_count = vec![0u64; levels + 1];
        depth_count[0] = 1;
        for &dv in &diverge {
            for c in depth_count.iter_mut().take(levels + 1).skip(dv + 1) {
                *c += 1;
            }
        }
        // Node ids are u32 (and u32::MAX marks "none"): n SIDs of L levels may need up to n·L.
        let nodes: u64 = depth_count.iter().sum();
        if nodes >= u32::MAX as u64 {
            return Err(Error::value(
                "codes",
                format!("a trie of fewer than {} nodes", u32::MAX),
                format!("{nodes} nodes for {n} SIDs of {levels} levels"),
            ));
        }
        let depth_count: Vec<u32> = depth_count.iter().map(|&c| c as u32).collect();
        let mut depth_start = vec![0u32; levels + 2];
        for t in 0..=levels {
            depth_start[t + 1] = depth_start[t] + depth_count[t];
        }
        let total = depth_start[levels + 1] as usize;
        let internal = depth_start[levels] as usize;
        let leaves = depth_count[levels] as usize;
        let mut code = vec![0u16; total];
        let mut first_child = vec![0u32; internal + 1];
        let mut item_start = Vec::with_capacity(leaves + 1);
        let mut items = Vec::with_capacity(n);
        // Rows arrive in lexicographic order, so each depth's nodes open in id order and a
        // node's children open right after the previous node's: when node v opens, its
        // children will start at the next free id of the depth below. The last node of a depth
        // ends where the next depth's first node starts its own children, which is the same id.
        let mut next: Vec<u32> = depth_start[..=levels].to_vec();
        first_child[0] = depth_start[1];
        for (j, &dv) in diverge.iter().enumerate() {
            let r = row(order[j]);
            for t in (dv + 1)..=levels {
                let v = next[t];
                next[t] += 1;
                code[v as usize] = r[t - 1];
                if t < levels {
                    first_child[v as usize] = next[t + 1];
                }
                if t == levels {
                    item_start.push(items.len() as u32);
                }
            }
            items.push(item_ids[order[j] as usize]);
        }
        first_child[internal] = depth_start[levels + 1];
        item_start.push(items.len() as u32);
        Ok(Self {
            sizes: sizes.to_vec(),
            depth_start,
            code,
            first_child,
            item_start,
            items,
        })
    }

    /// Levels per SID.
    pub fn depth(&self) -> usize {
        self.sizes.len()
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Number of distinct SIDs (leaves).
    pub fn leaves(&self) -> usize {
        self.item_start.len() - 1
    }

    /// Number of items (more than `leaves()` only with duplicates).
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Bytes held by the trie's arrays.
    pub fn memory_bytes(&self) -> usize {
        self.code.capacity() * 2
            + (self.first_child.capacity()
                + self.item_start.capacity()
                + self.depth_start.capacity())
                * 4
            + self.items.capacity() * 8
            + self.sizes.capacity() * std::mem::size_of::<usize>()
    }

    /// Total node count, root included.
    pub fn num_nodes(&self) -> usize {
        self.code.len()
    }

    /// Depth of node `v` (0 = root, `depth()` = leaf), or `None` if it is not a node.
    pub fn node_depth(&self, v: u32) -> Option<usize> {
        if v as usize >= self.num_nodes() {
            return None;
        }
        Some(self.depth_start.partition_point(|&s| s <= v) - 1)
    }

    /// The children of internal node `v` as a node-id range (empty for leaves).
    pub fn children(&self, v: u32) -> std::ops::Range<u32> {
        if (v as usize) < self.first_child.len() - 1 {
            self.first_child[v as usize]..self.first_child[v as usize + 1]
        } else {
            0..0
        }
    }

    /// The code of node `v`.
    pub fn code(&self, v: u32) -> u16 {
        self.code[v as usize]
    }

    /// The codes of a node range (children are contiguous and sorted by code).
    pub fn codes_of(&self, r: std::ops::Range<u32>) -> &[u16] {
        &self.code[r.start as usize..r.end as usize]
    }

    /// The child of `v` with code `c`, or [`NONE`].
    pub fn child(&self, v: u32, c: u16) -> u32 {
        let r = self.children(v);
        match self.codes_of(r.clone()).binary_search(&c) {
            Ok(k) => r.start + k as u32,
            Err(_) => NONE,
        }
    }

    /// The node reached from the root by `prefix`, or [`NONE`].
    pub fn walk(&self, prefix: &[u16]) -> u32 {
        let mut v = 0;
        for &c in prefix {
            v = self.child(v, c);
            if v == NONE {
                return NONE;
            }
        }
        v
    }

    /// The items on leaf node `v` (empty if `v` is not a leaf).
    pub fn items_of(&self, v: u32) -> &[i64] {
        let first_leaf = self.depth_start[self.depth()];
        if v < first_leaf || v as usize >= self.num_nodes() {
            return &[];
        }
        let leaf = (v - first_leaf) as usize;
        &self.items[self.item_start[leaf] as usize..self.item_start[leaf + 1] as usize]
    }

    /// Every leaf's items as CSR, leaves in lexicographic SID order: the items of leaf `j`
    /// (node `depth_start(depth())` + j) are `items[offsets[j]..offsets[j + 1]]`.
    pub fn leaf_items(&self) -> (&[u32], &[i64]) {
        (&self.item_start, &self.items)
    }

    /// The first node id of depth `t`.
    pub fn depth_start(&self, t: usize) -> u32 {
        self.depth_start[t]
    }
}
