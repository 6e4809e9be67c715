//! RQ assignment checked against brute-force f64 references written independently here.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use sidkit_core::{decode, encode, Codebooks, Error};

fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// Points around a few centres, so near-ties and large residual norms both occur.
fn clustered(rng: &mut StdRng, n: usize, d: usize, centres: usize, scale: f32) -> Vec<f32> {
    let c = normal(rng, centres * d);
    (0..n)
        .flat_map(|_| {
            let k = rng.random_range(0..centres);
            let c = c[k * d..(k + 1) * d].to_vec();
            c.into_iter()
                .map(|v| scale * v + 0.05 * rng.sample::<f32, _>(StandardNormal))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn d2(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, &y)| (x - y as f64).powi(2)).sum()
}

/// Greedy RQ in f64 by scanning every codeword.
fn greedy_ref(cb: &Codebooks, x: &[f32]) -> Vec<Vec<(usize, f64)>> {
    let d = cb.dim();
    x.chunks(d)
        .map(|row| {
            let mut r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            (0..cb.levels())
                .map(|l| {
                    let dists: Vec<f64> = (0..cb.sizes()[l])
                        .map(|j| d2(&r, cb.codeword(l, j)))
                        .collect();
                    let (j, &best) = dists
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.total_cmp(b.1))
                        .unwrap();
                    r.iter_mut()
                        .zip(cb.codeword(l, j))
                        .for_each(|(a, &c)| *a -= c as f64);
                    (j, best)
                })
                .collect()
        })
        .collect()
}

fn residual_after(cb: &Codebooks, x: &[f32], codes: &[u16]) -> f64 {
    let mut r: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (l, &c) in codes.iter().enumerate() {
        r.iter_mut()
            .zip(cb.codeword(l, c as usize))
            .for_each(|(a, &c)| *a -= c as f64);
    }
    r.iter().map(|v| v * v).sum()
}

#[test]
fn greedy_matches_brute_force() {
    let mut rng = StdRng::seed_from_u64(7);
    for &d in &[3usize, 64, 768] {
        for &k in &[1usize, 7, 256] {
            for data in 0..2 {
                let n = 301;
                let x = if data == 0 {
                    normal(&mut rng, n * d)
                } else {
                    clustered(&mut rng, n, d, 5, 3.0)
                };
                let cbv = if data == 0 {
                    normal(&mut rng, 3 * k * d)
                } else {
                    clustered(&mut rng, 3 * k, d, 5, 1.0)
                };
                let cb = Codebooks::new(cbv, &[k, k, k], d).unwrap();
                let enc = encode(&cb, &x, 1).unwrap();
                let reference = greedy_ref(&cb, &x);
                for (i, refs) in reference.iter().enumerate() {
                    let (j, dist) = refs[0];
                    let got = enc.codes[i * 3] as usize;
                    if got != j {
                        // Only a float32 tie may differ: same exact distance up to rounding.
                        let r: Vec<f64> = x[i * d..(i + 1) * d].iter().map(|&v| v as f64).collect();
                        let alt = d2(&r, cb.codeword(0, got));
                        assert!(
                            (alt - dist).abs() <= 1e-5 * (dist + 1.0),
                            "d={d} k={k} row {i}: {got} vs {j}"
                        );
                    }
                    // The reported error is the exact residual of the chosen codes.
                    let exact =
                        residual_after(&cb, &x[i * d..(i + 1) * d], &enc.codes[i * 3..i * 3 + 3]);
                    let e = enc.errors[i * 3 + 2] as f64;
                    assert!(
                        (e - exact).abs() <= 1e-4 * (exact + 1e-3),
                        "error {e} vs {exact}"
                    );
                }
            }
        }
    }
}

/// Inputs so small that their products underflow into f32's subnormal range: the rounding
/// window's absolute term keeps greedy exact and beam never worse than greedy.
#[test]
fn tiny_magnitudes_keep_the_exact_nearest() {
    let mut rng = StdRng::seed_from_u64(5);
    let (d, k, n) = (64, 64, 300);
    for scale in [1e-21f32, 1e-22, 1e-23] {
        let x: Vec<f32> = normal(&mut rng, n * d).iter().map(|v| v * scale).collect();
        let cbv: Vec<f32> = normal(&mut rng, 2 * k * d)
            .iter()
            .map(|v| v * scale)
            .collect();
        let cb = Codebooks::new(cbv, &[k, k], d).unwrap();
        let greedy = encode(&cb, &x, 1).unwrap();
        let beam = encode(&cb, &x, 4).unwrap();
        for (i, refs) in greedy_ref(&cb, &x).iter().enumerate() {
            let r: Vec<f64> = x[i * d..(i + 1) * d].iter().map(|&v| v as f64).collect();
            let got = d2(&r, cb.codeword(0, greedy.codes[i * 2] as usize));
            assert!(
                got <= refs[0].1,
                "scale {scale} row {i}: {got} > nearest {}",
                refs[0].1
            );
            let row = &x[i * d..(i + 1) * d];
            let b = residual_after(&cb, row, &beam.codes[i * 2..i * 2 + 2]);
            let g = residual_after(&cb, row, &greedy.codes[i * 2..i * 2 + 2]);
            assert!(
                b <= g * (1.0 + 1e-6),
                "scale {scale} row {i}: beam {b} > greedy {g}"
            );
        }
    }
}

