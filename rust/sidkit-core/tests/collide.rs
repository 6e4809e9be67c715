//! Collision grouping and reassignment on hand-worked cases.

use sidkit_core::collide::{group_ranks, pack, reassign, suffix, MoveOrder};
use sidkit_core::{Codebooks, Error};

#[test]
fn ranks_inside_groups_by_cost_then_id() {
    // Rows: (0,1) x3, (1,0) x1, (0,0) x2.
    let codes = [0u16, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0];
    let ids = [10i64, 11, 12, 13, 14, 15];
    let g = group_ranks(&codes, &[2, 2], Some(&ids), None).unwrap();
    assert_eq!(g.rank, vec![0, 0, 1, 0, 2, 1]);
    assert_eq!((g.groups, g.max_group, g.colliding_groups), (3, 3, 2));
    let cost = [0.5f32, 0.0, 0.1, 0.0, 0.2, 0.3];
    let g = group_ranks(&codes, &[2, 2], Some(&ids), Some(&cost)).unwrap();
    assert_eq!(g.rank, vec![2, 0, 0, 0, 1, 1]);
}

/// One giant group beside small ones (the parallel ranking's cuts all fall inside it): ranks
/// equal a sort by (tuple, cost, id), with costs, with shuffled ids, and with both.
#[test]
fn ranks_with_one_giant_group_equal_a_full_sort() {
    let n = 50_000usize;
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let codes: Vec<u16> = (0..n)
        .flat_map(|_| {
            let giant = next() % 10 != 0; // 90% of the items share (3, 3)
            let (a, b) = if giant {
                (3, 3)
            } else {
                ((next() % 4) as u16, (next() % 3) as u16)
            };
            [a, b]
        })
        .collect();
    let ids: Vec<i64> = {
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            v.swap(i, next() as usize % (i + 1));
        }
        v
    };
    let cost: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32).collect();
    for (ids, cost) in [
        (None, Some(&cost[..])),
        (Some(&ids[..]), None),
        (Some(&ids[..]), Some(&cost[..])),
    ] {
        let g = group_ranks(&codes, &[4, 4], ids, cost).unwrap();
        let id = |i: usize| ids.map_or(i as i64, |v| v[i]);
        let c = |i: usize| cost.map_or(0.0, |v| v[i]);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            (codes[2 * a], codes[2 * a + 1])
                .cmp(&(codes[2 * b], codes[2 * b + 1]))
                .then(c(a).total_cmp(&c(b)))
                .then(id(a).cmp(&id(b)))
        });
        let mut want = vec![0u32; n];
        for w in 1..n {
            let (p, q) = (order[w - 1], order[w]);
            if codes[2 * p..2 * p + 2] == codes[2 * q..2 * q + 2] {
                want[q] = want[p] + 1;
            }
        }
        assert_eq!(g.rank, want);
        assert_eq!(g.max_group as u32, want.iter().max().unwrap() + 1);
    }
}

