//! Trie and constrained beam search against brute-force references.

use rand::{rngs::StdRng, Rng, SeedableRng};
use sidkit_core::beam::BeamSearch;
use sidkit_core::trie::{Trie, NONE};
use sidkit_core::Error;
use std::collections::BTreeMap;

fn random_table(rng: &mut StdRng, n: usize, sizes: &[usize]) -> (Vec<u16>, Vec<i64>) {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let row: Vec<u16> = sizes
            .iter()
            .map(|&k| rng.random_range(0..k) as u16)
            .collect();
        let id = 1000 + seen.len() as i64 * 7;
        seen.entry(row).or_insert(id);
    }
    let mut codes = Vec::new();
    let mut ids = Vec::new();
    // Shuffle the row order so the builder has to sort.
    let mut rows: Vec<_> = seen.into_iter().collect();
    for i in (1..rows.len()).rev() {
        rows.swap(i, rng.random_range(0..=i));
    }
    for (row, id) in rows {
        codes.extend(row);
        ids.push(id);
    }
    (codes, ids)
}

#[test]
fn walk_child_lookup_match_a_set() {
    let mut rng = StdRng::seed_from_u64(1);
    let sizes = [5, 3, 7];
    let (codes, ids) = random_table(&mut rng, 60, &sizes);
    let trie = Trie::new(&codes, &sizes, &ids, false).unwrap();
    assert_eq!((trie.depth(), trie.leaves(), trie.num_items()), (3, 60, 60));
    let table: BTreeMap<Vec<u16>, i64> = codes
        .chunks(3)
        .map(|r| r.to_vec())
        .zip(ids.iter().copied())
        .collect();
    for a in 0..5u16 {
        for b in 0..3u16 {
            for c in 0..7u16 {
                let v = trie.walk(&[a, b, c]);
                match table.get(&vec![a, b, c]) {
                    Some(&id) => assert_eq!(trie.items_of(v), &[id]),
                    None => assert_eq!(v, NONE),
                }
            }
            // A 2-prefix is a node exactly when some SID starts with it.
            let has = table.keys().any(|k| k[0] == a && k[1] == b);
            assert_eq!(trie.walk(&[a, b]) != NONE, has);
            if has {
                let v = trie.walk(&[a, b]);
                let kids: Vec<u16> = trie.codes_of(trie.children(v)).to_vec();
                let want: Vec<u16> = table
                    .keys()
                    .filter(|k| k[0] == a && k[1] == b)
                    .map(|k| k[2])
                    .collect();
                assert_eq!(kids, want);
                assert_eq!(trie.node_depth(v), Some(2));
            }
        }
    }
    assert_eq!(trie.walk(&[]), 0);
    assert_eq!(trie.child(NONE - 1, 0), NONE);
}

#[test]
fn duplicates_need_permission() {
    let codes = [1u16, 2, 1, 2, 0, 0];
    assert!(matches!(
        Trie::new(&codes, &[3, 3], &[5, 6, 7], false),
        Err(Error::Value { arg: "codes", .. })
    ));
    let trie = Trie::new(&codes, &[3, 3], &[6, 5, 7], true).unwrap();
    assert_eq!(trie.leaves(), 2);
    assert_eq!(trie.items_of(trie.walk(&[1, 2])), &[5, 6]);
    // Leaves in SID order, [0, 0] then [1, 2], each with its items in id order.
    let (offsets, items) = trie.leaf_items();
    assert_eq!((offsets, items), (&[0u32, 1, 3][..], &[7i64, 5, 6][..]));
}

/// Score of every valid SID under per-level log-probs that depend on the prefix (a hash),
/// like a real model's.
fn logp_of(seed: u64, prefix: &[u16], code: u16) -> f32 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for &c in prefix.iter().chain(std::iter::once(&code)) {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01B3);
        h ^= h >> 29;
    }
    -((h % 10_000) as f32) / 1000.0
}

