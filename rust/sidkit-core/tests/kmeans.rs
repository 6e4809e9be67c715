//! k-means kernels against plain loops and hand-worked cases.

use rand::{Rng, SeedableRng};
use sidkit_core::kmeans::{centroid_means, kmeans_pp, subtract_centroids};
use sidkit_core::Error;

#[test]
fn centroid_means_match_a_plain_loop() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (n, d, k) = (1000, 13, 9);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-3.0..3.0)).collect();
    // Label 8 is never used: its row must stay zero with count 0.
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..8)).collect();
    let (means, counts) = centroid_means(&x, d, &labels, k).unwrap();
    for j in 0..k {
        let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == j as u32).collect();
        assert_eq!(counts[j], rows.len() as u64);
        for c in 0..d {
            let want = if rows.is_empty() {
                0.0
            } else {
                rows.iter().map(|&i| x[i * d + c] as f64).sum::<f64>() / rows.len() as f64
            };
            assert!((means[j * d + c] as f64 - want).abs() < 1e-5, "{j} {c}");
        }
    }
}

#[test]
fn centroid_means_reject_bad_input() {
    let x = [0.0f32; 6];
    assert!(matches!(
        centroid_means(&x, 2, &[0, 1], 2),
        Err(Error::Shape { arg: "labels", .. })
    ));
    assert!(matches!(
        centroid_means(&x, 2, &[0, 1, 2], 2),
        Err(Error::Value { arg: "labels", .. })
    ));
    assert!(matches!(
        centroid_means(&x, 2, &[0, 0, 0], 0),
        Err(Error::Value { arg: "k", .. })
    ));
    let nan = [0.0f32, f32::NAN];
    assert!(centroid_means(&nan, 2, &[0], 1).is_err());
}

/// The finite check rides on the accumulation (non-finite sums, the largest |v| per lane):
/// every kind of bad value, in any lane, row or cluster (also one that cancels in the sum,
/// inf and -inf), is reported at the index a scalar scan finds first.
#[test]
fn centroid_means_name_the_first_bad_value() {
    let (n, d, k) = (40, 37, 5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 2e15, -1.5e15] {
        for at in [0, 15, 16, 36, d + 3, 17 * d + 20, n * d - 1] {
            let mut y = x.clone();
            y[at] = bad;
            // A second bad value later, in another cluster's row: the first is named.
            y[n * d - 2] = f32::INFINITY;
            if at == n * d - 1 {
                y[n * d - 2] = x[n * d - 2];
            }
            match centroid_means(&y, d, &labels, k) {
                Err(Error::NonFinite {
                    arg: "x", index, ..
                }) => assert_eq!(index, at),
                other => panic!("{bad} at {at}: {other:?}"),
            }
        }
    }
    // inf and -inf in one cluster's column sum to NaN, not to a finite value.
    let mut y = x.clone();
    let (a, b) = {
        let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == 2).collect();
        (rows[0], rows[1])
    };
    y[a * d + 4] = f32::INFINITY;
    y[b * d + 4] = f32::NEG_INFINITY;
    assert!(matches!(
        centroid_means(&y, d, &labels, k),
        Err(Error::NonFinite { index, .. }) if index == a * d + 4
    ));
    // 1e15 itself is allowed.
    let mut y = x.clone();
    y[7] = 1e15;
    assert!(centroid_means(&y, d, &labels, k).is_ok());
}

#[test]
fn kmeans_pp_picks_distinct_points_and_follows_the_draws() {
    // Points 0 and 1 coincide; 2 and 3 are far apart. After choosing point 0, the D² weights
    // are (0, 0, 1, 100) / 101: a draw of 0.5 lands on point 3, 0.001 on point 2.
    let x = [0.0f32, 0.0, 1.0, 10.0];
    let pick = kmeans_pp(&x, 1, 2, 1, &[0.0, 0.5]).unwrap();
    assert_eq!(pick, vec![0, 3]);
    let pick = kmeans_pp(&x, 1, 2, 1, &[0.0, 0.001]).unwrap();
    assert_eq!(pick, vec![0, 2]);
    // Never a zero-weight point while a positive one remains.
    let pick = kmeans_pp(&x, 1, 4, 1, &[0.0, 0.5, 0.5, 0.5]).unwrap();
    let mut sorted = pick.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{pick:?}");
}

#[test]
fn kmeans_pp_handles_constant_data_and_bad_input() {
    let x = [1.0f32; 8];
    assert_eq!(kmeans_pp(&x, 2, 3, 1, &[0.0, 0.3, 0.9]).unwrap().len(), 3);
    assert!(kmeans_pp(&x, 2, 5, 1, &[0.0; 5]).is_err());
    assert!(kmeans_pp(&x, 2, 2, 1, &[0.0]).is_err());
    assert!(kmeans_pp(&x, 2, 2, 1, &[0.0, 1.0]).is_err());
}

#[test]
fn greedy_kmeans_pp_keeps_the_candidate_with_the_lowest_potential() {
    // 1-D points 0, 1, 2, 10. First centre: point 0. Two candidates per step: draw 0.5 lands
    // on point 3 (weights 1, 4, 100 of 105), draw 0.001 on point 1. Point 3 leaves potential
    // 1 + 4 = 5, point 1 leaves 0 + 1 + 81 = 82: point 3 wins whichever is drawn first.
    let x = [0.0f32, 1.0, 2.0, 10.0];
    assert_eq!(
        kmeans_pp(&x, 1, 2, 2, &[0.0, 0.001, 0.5]).unwrap(),
        vec![0, 3]
    );
    assert_eq!(
        kmeans_pp(&x, 1, 2, 2, &[0.0, 0.5, 0.001]).unwrap(),
        vec![0, 3]
    );
    // Random points: k distinct rows; trials 0 or too few draws are errors.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (n, d, k) = (500, 4, 12);
    let pts: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let u: Vec<f64> = (0..1 + (k - 1) * 5)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut pick = kmeans_pp(&pts, d, k, 5, &u).unwrap();
    pick.sort();
    pick.dedup();
    assert_eq!(pick.len(), k);
    assert!(kmeans_pp(&pts, d, k, 0, &u).is_err());
    assert!(kmeans_pp(&pts, d, k, 6, &u).is_err());
}

