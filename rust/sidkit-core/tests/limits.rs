//! Caller-sized outputs and caller-given counts that would overflow or not fit in memory are
//! errors naming the argument, never an abort, a panic or a wrapped (wrong) result.

use sidkit_core::beam::BeamSearch;
use sidkit_core::kmeans::{centroid_means, kmeans_pp};
use sidkit_core::trie::Trie;
use sidkit_core::{decode, encode, Codebooks, Error};

fn arg(e: Error) -> &'static str {
    match e {
        Error::Shape { arg, .. } | Error::Value { arg, .. } | Error::Memory { arg, .. } => arg,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_decode_too_large_for_memory_is_an_error() {
    // 100,000 SIDs of D = 10,000,000 floats: 4 TB of output.
    let cb = Codebooks::new(vec![0.5f32; 10_000_000], &[1], 10_000_000).unwrap();
    let codes = vec![0u16; 100_000];
    assert_eq!(arg(decode(&cb, &codes).unwrap_err()), "codes");
}

#[test]
fn beam_search_over_huge_codebooks_is_refused_not_allocated() {
    // Two levels of 65,536 codes: the beam's codeword-product table alone would be 16 GiB.
    let k = 65_536;
    let data: Vec<f32> = (0..2 * k).map(|i| (i % 97) as f32).collect();
    let cb = Codebooks::new(data, &[k, k], 1).unwrap();
    let e = encode(&cb, &[1.0, 2.0], 2).unwrap_err();
    assert!(
        e.to_string().starts_with("beam: expected 1 (greedy)"),
        "{e}"
    );
    assert_eq!(encode(&cb, &[1.0, 2.0], 1).unwrap().codes.len(), 4); // greedy needs no table
}

#[test]
fn centroid_means_of_a_huge_k_is_an_error() {
    let x = [1.0f32, 2.0];
    let e = centroid_means(&x, 1, &[0, 0], 100_000_000_000).unwrap_err();
    assert_eq!(arg(e), "k");
}

#[test]
fn kmeans_pp_trials_that_overflow_are_an_error() {
    let x: Vec<f32> = (0..1026).map(|i| i as f32).collect();
    let uniform = vec![0.5f64; 2000];
    for trials in [1usize << 63, usize::MAX] {
        assert_eq!(
            arg(kmeans_pp(&x, 1, 3, trials, &uniform).unwrap_err()),
            "uniform"
        );
    }
    assert_eq!(kmeans_pp(&x, 1, 3, 2, &uniform).unwrap().len(), 3);
}

#[test]
fn codebooks_whose_size_overflows_are_an_error() {
    assert_eq!(
        arg(Codebooks::new(Vec::new(), &[16], 1 << 60).unwrap_err()),
        "codebooks"
    );
}

#[test]
fn a_beam_step_offset_that_overflows_is_an_error() {
    let trie = Trie::new(&[0u16, 1, 1, 0], &[2, 2], &[10, 11], false).unwrap();
    let mut s = BeamSearch::new(&trie, 1, 2).unwrap();
    let logp = [0.0f32; 2 * 4];
    assert_eq!(
        arg(s.step(&trie, &logp, 4, usize::MAX).unwrap_err()),
        "logp"
    );
    assert_eq!(
        arg(s.step(&trie, &logp, usize::MAX / 2 + 1, 0).unwrap_err()),
        "logp"
    );
    s.step(&trie, &logp, 4, 2).unwrap();
}

#[test]
fn a_beam_whose_scratch_per_item_passes_a_gib_is_refused() {
    // 4,096 beams over a level of 65,536 codes: 1 GiB of distances for every item.
    let sizes = [4096usize, 65_536];
    let data: Vec<f32> = (0..sizes.iter().sum::<usize>())
        .map(|i| (i % 89) as f32)
        .collect();
    let cb = Codebooks::new(data, &sizes, 1).unwrap();
    let e = encode(&cb, &[1.0, 2.0], 4096).unwrap_err();
    assert!(e.to_string().contains("scratch per item"), "{e}");
    assert_eq!(arg(e), "beam");
}
