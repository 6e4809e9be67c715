//! sidkit-core: the pure-Rust engine of sidkit, semantic-ID plumbing for generative
//! recommendation. No Python here: the `sidkit-py` crate binds it.
//!
//! - [`codebooks`]: validated residual-quantization codebooks (L levels, ragged K allowed).
//! - [`rq`]: multithreaded RQ assignment (greedy and beam search) and decoding.
//! - [`collide`]: collision grouping and ranking (suffix / capacity resolution).
//! - [`dropout`]: counter-based dropout masks for CPU training (thread-count independent).
//! - [`trie`]: a flat (CSR) prefix trie of valid SIDs; [`beam`]: trie-constrained beam search.
//!
//! Parallel functions run on the current rayon pool; call them inside
//! `ThreadPool::install` to choose the thread count. Results never depend on it.

pub mod alloc;
pub mod beam;
pub mod codebooks;
pub mod collide;
pub mod dropout;
pub mod error;
#[allow(clippy::needless_range_loop)]
pub(crate) mod kernels;
pub mod kmeans;
pub mod rq;
pub mod trie;

pub use codebooks::{Codebooks, MAX_CODEBOOK_SIZE};
pub use error::{Error, Result};
pub use rq::{decode, encode, Encoding};
