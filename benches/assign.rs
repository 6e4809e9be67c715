//! Criterion benches of the RQ assignment kernel (greedy and beam) and decoding.
//! `cargo bench -p sidkit-core --bench assign`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use sidkit_core::{decode, encode, Codebooks};

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn bench_assign(c: &mut Criterion) {
    let (levels, k) = (3, 256);
    let mut group = c.benchmark_group("rq_encode");
    group.sample_size(10);
    for &(n, d, beam) in &[(65_536, 128, 1), (16_384, 768, 1), (16_384, 128, 5)] {
        let x = data(n, d, 1);
        let cb = Codebooks::new(data(levels * k, d, 2), &[k; 3], d).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("D{d}_beam{beam}"), n),
            &x,
            |b, x| b.iter(|| encode(&cb, x, beam).unwrap()),
        );
    }
    group.finish();

    let d = 128;
    let cb = Codebooks::new(data(levels * k, d, 2), &[k; 3], d).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let codes: Vec<u16> = (0..65_536 * levels)
        .map(|_| rng.random_range(0..k as u16))
        .collect();
    c.bench_function("rq_decode/D128/65536", |b| {
        b.iter(|| decode(&cb, &codes).unwrap())
    });
}

criterion_group!(benches, bench_assign);
criterion_main!(benches);
