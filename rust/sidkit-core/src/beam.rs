//! Trie-constrained beam search over SIDs, one level per step, for any model.
//!
//! The caller runs its model on the current beams and passes log-probabilities for the next
//! level; the search keeps, per batch row, the `beam` best (beam, valid child) extensions by
//! cumulative score — only children that exist in the trie are ever scored, so the cost is
//! O(beams × children), never a sort over the vocabulary — and reports each new beam's code
//! and parent (to reorder a KV cache).

use rayon::prelude::*;

use crate::alloc;
use crate::error::{Error, Result};
use crate::trie::{Trie, NONE};

#[derive(Debug, Clone)]
pub struct BeamSearch {
    batch: usize,
    beam: usize,
    step: usize,
    depth: usize,
    /// Trie node of every beam (`NONE` = no hypothesis), `batch * beam`.
    node: Vec<u32>,
    score: Vec<f32>,
    parent: Vec<u32>,
    /// Codes chosen so far, `batch * beam * depth` (only the first `step` per beam are set).
    codes: Vec<u16>,
}

/// The best hypotheses of every batch row after the last step.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// (batch, top_k) item ids, -1 where a row has fewer valid items.
    pub items: Vec<i64>,
    /// (batch, top_k) cumulative log-probabilities, -inf where padded.
    pub scores: Vec<f32>,
    /// (batch, top_k, depth) codes, 0 where padded.
    pub sids: Vec<u16>,
}

impl BeamSearch {
    pub fn new(trie: &Trie, batch: usize, beam: usize) -> Result<Self> {
        if beam == 0 {
            return Err(Error::value("beam_width", "beam_width >= 1", 0));
        }
        if batch == 0 {
            return Err(Error::value("batch_size", "batch_size >= 1", 0));
        }
        let depth = trie.depth();
        // Beams are indexed by u32 (parents), NONE excluded.
        let rows = batch
            .checked_mul(beam)
            .filter(|&r| r < NONE as usize)
            .ok_or_else(|| {
                Error::value(
                    "beam_width",
                    "batch_size * beam_width < 2^32 - 1 beams",
                    format!("{batch} * {beam}"),
                )
            })?;
        let codes_len = alloc::elements::<u16>("beam_width", &[batch, beam, depth])?;
        let mut node = alloc::try_filled("beam_width", rows, NONE)?;
        let mut score = alloc::try_filled("beam_width", rows, f32::NEG_INFINITY)?;
        let mut parent = alloc::try_filled("beam_width", rows, 0u32)?;
        let codes = alloc::try_filled("beam_width", codes_len, 0u16)?;
        // One live hypothesis per row at the start, so no duplicates ever arise.
        for b in 0..batch {
            node[b * beam] = 0;
            score[b * beam] = 0.0;
        }
        for (i, p) in parent.iter_mut().enumerate() {
            *p = i as u32;
        }
        Ok(Self {
            batch,
            beam,
            step: 0,
            depth,
            node,
            score,
            parent,
            codes,
        })
    }

    /// The trie depth (codes per finished hypothesis).
    pub fn depth_len(&self) -> usize {
        self.depth
    }

    pub fn step_index(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step == self.depth
    }

    /// Node of every beam (`NONE` for empty beams).
    pub fn nodes(&self) -> &[u32] {
        &self.node
    }

    pub fn scores(&self) -> &[f32] {
        &self.score
    }

    /// For every beam, the beam of the previous step it extends.
    pub fn parents(&self) -> &[u32] {
        &self.parent
    }

    /// Codes chosen so far, (batch * beam, depth), valid up to the current step.
    pub fn codes(&self) -> &[u16] {
        &self.codes
    }

