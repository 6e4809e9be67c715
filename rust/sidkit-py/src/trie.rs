//! The prefix trie and constrained beam search, as two small Python classes.

use std::sync::Arc;

use numpy::ndarray::{Array2, Array3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sidkit_core::alloc::{elements, try_filled};
use sidkit_core::beam::BeamSearch;
use sidkit_core::trie::{Trie, NONE};

use crate::arrays::{owned, slice, slice1};
use crate::errors::CoreError;
use crate::pool;

fn node_or_none(v: u32) -> i64 {
    if v == NONE {
        -1
    } else {
        v as i64
    }
}

/// A compact prefix trie of valid SIDs (CSR arrays per depth).
#[pyclass(name = "Trie", module = "sidkit._native", frozen)]
pub struct PyTrie {
    inner: Arc<Trie>,
}

impl PyTrie {
    fn nodes(&self, arg: &str, nodes: &[i64]) -> PyResult<Vec<u32>> {
        let n = self.inner.num_nodes() as i64;
        nodes
            .iter()
            .map(|&v| {
                if (0..n).contains(&v) {
                    Ok(v as u32)
                } else if v == -1 {
                    Ok(NONE)
                } else {
                    Err(PyValueError::new_err(format!(
                        "{arg}: expected node ids in 0..{n} (or -1 for none), got {v}"
                    )))
                }
            })
            .collect()
    }
}

#[pymethods]
impl PyTrie {
    /// Builds the trie of codes (N, L) uint16 -> item_ids (N,) int64.
    #[new]
    #[pyo3(signature = (codes, sizes, item_ids, allow_duplicates = false))]
    fn new(
        py: Python<'_>,
        codes: PyReadonlyArray2<'_, u16>,
        sizes: Vec<usize>,
        item_ids: PyReadonlyArray1<'_, i64>,
        allow_duplicates: bool,
    ) -> PyResult<Self> {
        if codes.shape()[1] != sizes.len() {
            return Err(PyValueError::new_err(format!(
                "codes: expected shape (N, {}), got {:?}",
                sizes.len(),
                codes.shape()
            )));
        }
        let (c, ids) = (owned("codes", &codes)?, owned("item_ids", &item_ids)?);
        let trie =
            pool::run(py, || Trie::new(&c, &sizes, &ids, allow_duplicates))?.map_err(CoreError)?;
        Ok(Self {
            inner: Arc::new(trie),
        })
    }

    #[getter]
    fn depth(&self) -> usize {
        self.inner.depth()
    }

    #[getter]
    fn sizes(&self) -> Vec<usize> {
        self.inner.sizes().to_vec()
    }

    #[getter]
    fn num_nodes(&self) -> usize {
        self.inner.num_nodes()
    }

    #[getter]
    fn num_leaves(&self) -> usize {
        self.inner.leaves()
    }

    #[getter]
    fn num_items(&self) -> usize {
        self.inner.num_items()
    }

    /// Bytes held by the trie's arrays.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    /// Node ids (B,) int64 reached by prefixes (B, t) uint16; -1 where invalid.
    fn walk<'py>(
        &self,
        py: Python<'py>,
        prefixes: PyReadonlyArray2<'py, u16>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let t = prefixes.shape()[1];
        if t > self.inner.depth() {
            return Err(PyValueError::new_err(format!(
                "prefixes: expected at most {} codes per prefix (the trie depth), got {t}",
                self.inner.depth()
            )));
        }
        let rows = prefixes.shape()[0];
        let p = slice("prefixes", &prefixes)?;
        let trie = &self.inner;
        if t == 0 {
            // The empty prefix is the root. `rows` is a caller's shape (a zero-width array
            // costs nothing to make): the output is allocated fallibly.
            let len = elements::<i64>("prefixes", &[rows]).map_err(CoreError)?;
            return Ok(try_filled("prefixes", len, 0i64)
                .map_err(CoreError)?
                .into_pyarray(py));
        }
        let out: Vec<i64> = py.detach(|| {
            p.chunks(t)
                .map(|row| node_or_none(trie.walk(row)))
                .collect()
        });
        Ok(out.into_pyarray(py))
    }

    /// The first item id on each full SID (B, L), -1 where the SID is not in the trie.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        codes: PyReadonlyArray2<'py, u16>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        if codes.shape()[1] != self.inner.depth() {
            return Err(PyValueError::new_err(format!(
                "codes: expected shape (B, {}), got {:?}",
                self.inner.depth(),
                codes.shape()
            )));
        }
        let c = slice("codes", &codes)?;
        let trie = &self.inner;
        let d = trie.depth();
        let out: Vec<i64> = py.detach(|| {
            c.chunks(d.max(1))
                .map(|row| trie.items_of(trie.walk(row)).first().copied().unwrap_or(-1))
                .collect()
        });
        Ok(out.into_pyarray(py))
    }

    /// All items on one full SID (for tables with duplicates).
    fn items_of(&self, sid: Vec<u16>) -> Vec<i64> {
        self.inner.items_of(self.inner.walk(&sid)).to_vec()
    }

    /// Every leaf's items as CSR in lexicographic SID order: (offsets (leaves + 1,) int64, items int64).
    fn leaf_items<'py>(
        &self,
        py: Python<'py>,
    ) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>) {
        let (offsets, items) = self.inner.leaf_items();
        let offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
        (offsets.into_pyarray(py), items.to_vec().into_pyarray(py))
    }

    /// Children of nodes (B,) int64 as CSR: (offsets (B + 1,) int64, codes uint16, child node ids int64).
    #[allow(clippy::type_complexity)]
    fn children<'py>(
        &self,
        py: Python<'py>,
        node_ids: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<(
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<u16>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        let nodes = self.nodes("node_ids", slice1("node_ids", &node_ids)?)?;
        let mut offsets = Vec::with_capacity(nodes.len() + 1);
        // The output can be K times the input: counted first, then reserved fallibly.
        let total: usize = nodes
            .iter()
            .filter(|&&v| v != NONE)
            .map(|&v| self.inner.children(v).len())
            .fold(0usize, usize::saturating_add);
        let len = elements::<i64>("node_ids", &[total]).map_err(CoreError)?;
        let mut codes: Vec<u16> = try_filled("node_ids", len, 0u16).map_err(CoreError)?;
        let mut ids: Vec<i64> = try_filled("node_ids", len, 0i64).map_err(CoreError)?;
        codes.clear();
        ids.clear();
        offsets.push(0i64);
        for &v in &nodes {
            if v != NONE {
                let r = self.inner.children(v);
                codes.extend_from_slice(self.inner.codes_of(r.clone()));
                ids.extend(r.map(|c| c as i64));
            }
            offsets.push(codes.len() as i64);
        }
        Ok((
            offsets.into_pyarray(py),
            codes.into_pyarray(py),
            ids.into_pyarray(py),
        ))
    }

    /// The child of each node with each code (B,), -1 where there is none.
    fn child<'py>(
        &self,
        py: Python<'py>,
        node_ids: PyReadonlyArray1<'py, i64>,
        codes: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let nodes = self.nodes("node_ids", slice1("node_ids", &node_ids)?)?;
        let codes = slice1("codes", &codes)?;
        if codes.len() != nodes.len() {
            return Err(PyValueError::new_err(format!(
                "codes: expected shape ({},) to match node_ids, got ({},)",
                nodes.len(),
                codes.len()
            )));
        }
        let out: Vec<i64> = nodes
            .iter()
            .zip(codes)
            .map(|(&v, &c)| {
                if v == NONE || !(0..=u16::MAX as i64).contains(&c) {
                    -1
                } else {
                    node_or_none(self.inner.child(v, c as u16))
                }
            })
            .collect();
        Ok(out.into_pyarray(py))
    }

    /// Boolean mask (B, vocab): True at `offset + code` for every child code of each node.
    fn mask<'py>(
        &self,
        py: Python<'py>,
        node_ids: PyReadonlyArray1<'py, i64>,
        vocab: usize,
        offset: usize,
    ) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let nodes = self.nodes("node_ids", slice1("node_ids", &node_ids)?)?;
        let trie = &self.inner;
        let len = elements::<bool>("vocab", &[nodes.len(), vocab]).map_err(CoreError)?;
        let mut flat = try_filled("vocab", len, false).map_err(CoreError)?;
        for (i, &v) in nodes.iter().enumerate() {
            if v == NONE {
                continue;
            }
            let row = &mut flat[i * vocab..(i + 1) * vocab];
            for &c in trie.codes_of(trie.children(v)) {
                let t = offset as u128 + c as u128; // no wrap-around for any offset
                if t >= vocab as u128 {
                    return Err(PyValueError::new_err(format!(
                        "vocab: expected more than offset + code = {t} tokens, got {vocab}"
                    )));
                }
                row[t as usize] = true;
            }
        }
        Ok(Array2::from_shape_vec((nodes.len(), vocab), flat)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py))
    }
}

