//! Criterion benches of the trie (build, walk) and one constrained beam-search step.
//! `cargo bench -p sidkit-core --bench decode`

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sidkit_core::beam::BeamSearch;
use sidkit_core::trie::Trie;

fn sids(n: usize, sizes: &[usize]) -> (Vec<u16>, Vec<i64>) {
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
            codes[..400_000]
                .chunks(4)
                .map(|r| trie.walk(r))
                .sum::<u32>()
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

criterion_group!(benches, bench_decode);
criterion_main!(benches);