#[test]
fn beam_search_is_exact_when_wide_and_valid_always() {
    let mut rng = StdRng::seed_from_u64(2);
    let sizes = [4usize, 6, 5];
    for trial in 0..20 {
        let n = rng.random_range(1..80);
        let (codes, ids) = random_table(&mut rng, n, &sizes);
        let trie = Trie::new(&codes, &sizes, &ids, false).unwrap();
        let (batch, width) = (3, 8);
        for beam in [1, 3, n] {
            let mut search = BeamSearch::new(&trie, batch, beam).unwrap();
            for (t, &k) in sizes.iter().enumerate() {
                let rows = batch * beam;
                let mut logp = vec![f32::NEG_INFINITY; rows * width];
                for q in 0..rows {
                    let prefix = &search.codes()[q * 3..q * 3 + t];
                    for c in 0..k as u16 {
                        logp[q * width + 1 + c as usize] =
                            logp_of((q / beam) as u64 * 31 + trial, prefix, c);
                    }
                }
                search.step(&trie, &logp, width, 1).unwrap();
            }
            let out = search.finish(&trie, 5).unwrap();
            for b in 0..batch {
                let seed = b as u64 * 31 + trial;
                // Exhaustive reference: every valid SID scored, best first, ties → SID order.
                let mut all: Vec<(f32, Vec<u16>, i64)> = codes
                    .chunks(3)
                    .zip(&ids)
                    .map(|(r, &id)| {
                        let s = (0..3).map(|t| logp_of(seed, &r[..t], r[t])).sum::<f32>();
                        (s, r.to_vec(), id)
                    })
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for slot in 0..5 {
                    let o = b * 5 + slot;
                    let item = out.items[o];
                    if item == -1 {
                        // Padding only once the beams (or the valid SIDs) run out.
                        assert!(
                            slot >= beam.min(all.len()),
                            "slot {slot} empty with beam {beam}"
                        );
                        assert_eq!(out.scores[o], f32::NEG_INFINITY);
                        continue;
                    }
                    // Every returned SID is a valid one, with its item and true score.
                    let sid = &out.sids[o * 3..o * 3 + 3];
                    let Some((s, _, id)) = all.iter().find(|e| e.1 == sid) else {
                        panic!(
                            "invalid SID {sid:?} item {item} slot {slot} beam {beam} n {n} node {}",
                            trie.walk(sid)
                        );
                    };
                    assert_eq!(*id, item);
                    assert!((s - out.scores[o]).abs() < 1e-4);
                    if beam >= n {
                        assert!(
                            (all[slot].0 - out.scores[o]).abs() < 1e-4,
                            "beam {beam} not exact"
                        );
                    }
                }
                // No SID twice.
                let mut got: Vec<i64> = out.items[b * 5..b * 5 + 5]
                    .iter()
                    .copied()
                    .filter(|&i| i >= 0)
                    .collect();
                got.sort();
                got.dedup();
                assert_eq!(
                    got.len(),
                    out.items[b * 5..b * 5 + 5]
                        .iter()
                        .filter(|&&i| i >= 0)
                        .count()
                );
            }
        }
    }
}

#[test]
fn beam_search_bad_calls_are_errors() {
    let trie = Trie::new(&[0u16, 1, 1, 0], &[2, 2], &[1, 2], false).unwrap();
    assert!(BeamSearch::new(&trie, 1, 0).is_err());
    let mut s = BeamSearch::new(&trie, 2, 2).unwrap();
    assert!(matches!(
        s.step(&trie, &[0.0; 7], 2, 0),
        Err(Error::Shape { arg: "logp", .. })
    ));
    assert!(matches!(
        s.step(&trie, &[0.0; 4], 1, 0),
        Err(Error::Shape { arg: "logp", .. })
    ));
    assert!(matches!(
        s.finish(&trie, 2),
        Err(Error::Value { arg: "finish", .. })
    ));
    // +inf (given, or a finite sum that overflows) would rank beams by index: refused, and
    // the search stays where it was. A +inf on a code that is no child is never read.
    let mut inf = [0.0f32; 8];
    inf[4] = f32::INFINITY; // row 2: batch row 1's live beam
    assert!(matches!(
        s.step(&trie, &inf, 2, 0),
        Err(Error::Value { arg: "logp", .. })
    ));
    assert_eq!(s.step_index(), 0);
    let one = Trie::new(&[0u16, 0, 0, 1], &[2, 2], &[1, 2], false).unwrap();
    let mut probe = BeamSearch::new(&one, 1, 2).unwrap();
    probe
        .step(&one, &[0.0, f32::INFINITY, 0.0, 0.0], 2, 0)
        .unwrap(); // code 1: no SID
    probe.step(&one, &[f32::MAX; 4], 2, 0).unwrap(); // one level of f32::MAX still fits
    let mut sum = BeamSearch::new(&trie, 1, 1).unwrap();
    sum.step(&trie, &[f32::MAX; 2], 2, 0).unwrap();
    assert!(matches!(
        sum.step(&trie, &[f32::MAX; 2], 2, 0),
        Err(Error::Value { arg: "logp", .. })
    ));
    // Two finite levels whose sum overflows downward: refused too, not a silently dead beam.
    let mut low = BeamSearch::new(&trie, 1, 1).unwrap();
    low.step(&trie, &[f32::MIN; 2], 2, 0).unwrap();
    assert!(matches!(
        low.step(&trie, &[f32::MIN; 2], 2, 0),
        Err(Error::Value { arg: "logp", .. })
    ));
    assert_eq!(low.step_index(), 1);
    s.step(&trie, &[f32::NAN; 8], 2, 0).unwrap(); // NaN = -inf: nothing valid survives
    assert!(s.nodes().iter().all(|&v| v == NONE));
    s.step(&trie, &[0.0; 8], 2, 0).unwrap();
    assert!(matches!(
        s.step(&trie, &[0.0; 8], 2, 0),
        Err(Error::Value { arg: "step", .. })
    ));
    assert_eq!(s.finish(&trie, 2).unwrap().items, vec![-1; 4]);
}