#[test]
fn suffix_appends_the_rank_and_respects_max_suffix() {
    let codes = [1u16, 0, 1, 0, 0, 0];
    let (out, g) = suffix(&codes, &[2, 2], None, None, None).unwrap();
    assert_eq!(out, vec![1, 0, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(g.max_group, 2);
    assert!(matches!(
        suffix(&codes, &[2, 2], None, None, Some(1)),
        Err(Error::Value {
            arg: "max_suffix",
            ..
        })
    ));
}

#[test]
fn packed_keys_order_like_tuples() {
    let codes = [3u16, 0, 0, 7, 1, 2];
    let keys = pack(&codes, &[4, 8]).unwrap();
    assert!(keys[1] < keys[2] && keys[2] < keys[0]);
    assert!(pack(&[0u16; 5], &[65536; 5]).is_none()); // 80 bits do not fit
}

#[test]
fn bad_tables_are_errors() {
    assert!(matches!(
        group_ranks(&[0, 2], &[2], Some(&[1, 2]), None),
        Err(Error::Value { arg: "codes", .. })
    ));
    assert!(matches!(
        group_ranks(&[0, 1], &[2], Some(&[1, 1]), None),
        Err(Error::Value {
            arg: "item_ids",
            ..
        })
    ));
    assert!(matches!(
        group_ranks(&[0, 1, 1], &[2], Some(&[1, 2]), None),
        Err(Error::Shape { arg: "codes", .. })
    ));
    assert!(matches!(
        group_ranks(&[0, 1], &[2], Some(&[1, 2]), Some(&[0.0, f32::NAN])),
        Err(Error::NonFinite { arg: "cost", .. })
    ));
}

#[test]
fn reassign_moves_to_the_nearest_free_code() {
    let cb = Codebooks::new(vec![0.0, 0.0, 1.0, 2.0, 10.0], &[1, 4], 1).unwrap();
    let x = [0.1f32, 0.9, -0.2];
    let codes = [0u16, 0, 0, 0, 0, 0];
    let r = reassign(&cb, &x, &codes, &[0, 1, 2], 1, 4, MoveOrder::Knn, None).unwrap();
    assert_eq!(r.codes, vec![0, 0, 0, 1, 0, 2]);
    assert_eq!(r.moved, vec![1, 2]);
    assert!(r.unresolved.is_empty());
    // Added error: item 1 from 0.81 to 0.01, item 2 from 0.04 to 4.84.
    assert!((r.added_error - (-0.8 + 4.8)).abs() < 1e-5);
    // A fixed item keeps its slot even when another item is closer.
    let fixed = [false, false, true];
    let r = reassign(
        &cb,
        &x,
        &codes,
        &[0, 1, 2],
        1,
        4,
        MoveOrder::Knn,
        Some(&fixed),
    )
    .unwrap();
    assert_eq!(r.codes[4..], [0, 0]);
    assert_eq!(r.moved, vec![0, 1]);
}

#[test]
fn balanced_assignment_respects_capacity_and_prefers_near_centroids() {
    use sidkit_core::kmeans::balanced_assign;
    // 7 points on a line, 3 centroids at 0, 10, 20: capacities 3, 2, 2 (7 = 2·3 + 1).
    let cb = Codebooks::new(vec![0.0, 10.0, 20.0], &[3], 1).unwrap();
    let x = [0.0f32, 1.0, 2.0, 3.0, 4.0, 11.0, 19.0];
    let (label, dist) = balanced_assign(&cb, 0, &x).unwrap();
    let mut load = [0; 3];
    label.iter().for_each(|&l| load[l as usize] += 1);
    let mut sorted = load;
    sorted.sort();
    assert_eq!(sorted, [2, 2, 3]);
    // Pairs go by distance: 0, 1, 2 fill centroid 0 (taking the one big slot); 4 reaches 10
    // (36) before 3 does (49) and fills it with 11; 3 goes on to 20 (289).
    assert_eq!(label, vec![0, 0, 0, 2, 1, 1, 2]);
    assert_eq!(dist[3], 289.0);
    let (empty, _) = balanced_assign(&cb, 0, &[]).unwrap();
    assert!(empty.is_empty());
}

/// The greedy it implements, by brute force: every (point, centroid) pair sorted by
/// (distance, point, centroid), each served when the point is free and the centroid has room.
fn balanced_by_sorting_all_pairs(x: &[f32], c: &[f32], d: usize) -> Vec<u32> {
    let (n, k) = (x.len() / d, c.len() / d);
    let dist =
        |i: usize, j: usize| -> f32 { (0..d).map(|t| (x[i * d + t] - c[j * d + t]).powi(2)).sum() };
    let mut pairs: Vec<(f32, usize, usize)> = (0..n)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| (dist(i, j), i, j))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (floor, mut big_left) = (n / k, n % k);
    let (mut load, mut label) = (vec![0usize; k], vec![u32::MAX; n]);
    for (_, i, j) in pairs {
        if label[i] != u32::MAX || !(load[j] < floor || (load[j] == floor && big_left > 0)) {
            continue;
        }
        if load[j] == floor {
            big_left -= 1;
        }
        load[j] += 1;
        label[i] = j as u32;
    }
    label
}

#[test]
fn balanced_assignment_equals_the_sorted_pairs_greedy_past_its_candidate_lists() {
    use rand::{Rng, SeedableRng};
    use sidkit_core::kmeans::balanced_assign;
    // More centroids than the 64 candidates a point keeps, so points run out of candidates
    // and fall back. Small integer coordinates make every distance exact (and ties common).
    for (seed, n, k) in [
        (0u64, 300usize, 70usize),
        (1, 500, 100),
        (2, 450, 200),
        (3, 64, 64),
    ] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = 3;
        let mut draw = |m: usize| -> Vec<f32> {
            (0..m * d)
                .map(|_| rng.random_range(-6i32..=6) as f32)
                .collect()
        };
        let (x, c) = (draw(n), draw(k));
        let cb = Codebooks::new(c.clone(), &[k], d).unwrap();
        let (label, dist) = balanced_assign(&cb, 0, &x).unwrap();
        assert_eq!(
            label,
            balanced_by_sorting_all_pairs(&x, &c, d),
            "seed {seed}, n {n}, K {k}"
        );
        for (i, (&l, &dd)) in label.iter().zip(&dist).enumerate() {
            let want: f32 = (0..d)
                .map(|t| (x[i * d + t] - c[l as usize * d + t]).powi(2))
                .sum();
            assert_eq!(dd, want);
        }
    }
}