#[test]
fn bounded_assignment_equals_a_full_search_through_lloyd_iterations() {
    use sidkit_core::kmeans::assign_bounded;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (n, d, k) = (3000, 8, 40);
    // Clustered points, so the bounds prune most of them after a few iterations.
    let hubs: Vec<f32> = (0..20 * d).map(|_| rng.random_range(-5.0..5.0)).collect();
    let mut x = Vec::with_capacity(n * d);
    for _ in 0..n {
        let h = rng.random_range(0..20);
        for c in 0..d {
            x.push(hubs[h * d + c] + rng.random_range(-1.0..1.0));
        }
    }
    let mut centroids: Vec<f32> = x[..k * d].to_vec();
    let (mut labels, mut err, mut lower) = (vec![0u32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let mut previous: Option<Vec<f32>> = None;
    let mut pruned_total = 0;
    for _ in 0..15 {
        let searched = assign_bounded(
            &centroids,
            &x,
            d,
            &mut labels,
            &mut err,
            &mut lower,
            previous.as_deref(),
        )
        .unwrap();
        pruned_total += n - searched;
        // Reference: brute force in f64, ties → lowest index.
        for i in 0..n {
            let p = &x[i * d..(i + 1) * d];
            let dist = |j: usize| -> f64 {
                p.iter()
                    .zip(&centroids[j * d..(j + 1) * d])
                    .map(|(&a, &b)| ((a - b) as f64).powi(2))
                    .sum()
            };
            let best = (0..k)
                .min_by(|&a, &b| dist(a).total_cmp(&dist(b)).then(a.cmp(&b)))
                .unwrap();
            assert_eq!(labels[i] as usize, best, "point {i}");
            assert!((err[i] as f64 - dist(best)).abs() <= 1e-4 * (1.0 + dist(best)));
            let others = (0..k)
                .filter(|&j| j != best)
                .map(dist)
                .fold(f64::INFINITY, f64::min);
            assert!((lower[i] as f64) <= others.sqrt() + 1e-6, "lower bound {i}");
        }
        let (means, counts) = centroid_means(&x, d, &labels, k).unwrap();
        previous = Some(centroids.clone());
        for j in 0..k {
            if counts[j] > 0 {
                centroids[j * d..(j + 1) * d].copy_from_slice(&means[j * d..(j + 1) * d]);
            }
        }
    }
    assert!(
        pruned_total > 5 * n,
        "bounds pruned only {pruned_total} point-iterations"
    );
}

#[test]
fn subtract_centroids_matches_a_plain_loop_and_checks_first() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (n, d, k) = (1000, 19, 7);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-3.0..3.0)).collect();
    let c: Vec<f32> = (0..k * d).map(|_| rng.random_range(-3.0..3.0)).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
    let mut r = x.clone();
    subtract_centroids(&mut r, d, &c, &labels).unwrap();
    for i in 0..n {
        for j in 0..d {
            assert_eq!(r[i * d + j], x[i * d + j] - c[labels[i] as usize * d + j]);
        }
    }
    let mut r = x.clone();
    let mut bad = labels.clone();
    bad[n - 1] = k as u32;
    assert!(matches!(
        subtract_centroids(&mut r, d, &c, &bad),
        Err(Error::Value { arg: "labels", .. })
    ));
    assert!(matches!(
        subtract_centroids(&mut r, d, &c, &labels[1..]),
        Err(Error::Shape { arg: "x", .. })
    ));
    assert!(matches!(
        subtract_centroids(&mut r, d, &c[1..], &labels),
        Err(Error::Shape {
            arg: "centroids",
            ..
        })
    ));
    assert_eq!(r, x, "nothing is written before the checks pass");
}

/// The first bad value of `x` is named, whichever tile (of 256 rows) it is in and whatever
/// later tiles hold, with or without bounds, and the state is left as it was.
#[test]
fn bounded_assignment_names_the_first_bad_value() {
    use sidkit_core::kmeans::assign_bounded;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let (n, d, k) = (1100, 6, 10);
    let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-2.0..2.0)).collect();
    let c: Vec<f32> = x[..k * d].to_vec();
    let (mut labels, mut err, mut lower) = (vec![0u32; n], vec![0.0f32; n], vec![0.0f32; n]);
    assign_bounded(&c, &x, d, &mut labels, &mut err, &mut lower, None).unwrap();
    let moved: Vec<f32> = c.iter().map(|v| v + 0.01).collect();
    for bad in [f32::NAN, f32::NEG_INFINITY, 3e15] {
        for at in [0, 5, 256 * d - 1, 256 * d, 700 * d + 2, n * d - 1] {
            let mut y = x.clone();
            y[at] = bad;
            if at + 1 < n * d {
                y[n * d - 1] = f32::INFINITY; // a later bad value in the last tile
            }
            for prev in [None, Some(&c[..])] {
                let (mut l, mut e, mut lo) = (labels.clone(), err.clone(), lower.clone());
                match assign_bounded(&moved, &y, d, &mut l, &mut e, &mut lo, prev) {
                    Err(Error::NonFinite {
                        arg: "x", index, ..
                    }) => assert_eq!(index, at),
                    other => panic!("{bad} at {at}: {other:?}"),
                }
                assert!(l == labels && e == err && lo == lower);
            }
        }
    }
}