#[test]
fn sizes_from_the_caller_are_errors_not_aborts() {
    let trie = Trie::new(&[0u16, 1, 1, 0], &[2, 2], &[1, 2], false).unwrap();
    // batch * beam overflows, or leaves no u32 beam index: named errors before any allocation.
    for (batch, beam) in [
        (1usize << 32, 1usize << 32),
        (usize::MAX, 2),
        (1 << 16, 1 << 16),
    ] {
        assert!(matches!(
            BeamSearch::new(&trie, batch, beam),
            Err(Error::Value {
                arg: "beam_width",
                ..
            })
        ));
    }
    let mut s = BeamSearch::new(&trie, 2, 2).unwrap();
    s.step(&trie, &[0.0; 8], 2, 0).unwrap();
    s.step(&trie, &[0.0; 8], 2, 0).unwrap();
    for top_k in [0, usize::MAX, 1 << 62] {
        assert!(
            matches!(
                s.finish(&trie, top_k),
                Err(Error::Value { arg: "top_k", .. })
            ),
            "{top_k}"
        );
    }
    assert_eq!(s.finish(&trie, 3).unwrap().items.len(), 6);
    // Level sizes: codes are u16, so 1 <= K <= 65,536.
    for sizes in [[0usize, 2], [65_537, 2], [1 << 40, 2]] {
        assert!(matches!(
            Trie::new(&[0u16, 1], &sizes, &[1], false),
            Err(Error::Value { arg: "sizes", .. })
        ));
    }
    assert!(Trie::new(&[65_535u16, 1], &[65_536, 2], &[1], false).is_ok());
}

/// One step's new beams by the definition: every (live beam, child) pair scored, sorted by
/// score (best first), then parent beam, then code; the first `beam` per batch row.
fn step_by_full_sort(
    trie: &Trie,
    search: &BeamSearch,
    logp: &[f32],
    width: usize,
    batch: usize,
    beam: usize,
) -> Vec<Vec<(f32, u32, u16)>> {
    (0..batch)
        .map(|b| {
            let mut all = Vec::new();
            for p in b * beam..(b + 1) * beam {
                let v = search.nodes()[p];
                if v == NONE {
                    continue;
                }
                let kids = trie.children(v);
                for &c in trie.codes_of(kids) {
                    let s = search.scores()[p] + logp[p * width + c as usize];
                    if s > f32::NEG_INFINITY {
                        all.push((s, p as u32, c));
                    }
                }
            }
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            all.truncate(beam);
            all
        })
        .collect()
}

#[test]
fn each_step_keeps_exactly_the_full_sorts_best_beams_ties_and_nans_included() {
    // Wide levels (many more candidates than the step's bounded buffer of 4 x beam) and
    // log-probs drawn from a few values, so ties decide many places; some NaN and -inf.
    let mut rng = StdRng::seed_from_u64(9);
    let sizes = [40usize, 30, 20];
    for trial in 0..12 {
        let n = rng.random_range(50..600);
        let (codes, ids) = random_table(&mut rng, n, &sizes);
        let trie = Trie::new(&codes, &sizes, &ids, false).unwrap();
        let batch = 3;
        for beam in [1usize, 2, 5, 20] {
            let mut search = BeamSearch::new(&trie, batch, beam).unwrap();
            for &k in &sizes {
                let width = k;
                let logp: Vec<f32> = (0..batch * beam * width)
                    .map(|_| match rng.random_range(0..20) {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => -((v % 4) as f32) * 0.5,
                    })
                    .collect();
                let want = step_by_full_sort(&trie, &search, &logp, width, batch, beam);
                let before_codes = search.codes().to_vec();
                let depth = sizes.len();
                search.step(&trie, &logp, width, 0).unwrap();
                let t = search.step_index();
                for (b, picks) in want.iter().enumerate() {
                    for slot in 0..beam {
                        let q = b * beam + slot;
                        match picks.get(slot) {
                            Some(&(s, p, c)) => {
                                let ctx =
                                    format!("trial {trial} beam {beam} level {t} slot {slot}");
                                assert_eq!(search.parents()[q], p, "{ctx}");
                                assert_eq!(search.codes()[q * depth + t - 1], c, "{ctx}");
                                assert_eq!(search.scores()[q].to_bits(), s.to_bits(), "{ctx}");
                                let p = p as usize;
                                assert_eq!(
                                    search.codes()[q * depth..q * depth + t - 1],
                                    before_codes[p * depth..p * depth + t - 1]
                                );
                            }
                            None => assert_eq!(search.nodes()[q], NONE),
                        }
                    }
                }
            }
        }
    }
}