/// Trie-constrained beam search state for one batch.
#[pyclass(name = "BeamSearch", module = "sidkit._native")]
pub struct PyBeamSearch {
    trie: Arc<Trie>,
    inner: BeamSearch,
}

#[pymethods]
impl PyBeamSearch {
    #[new]
    fn new(trie: &PyTrie, batch_size: usize, beam_width: usize) -> PyResult<Self> {
        let inner = BeamSearch::new(&trie.inner, batch_size, beam_width).map_err(CoreError)?;
        Ok(Self {
            trie: trie.inner.clone(),
            inner,
        })
    }

    #[allow(clippy::type_complexity)]
    /// Advances one level with log-probs (batch * beam, width) float32, code c at column
    /// offset + c. Returns (codes (batch * beam,) uint16, parents (batch * beam,) int64).
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        logp: PyReadonlyArray2<'py, f32>,
        offset: usize,
    ) -> PyResult<(Bound<'py, PyArray1<u16>>, Bound<'py, PyArray1<i64>>)> {
        let width = logp.shape()[1];
        let lp = slice("logp", &logp)?;
        let (trie, inner) = (&self.trie, &mut self.inner);
        pool::run(py, || inner.step(trie, lp, width, offset))?.map_err(CoreError)?;
        let (t, d) = (self.inner.step_index(), self.inner.depth_len());
        let codes: Vec<u16> = self.inner.codes().chunks(d).map(|row| row[t - 1]).collect();
        let parents: Vec<i64> = self.inner.parents().iter().map(|&p| p as i64).collect();
        Ok((codes.into_pyarray(py), parents.into_pyarray(py)))
    }

    #[getter]
    fn step_index(&self) -> usize {
        self.inner.step_index()
    }

    /// Codes chosen so far, (batch * beam, steps) uint16.
    fn codes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<u16>>> {
        let (t, d) = (self.inner.step_index(), self.inner.depth_len());
        let rows = self.inner.nodes().len();
        let flat: Vec<u16> = self
            .inner
            .codes()
            .chunks(d.max(1))
            .flat_map(|r| r[..t].to_vec())
            .collect();
        Ok(Array2::from_shape_vec((rows, t), flat)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py))
    }

    /// Cumulative log-prob of every beam (batch * beam,), -inf for empty beams.
    fn scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.inner.scores().to_vec().into_pyarray(py)
    }

    /// Trie node of every beam (batch * beam,), -1 for empty beams.
    fn nodes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let v: Vec<i64> = self
            .inner
            .nodes()
            .iter()
            .map(|&v| node_or_none(v))
            .collect();
        v.into_pyarray(py)
    }

    /// (items (B, top_k) int64, scores (B, top_k) float32, sids (B, top_k, L) uint16).
    #[allow(clippy::type_complexity)]
    fn finish<'py>(
        &self,
        py: Python<'py>,
        top_k: usize,
    ) -> PyResult<(
        Bound<'py, PyArray2<i64>>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray3<u16>>,
    )> {
        let out = self.inner.finish(&self.trie, top_k).map_err(CoreError)?;
        let b = out.items.len() / top_k.max(1);
        let d = self.inner.depth_len();
        let err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
        Ok((
            Array2::from_shape_vec((b, top_k), out.items)
                .map_err(err)?
                .into_pyarray(py),
            Array2::from_shape_vec((b, top_k), out.scores)
                .map_err(err)?
                .into_pyarray(py),
            Array3::from_shape_vec((b, top_k, d), out.sids)
                .map_err(err)?
                .into_pyarray(py),
        ))
    }
}