    /// Advances one level. `logp` is (batch * beam, width) row-major; the score of code `c` at
    /// this level is `logp[row, offset + c]`. NaN scores count as -inf (never chosen); a +inf
    /// score (given, or a sum that overflows) or a sum of finite scores that overflows to -inf,
    /// on a code the search reads, is an error.
    pub fn step(&mut self, trie: &Trie, logp: &[f32], width: usize, offset: usize) -> Result<()> {
        if self.step == self.depth {
            return Err(Error::value(
                "step",
                format!("at most {} steps (the trie depth)", self.depth),
                "a call after the last level; call finish()",
            ));
        }
        let rows = self.batch * self.beam;
        let k = trie.sizes()[self.step];
        if rows.checked_mul(width) != Some(logp.len()) {
            return Err(Error::shape(
                "logp",
                format!("({rows}, {width}) = batch_size * beam_width rows"),
                format!("{} values", logp.len()),
            ));
        }
        if offset.checked_add(k).is_none_or(|end| end > width) {
            return Err(Error::shape(
                "logp",
                format!(
                    "at least offset + K = {} columns at level {}",
                    offset as u128 + k as u128,
                    self.step
                ),
                format!("{width} columns"),
            ));
        }
        let (beam, depth, step) = (self.beam, self.depth, self.step);
        let (node, score, codes) = (&self.node, &self.score, &self.codes);
        // Per batch row, in parallel: (new node, score, parent, code) for each new beam.
        let chosen: Vec<Vec<(u32, f32, u32, u16)>> = (0..self.batch)
            .into_par_iter()
            .map(|b| {
                // Best first; ties → lower parent beam, then lower code (deterministic).
                let by = |a: &(f32, u32, u16, u32), b: &(f32, u32, u16, u32)| {
                    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
                };
                // A bounded buffer: when it fills, only its best `beam` stay and their worst
                // score becomes the bar a candidate must reach, so most of the beam x K
                // candidates cost one comparison. Only candidates with at least `beam` better
                // ones are dropped: the result is the full sort's top `beam`.
                let cap = 4 * beam;
                // Grown on demand: a huge beam_width must not allocate 4x its size up front.
                let mut cand: Vec<(f32, u32, u16, u32)> = Vec::with_capacity(cap.min(4096));
                let mut bar = f32::NEG_INFINITY;
                for p in b * beam..(b + 1) * beam {
                    if node[p] == NONE {
                        continue;
                    }
                    let kids = trie.children(node[p]);
                    let row = &logp[p * width + offset..p * width + offset + k];
                    let base = score[p];
                    for (v, &c) in kids.clone().zip(trie.codes_of(kids)) {
                        let s = base + row[c as usize];
                        if s == f32::INFINITY {
                            // +inf would tie every such beam and rank them by index alone.
                            return Err(Error::value(
                                "logp",
                                "log-probabilities that are finite or -inf (a finite sum over levels)",
                                format!(
                                    "+inf at row {p}, column {} (or a sum that overflows float32)",
                                    offset + c as usize
                                ),
                            ));
                        }
                        if s == f32::NEG_INFINITY && base > s && row[c as usize] > s {
                            // Two finite scores whose sum underflows: silently dropping the
                            // beam would lose the result.
                            return Err(Error::value(
                                "logp",
                                "log-probabilities that are finite or -inf (a finite sum over levels)",
                                format!(
                                    "a sum that overflows float32 to -inf at row {p}, column {}",
                                    offset + c as usize
                                ),
                            ));
                        }
                        // NaN fails both tests: it counts as -inf, never chosen.
                        if s > f32::NEG_INFINITY && s >= bar {
                            cand.push((s, p as u32, c, v));
                            if cand.len() == cap {
                                cand.select_nth_unstable_by(beam - 1, by);
                                cand.truncate(beam);
                                bar = cand[beam - 1].0;
                            }
                        }
                    }
                }
                if cand.len() > beam {
                    cand.select_nth_unstable_by(beam - 1, by);
                    cand.truncate(beam);
                }
                cand.sort_unstable_by(by);
                Ok(cand.into_iter().map(|(s, p, c, v)| (v, s, p, c)).collect())
            })
            .collect::<Result<_>>()?;
        let mut new_codes = vec![0u16; codes.len()];
        for (b, picks) in chosen.into_iter().enumerate() {
            for slot in 0..beam {
                let q = b * beam + slot;
                match picks.get(slot) {
                    Some(&(v, s, p, c)) => {
                        let p = p as usize;
                        new_codes[q * depth..q * depth + step]
                            .copy_from_slice(&codes[p * depth..p * depth + step]);
                        new_codes[q * depth + step] = c;
                        self.node[q] = v;
                        self.score[q] = s;
                        self.parent[q] = p as u32;
                    }
                    None => {
                        self.node[q] = NONE;
                        self.score[q] = f32::NEG_INFINITY;
                        self.parent[q] = q as u32;
                    }
                }
            }
        }
        self.codes = new_codes;
        self.step += 1;
        Ok(())
    }

    /// The `top_k` best items per batch row, after the last step.
    pub fn finish(&self, trie: &Trie, top_k: usize) -> Result<Finished> {
        if self.step != self.depth {
            return Err(Error::value(
                "finish",
                format!("{} steps (the trie depth) first", self.depth),
                format!("{} steps so far", self.step),
            ));
        }
        if top_k == 0 {
            return Err(Error::value("top_k", "top_k >= 1", 0));
        }
        let depth = self.depth;
        let slots = alloc::elements::<i64>("top_k", &[self.batch, top_k])?;
        let codes = alloc::elements::<u16>("top_k", &[self.batch, top_k, depth])?;
        let mut out = Finished {
            items: alloc::try_filled("top_k", slots, -1)?,
            scores: alloc::try_filled("top_k", slots, f32::NEG_INFINITY)?,
            sids: alloc::try_filled("top_k", codes, 0)?,
        };
        for b in 0..self.batch {
            let mut slot = 0;
            // Beams are already sorted best first; a leaf with several items (duplicates)
            // yields them in item id order.
            'beams: for q in b * self.beam..(b + 1) * self.beam {
                if self.node[q] == NONE {
                    continue;
                }
                for &item in trie.items_of(self.node[q]) {
                    if slot == top_k {
                        break 'beams;
                    }
                    let o = b * top_k + slot;
                    out.items[o] = item;
                    out.scores[o] = self.score[q];
                    out.sids[o * depth..(o + 1) * depth]
                        .copy_from_slice(&self.codes[q * depth..(q + 1) * depth]);
                    slot += 1;
                }
            }
        }
        Ok(out)
    }
}
