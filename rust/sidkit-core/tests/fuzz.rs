//! Property-based fuzzing of trie build, navigation and beam search with arbitrary inputs:
//! nothing may panic, and whatever succeeds must be consistent.
//!
//! Long run (about 70 s on the CI machine, ~10k cases/s):
//! `PROPTEST_CASES=700000 cargo test --release -p sidkit-core --test fuzz`

use proptest::prelude::*;
use sidkit_core::beam::BeamSearch;
use sidkit_core::trie::{Trie, NONE};
use sidkit_core::Error;

fn table() -> impl Strategy<Value = (Vec<usize>, Vec<u16>, Vec<i64>)> {
    prop::collection::vec(1usize..6, 1..4).prop_flat_map(|sizes| {
        let levels = sizes.len();
        let row = sizes.iter().map(|&k| 0..(k as u16 + 1)).collect::<Vec<_>>(); // may exceed K
        (
            Just(sizes),
            prop::collection::vec(row, 0..40).prop_map(|rows| rows.concat()),
            prop::collection::vec(-5i64..60, 0..40),
        )
            .prop_map(move |(s, codes, mut ids)| {
                let n = codes.len() / levels;
                ids.resize(n, 0);
                (s, codes, ids)
            })
    })
}

fn logp() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -20.0f32..0.0,
        1 => Just(f32::NAN),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::INFINITY),
    ]
}

proptest! {
    #[test]
    fn trie_and_beam_search_never_panic(
        (sizes, codes, ids) in table(),
        dup in any::<bool>(),
        prefix in prop::collection::vec(0u16..8, 0..5),
        batch in 1usize..4,
        beam in 1usize..7,
        scores in prop::collection::vec(logp(), 0..400),
    ) {
        let Ok(trie) = Trie::new(&codes, &sizes, &ids, dup) else { return Ok(()); };
        let levels = sizes.len();
        // Every row walks to a leaf holding its item.
        for (row, id) in codes.chunks(levels).zip(&ids) {
            let v = trie.walk(row);
            prop_assert!(v != NONE);
            prop_assert!(trie.items_of(v).contains(id));
        }
        let v = trie.walk(&prefix);
        if v != NONE {
            prop_assert_eq!(trie.node_depth(v), Some(prefix.len()));
        }
        let mut search = BeamSearch::new(&trie, batch, beam).unwrap();
        let width = sizes.iter().copied().max().unwrap_or(1) + 1;
        let rows = batch * beam;
        let mut lp: Vec<f32> = scores.iter().copied().cycle().take(rows * width).collect();
        lp.resize(rows * width, -1.0);
        for t in 0..levels {
            if let Err(e) = search.step(&trie, &lp, width, 1) {
                // Only a +inf score the search reads is refused, and the state stays put.
                let named = matches!(e, Error::Value { arg: "logp", .. });
                prop_assert!(named);
                prop_assert!(lp.contains(&f32::INFINITY));
                prop_assert_eq!(search.step_index(), t);
                return Ok(());
            }
        }
        prop_assert!(search.step(&trie, &lp, width, 1).is_err());
        let out = search.finish(&trie, beam).unwrap();
        for (k, &item) in out.items.iter().enumerate() {
            if item >= 0 {
                let sid = &out.sids[k * levels..(k + 1) * levels];
                prop_assert!(trie.items_of(trie.walk(sid)).contains(&item));
            }
        }
    }
}
