//! Criterion benches of the trie (build, walk) and one constrained beam-search step.
//! `cargo bench -p sidkit-core --bench decode`

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sidkit_core::beam::BeamSearch;
use sidkit_core::trie::Trie;

/// `n` distinct uniform SIDs in random order (deduplicated, then shuffled before the cut, so
/// every first-level code keeps its share; truncating the sorted rows would keep only the
/// smallest).
fn sids(n: usize, sizes: &[usize]) -> (Vec<u16>, Vec<i64>) {
    use rand::seq::SliceRandom;
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows: Vec<Vec<u16>> = (0..n * 11 / 10)
        .map(|_| {
            sizes
                .iter()
                .map(|&k| rng.random_range(0..k) as u16)
                .collect()
        })
        .collect();
    rows.sort();
    rows.dedup();
    rows.shuffle(&mut rng);
    rows.truncate(n);
    let ids = (0..rows.len() as i64).collect();
    (rows.concat(), ids)
}

fn bench_decode(c: &mut Criterion) {
    let sizes = [256, 256, 256, 16];
    let (codes, ids) = sids(1_000_000, &sizes);
    let mut g = c.benchmark_group("trie");
    g.sample_size(10);
    g.bench_function("build/1M", |b| {
        b.iter(|| Trie::new(&codes, &sizes, &ids, false).unwrap())
    });
    let trie = Trie::new(&codes, &sizes, &ids, false).unwrap();
    g.bench_function("walk/100k_full_sids", |b| {
        b.iter(|| {
            codes[..400_000] // 100k SIDs in random order (not cache-friendly sorted ones)
                .chunks(4)
                .map(|r| u64::from(trie.walk(r)))
                .sum::<u64>()
        })
    });
    g.finish();

    let (batch, beam) = (256, 20);
    let mut rng = StdRng::seed_from_u64(1);
    let lp: Vec<f32> = (0..batch * beam * 256)
        .map(|_| -rng.random::<f32>() * 10.0)
        .collect();
    c.bench_function("beam_step/B256_beam20_K256", |b| {
        b.iter_batched(
            || {
                let mut s = BeamSearch::new(&trie, batch, beam).unwrap();
                s.step(&trie, &lp, 256, 0).unwrap();
                s
            },
            |mut s| s.step(&trie, &lp, 256, 0).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
}

/// One step at the same depth, same SIDs (1M of 256 x 256 x 256 x 16, codes as tokens, V = 256),
/// B = 256, beam 20, against `constraint-decoding-trie` (STATIC's dense first levels + CSR).
/// Its step takes raw f64 logits and includes a log-softmax (benched alone as well); sidkit's
/// takes f32 log-probs. The two start from different states (it puts all beams at the root,
/// sidkit one live beam per row), so their picks are not compared; at the levels timed both
/// score 20 live beams' children per row.
fn bench_vs_static(c: &mut Criterion) {
    use constraint_decoding_trie::decoder::{log_softmax_3d, ConstrainedDecoder};
    use constraint_decoding_trie::transition::build_static_index;
    use constraint_decoding_trie::types::BeamState;

    let sizes = [256, 256, 256, 16];
    let (codes, ids) = sids(1_000_000, &sizes);
    let trie = Trie::new(&codes, &sizes, &ids, false).unwrap();
    let rows: Vec<Vec<u32>> = codes
        .chunks(4)
        .map(|r| r.iter().map(|&c| c as u32).collect())
        .collect();
    let index = build_static_index(&rows, 256, 4, 2);
    let (batch, beam, vocab) = (256, 20, 256);
    let dec = ConstrainedDecoder::new(index, beam, batch);
    let mut rng = StdRng::seed_from_u64(2);
    let lp: Vec<f32> = (0..batch * beam * vocab)
        .map(|_| -rng.random::<f32>() * 10.0)
        .collect();
    let logits: Vec<Vec<Vec<f64>>> = lp
        .chunks(beam * vocab)
        .map(|q| {
            q.chunks(vocab)
                .map(|v| v.iter().map(|&x| x as f64).collect())
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("step_vs_constraint_decoding_trie");
    g.sample_size(10);
    for level in [1usize, 2] {
        g.bench_function(format!("sidkit/level{level}"), |b| {
            b.iter_batched(
                || {
                    let mut s = BeamSearch::new(&trie, batch, beam).unwrap();
                    for _ in 0..level {
                        s.step(&trie, &lp, vocab, 0).unwrap();
                    }
                    s
                },
                |mut s| s.step(&trie, &lp, vocab, 0).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
        g.bench_function(format!("constraint_decoding_trie/level{level}"), |b| {
            b.iter_batched(
                || {
                    let mut st = BeamState::new(batch, beam);
                    for t in 0..level {
                        dec.step(&logits, &mut st, t);
                    }
                    st
                },
                |mut st| dec.step(&logits, &mut st, level),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("constraint_decoding_trie/log_softmax_only", |b| {
        b.iter(|| log_softmax_3d(&logits))
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_vs_static);
criterion_main!(benches);
