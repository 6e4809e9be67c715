//! `sidkit._native`: the thin PyO3 layer over `sidkit-core`. Arguments are validated while
//! attached to the interpreter, the work runs detached (GIL released) on sidkit's rayon pool,
//! and core errors become Python exceptions in one place (`errors.rs`).

mod arrays;
mod collide;
mod dropout;
mod errors;
mod pool;
mod rq;
mod trie;

use pyo3::prelude::*;

#[pymodule]
mod _native {
    #[pymodule_export]
    use crate::collide::{
        assign_bounded, balanced_assign, centroid_means, group_ranks, kmeans_pp, reassign,
        subtract_centroids, suffix,
    };
    #[pymodule_export]
    use crate::dropout::dropout;
    #[pymodule_export]
    use crate::pool::{get_num_threads, set_num_threads};
    #[pymodule_export]
    use crate::rq::{rq_decode, rq_encode};
    #[pymodule_export]
    use crate::trie::{PyBeamSearch, PyTrie};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