#[test]
fn beam_never_worse_than_greedy_and_exhaustive_when_wide() {
    let mut rng = StdRng::seed_from_u64(11);
    let (d, k, n) = (8, 4, 257);
    let x = normal(&mut rng, n * d);
    let cb = Codebooks::new(normal(&mut rng, 3 * k * d), &[k, k, k], d).unwrap();
    let greedy = encode(&cb, &x, 1).unwrap();
    for beam in [2, 3, 5, 16] {
        let enc = encode(&cb, &x, beam).unwrap();
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let b = residual_after(&cb, row, &enc.codes[i * 3..i * 3 + 3]);
            let g = residual_after(&cb, row, &greedy.codes[i * 3..i * 3 + 3]);
            assert!(
                b <= g * (1.0 + 1e-6) + 1e-9,
                "beam {beam} row {i}: {b} > greedy {g}"
            );
            if beam >= k * k {
                let best = (0..k * k * k)
                    .map(|c| {
                        let codes = [(c / (k * k)) as u16, ((c / k) % k) as u16, (c % k) as u16];
                        residual_after(&cb, row, &codes)
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    b <= best * (1.0 + 1e-6) + 1e-9,
                    "row {i}: beam {b} vs exhaustive {best}"
                );
            }
        }
    }
}

#[test]
fn ragged_levels_and_decode() {
    let mut rng = StdRng::seed_from_u64(3);
    let d = 16;
    let sizes = [5usize, 3, 9];
    let cb = Codebooks::new(normal(&mut rng, 17 * d), &sizes, d).unwrap();
    let x = normal(&mut rng, 50 * d);
    let enc = encode(&cb, &x, 4).unwrap();
    for (i, row) in enc.codes.chunks(3).enumerate() {
        for (l, &c) in row.iter().enumerate() {
            assert!((c as usize) < sizes[l], "row {i}");
        }
    }
    let recon = decode(&cb, &enc.codes).unwrap();
    for i in 0..50 {
        let mut want = vec![0.0f32; d];
        for l in 0..3 {
            let w = cb.codeword(l, enc.codes[i * 3 + l] as usize);
            want.iter_mut().zip(w).for_each(|(a, &b)| *a += b);
        }
        assert_eq!(&recon[i * d..(i + 1) * d], &want[..]);
        // errors[L-1] is ||x - decode(codes)||².
        let e: f64 = x[i * d..(i + 1) * d]
            .iter()
            .zip(&want)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum();
        assert!((enc.errors[i * 3 + 2] as f64 - e).abs() <= 1e-4 * (e + 1e-3));
    }
}

#[test]
fn identical_for_any_thread_count() {
    let mut rng = StdRng::seed_from_u64(5);
    let (d, k, n) = (32, 64, 2049);
    let x = clustered(&mut rng, n, d, 9, 2.0);
    let cb = Codebooks::new(normal(&mut rng, 3 * k * d), &[k, k, k], d).unwrap();
    for beam in [1, 5] {
        let runs: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(|| encode(&cb, &x, beam).unwrap())
            })
            .collect();
        assert_eq!(runs[0], runs[1]);
        assert_eq!(runs[0], runs[2]);
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let cb = Codebooks::new(vec![0.0; 2 * 3 * 4], &[3, 3], 4).unwrap();
    assert!(matches!(
        encode(&cb, &[0.0; 7], 1),
        Err(Error::Shape { arg: "x", .. })
    ));
    assert!(matches!(
        encode(&cb, &[0.0; 8], 0),
        Err(Error::Value { arg: "beam", .. })
    ));
    let mut x = vec![0.0; 8];
    x[5] = f32::NAN;
    assert_eq!(
        encode(&cb, &x, 1),
        Err(Error::NonFinite {
            arg: "x",
            what: "NaN",
            index: 5
        })
    );
    x[5] = f32::INFINITY;
    assert!(matches!(
        encode(&cb, &x, 1),
        Err(Error::NonFinite { what: "inf", .. })
    ));
    assert_eq!(encode(&cb, &[], 1).unwrap().codes.len(), 0);
    assert!(matches!(
        Codebooks::new(vec![], &[], 4),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Codebooks::new(vec![], &[0], 4),
        Err(Error::Value { .. })
    ));
    assert!(matches!(
        Codebooks::new(vec![0.0; 5], &[1], 4),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Codebooks::new(vec![f32::NAN; 4], &[1], 4),
        Err(Error::NonFinite {
            arg: "codebooks",
            ..
        })
    ));
    assert!(matches!(
        decode(&cb, &[0u16, 3]),
        Err(Error::Value { arg: "codes", .. })
    ));
    assert!(matches!(
        decode(&cb, &[0i64, -1]),
        Err(Error::Value { arg: "codes", .. })
    ));
    assert!(matches!(
        decode(&cb, &[0u16, 1, 2]),
        Err(Error::Shape { arg: "codes", .. })
    ));
}
