//! Criterion benches of the RQ assignment kernel (greedy and beam) and decoding.
//! `cargo bench -p sidkit-core --bench assign`
//! Greedy assignment runs beside its peer, the per-item scalar loop (`D*_naive_peer`):
//! read the ratio of the two within one run.

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

/// The peer: greedy residual assignment as it is usually written, one item at a time, the
/// exact squared distance to every codeword of a level, then subtract the nearest (no
/// blocking, no norms trick, no threads).
fn naive_greedy(cb: &[f32], sizes: &[usize], d: usize, x: &[f32]) -> Vec<u16> {
    let mut out = Vec::with_capacity(x.len() / d * sizes.len());
    let mut r = vec![0f32; d];
    for row in x.chunks_exact(d) {
        r.copy_from_slice(row);
        let mut base = 0;
        for &k in sizes {
            let (mut best, mut best_d) = (0usize, f32::INFINITY);
            for j in 0..k {
                let c = &cb[(base + j) * d..(base + j + 1) * d];
                let dist: f32 = r.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                if dist < best_d {
                    (best, best_d) = (j, dist);
                }
            }
            let c = &cb[(base + best) * d..(base + best + 1) * d];
            r.iter_mut().zip(c).for_each(|(a, b)| *a -= b);
            out.push(best as u16);
            base += k;
        }
    }
    out
}

fn bench_assign(c: &mut Criterion) {
    let (levels, k) = (3, 256);
    let mut group = c.benchmark_group("rq_encode");
    group.sample_size(10);
    for &(n, d, beam) in &[(65_536, 128, 1), (16_384, 768, 1), (16_384, 128, 5)] {
        let x = data(n, d, 1);
        let cb_data = data(levels * k, d, 2);
        let cb = Codebooks::new(cb_data.clone(), &[k; 3], d).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("D{d}_beam{beam}"), n),
            &x,
            |b, x| b.iter(|| encode(&cb, x, beam).unwrap()),
        );
        if beam == 1 {
            // The peer on the same input, after checking it assigns the same codes (ties
            // aside: the two sum in different orders, so a near-tie may break differently).
            let ours = encode(&cb, &x, 1).unwrap().codes;
            let theirs = naive_greedy(&cb_data, &[k; 3], d, &x);
            let same = ours
                .chunks_exact(levels)
                .zip(theirs.chunks_exact(levels))
                .filter(|(a, b)| a == b)
                .count();
            assert!(
                same * 1000 >= n * 999,
                "the peer agrees on only {same} of {n} rows"
            );
            group.bench_with_input(
                BenchmarkId::new(format!("D{d}_naive_peer"), n),
                &x,
                |b, x| b.iter(|| naive_greedy(&cb_data, &[k; 3], d, x)),
            );
        }
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
