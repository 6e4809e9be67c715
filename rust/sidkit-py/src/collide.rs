//! Collision grouping and fixed-length reassignment.

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyReadwriteArray1, PyReadwriteArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sidkit_core::collide::{self, MoveOrder};

use crate::arrays::{owned, slice, slice1, slice_mut};
use crate::errors::CoreError;
use crate::pool;
use crate::rq::{codebooks, named_codebooks};

fn check_levels(codes: &PyReadonlyArray2<'_, u16>, sizes: &[usize]) -> PyResult<()> {
    if codes.shape()[1] != sizes.len() {
        return Err(PyValueError::new_err(format!(
            "codes: expected shape (N, {}), got {:?}",
            sizes.len(),
            codes.shape()
        )));
    }
    Ok(())
}

/// Ranks items inside groups of equal codes (N, L) uint16, by `cost` (N,) float32 when given,
/// then item id (N,) int64 (`None`: the row index). Returns (rank (N,) uint32, groups,
/// max_group, colliding_groups).
#[pyfunction]
#[pyo3(signature = (codes, sizes, item_ids = None, cost = None))]
pub fn group_ranks<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray2<'py, u16>,
    sizes: Vec<usize>,
    item_ids: Option<PyReadonlyArray1<'py, i64>>,
    cost: Option<PyReadonlyArray1<'py, f32>>,
) -> PyResult<(Bound<'py, PyArray1<u32>>, usize, usize, usize)> {
    check_levels(&codes, &sizes)?;
    let c = owned("codes", &codes)?;
    let ids = item_ids
        .as_ref()
        .map(|a| owned("item_ids", a))
        .transpose()?;
    let cost = cost.as_ref().map(|a| slice1("cost", a)).transpose()?;
    let g = pool::run(py, || {
        collide::group_ranks(&c, &sizes, ids.as_deref(), cost)
    })?
    .map_err(CoreError)?;
    Ok((
        g.rank.into_pyarray(py),
        g.groups,
        g.max_group,
        g.colliding_groups,
    ))
}

type SuffixResult<'py> = (Bound<'py, PyArray2<u16>>, usize, usize, usize);

/// TIGER suffix resolution: codes (N, L) -> (codes (N, L + 1) uint16 with each item's rank in
/// its collision group appended, groups, max_group, colliding_groups).
#[pyfunction]
#[pyo3(signature = (codes, sizes, item_ids = None, cost = None, max_suffix = None))]
pub fn suffix<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray2<'py, u16>,
    sizes: Vec<usize>,
    item_ids: Option<PyReadonlyArray1<'py, i64>>,
    cost: Option<PyReadonlyArray1<'py, f32>>,
    max_suffix: Option<usize>,
) -> PyResult<SuffixResult<'py>> {
    check_levels(&codes, &sizes)?;
    let c = owned("codes", &codes)?;
    let ids = item_ids
        .as_ref()
        .map(|a| owned("item_ids", a))
        .transpose()?;
    let cost = cost.as_ref().map(|a| slice1("cost", a)).transpose()?;
    let (out, g) = pool::run(py, || {
        collide::suffix(&c, &sizes, ids.as_deref(), cost, max_suffix)
    })?
    .map_err(CoreError)?;
    let n = codes.shape()[0];
    let out = out.into_pyarray(py).reshape([n, sizes.len() + 1])?;
    Ok((out, g.groups, g.max_group, g.colliding_groups))
}

/// Fixed-length reassignment; returns a dict with `codes` (N, L) uint16, `moved` and
/// `unresolved` (row indices, uint32), `added_error`, `groups`, `max_group`, `colliding_groups`.
#[pyfunction]
#[pyo3(signature = (data, sizes, x, codes, item_ids, capacity = 1, candidates = 200, order = "knn", seed = 0, fixed = None))]
#[allow(clippy::too_many_arguments)]
pub fn reassign<'py>(
    py: Python<'py>,
    data: PyReadonlyArray2<'py, f32>,
    sizes: Vec<usize>,
    x: PyReadonlyArray2<'py, f32>,
    codes: PyReadonlyArray2<'py, u16>,
    item_ids: PyReadonlyArray1<'py, i64>,
    capacity: usize,
    candidates: usize,
    order: &str,
    seed: u64,
    fixed: Option<PyReadonlyArray1<'py, u8>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cb = codebooks(&data, &sizes)?;
    let order = match order {
        "knn" => MoveOrder::Knn,
        "random" => MoveOrder::Random(seed),
        other => {
            return Err(PyValueError::new_err(format!(
                "order: expected 'knn' or 'random', got {other:?}"
            )))
        }
    };
    let n = item_ids.shape()[0];
    let (d, levels) = (data.shape()[1], sizes.len());
    if x.shape() != [n, d] {
        return Err(PyValueError::new_err(format!(
            "x: expected shape ({n}, {d}) (item_ids, codebooks), got {:?}",
            x.shape()
        )));
    }
    if codes.shape() != [n, levels] {
        return Err(PyValueError::new_err(format!(
            "codes: expected shape ({n}, {levels}) (item_ids, sizes), got {:?}",
            codes.shape()
        )));
    }
    let (xs, cs, ids) = (
        slice("x", &x)?,
        owned("codes", &codes)?,
        owned("item_ids", &item_ids)?,
    );
    // Bytes, not numpy bools: a bool array's byte may hold any value, a Rust bool only 0 or 1.
    let fixed: Option<Vec<bool>> = fixed
        .as_ref()
        .map(|a| slice1("fixed", a).map(|f| f.iter().map(|&b| b != 0).collect()))
        .transpose()?;
    let r = pool::run(py, || {
        collide::reassign(
            &cb,
            xs,
            &cs,
            &ids,
            capacity,
            candidates,
            order,
            fixed.as_deref(),
        )
    })?
    .map_err(CoreError)?;
    let out = PyDict::new(py);
    out.set_item("codes", r.codes.into_pyarray(py).reshape([n, sizes.len()])?)?;
    out.set_item("moved", r.moved.into_pyarray(py))?;
    out.set_item("unresolved", r.unresolved.into_pyarray(py))?;
    out.set_item("added_error", r.added_error)?;
    out.set_item("groups", r.groups.groups)?;
    out.set_item("max_group", r.groups.max_group)?;
    out.set_item("colliding_groups", r.groups.colliding_groups)?;
    Ok(out)
}

type LabelsAndDistances<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>);

/// Balanced assignment of x (N, D) float32 to centroids (K, D) float32: every centroid gets
/// floor(N/K) or ceil(N/K) points, nearest pairs first. Returns (labels (N,) uint32,
/// squared distances (N,) float32).
#[pyfunction]
pub fn balanced_assign<'py>(
    py: Python<'py>,
    centroids: PyReadonlyArray2<'py, f32>,
    x: PyReadonlyArray2<'py, f32>,
) -> PyResult<LabelsAndDistances<'py>> {
    let k = centroids.shape()[0];
    let cb = named_codebooks(&centroids, &[k], "centroids")?;
    if x.shape()[1] != cb.dim() {
        return Err(PyValueError::new_err(format!(
            "x: expected shape (N, {}), got {:?}",
            cb.dim(),
            x.shape()
        )));
    }
    let xs = slice("x", &x)?;
    let (labels, dist) =
        pool::run(py, || sidkit_core::kmeans::balanced_assign(&cb, 0, xs))?.map_err(CoreError)?;
    Ok((labels.into_pyarray(py), dist.into_pyarray(py)))
}

type MeansAndCounts<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<u64>>);

/// The k-means update step: means (K, D) float32 of the rows of x (N, D) float32 per label
/// (N,) uint32 in 0..k (zero rows for empty clusters), and counts (K,) uint64.
#[pyfunction]
pub fn centroid_means<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, u32>,
    k: usize,
) -> PyResult<MeansAndCounts<'py>> {
    let d = x.shape()[1];
    let (xs, ls) = (slice("x", &x)?, owned("labels", &labels)?);
    let (means, counts) =
        pool::run(py, || sidkit_core::kmeans::centroid_means(xs, d, &ls, k))?.map_err(CoreError)?;
    Ok((
        means.into_pyarray(py).reshape([k, d])?,
        counts.into_pyarray(py),
    ))
}

/// `x[i] -= centroids[labels[i]]` in place: x (N, D) float32, centroids (K, D) float32,
/// labels (N,) uint32 in 0..K (the residuals of one residual-k-means level).
#[pyfunction]
pub fn subtract_centroids<'py>(
    py: Python<'py>,
    mut x: PyReadwriteArray2<'py, f32>,
    centroids: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, u32>,
) -> PyResult<()> {
    let d = centroids.shape()[1];
    if x.shape()[1] != d {
        return Err(PyValueError::new_err(format!(
            "x: expected shape (N, {d}), got {:?}",
            x.shape()
        )));
    }
    // Labels copied before `x` is borrowed mutably: a view of `x`'s memory as `labels` (two
    // `np.frombuffer` calls on one buffer) would otherwise be overwritten as it is read.
    let (cs, ls) = (slice("centroids", &centroids)?, owned("labels", &labels)?);
    let xs = slice_mut("x", &mut x)?;
    if span(xs).0 < span(cs).1 && span(cs).0 < span(xs).1 {
        return Err(PyValueError::new_err(
            "x: expected an array that shares no memory with centroids, got one that does",
        ));
    }
    pool::run(py, || {
        sidkit_core::kmeans::subtract_centroids(xs, d, cs, &ls)
    })?
    .map_err(|e| CoreError(e).into())
}

/// Greedy k-means++ seeding: k row indices of x (N, D) float32, the best of `trials` D² draws
/// per centre, drawn with `uniform` (at least 1 + (k - 1) * trials numbers in [0, 1), float64).
#[pyfunction]
pub fn kmeans_pp<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    k: usize,
    trials: usize,
    uniform: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    let d = x.shape()[1];
    let (xs, us) = (slice("x", &x)?, slice1("uniform", &uniform)?);
    let idx = pool::run(py, || sidkit_core::kmeans::kmeans_pp(xs, d, k, trials, us))?
        .map_err(CoreError)?;
    Ok(idx
        .into_iter()
        .map(|i| i as u64)
        .collect::<Vec<_>>()
        .into_pyarray(py))
}

/// Nearest-centroid assignment with Hamerly's bounds, updating `labels` (N,) uint32, `err`
/// (N,) float32 (squared distance) and `lower` (N,) float32 (distance lower bound to every
/// other centroid) in place; `previous` (K, D) are the centroids that state refers to (None:
/// search every point). Returns the number of points searched.
#[pyfunction]
#[pyo3(signature = (centroids, x, labels, err, lower, previous = None))]
pub fn assign_bounded<'py>(
    py: Python<'py>,
    centroids: PyReadonlyArray2<'py, f32>,
    x: PyReadonlyArray2<'py, f32>,
    mut labels: PyReadwriteArray1<'py, u32>,
    mut err: PyReadwriteArray1<'py, f32>,
    mut lower: PyReadwriteArray1<'py, f32>,
    previous: Option<PyReadonlyArray2<'py, f32>>,
) -> PyResult<usize> {
    let d = centroids.shape()[1];
    if x.shape()[1] != d {
        return Err(PyValueError::new_err(format!(
            "x: expected shape (N, {d}), got {:?}",
            x.shape()
        )));
    }
    let (cs, xs) = (slice("centroids", &centroids)?, slice("x", &x)?);
    let prev = previous
        .as_ref()
        .map(|p| slice("previous", p))
        .transpose()?;
    let strided =
        |arg: &str| PyValueError::new_err(format!("{arg}: expected a C-contiguous array"));
    let ls = labels.as_slice_mut().map_err(|_| strided("labels"))?;
    let es = err.as_slice_mut().map_err(|_| strided("err"))?;
    let los = lower.as_slice_mut().map_err(|_| strided("lower"))?;
    // Views of one buffer with different bases escape numpy's borrow tracking: the outputs
    // may share memory neither with each other nor with an input.
    let outs = [
        ("labels", span(ls)),
        ("err", span(es)),
        ("lower", span(los)),
    ];
    let ins = [
        ("centroids", span(cs)),
        ("x", span(xs)),
        ("previous", prev.map_or((0, 0), span)),
    ];
    for (i, &(a, ra)) in outs.iter().enumerate() {
        for &(b, rb) in outs[i + 1..].iter().chain(&ins) {
            if ra.0 < ra.1 && rb.0 < rb.1 && ra.0 < rb.1 && rb.0 < ra.1 {
                return Err(PyValueError::new_err(format!(
                    "{a}: expected an array that shares no memory with {b}, got one that does"
                )));
            }
        }
    }
    // The labels are read (the previous assignment) and written: the core works on a copy,
    // written back after, so a Python thread writing `labels` meanwhile cannot index past K.
    let mut own = ls.to_vec();
    let searched = pool::run(py, || {
        sidkit_core::kmeans::assign_bounded(cs, xs, d, &mut own, es, los, prev)
    })?
    .map_err(CoreError)?;
    ls.copy_from_slice(&own);
    Ok(searched)
}

/// The byte range `[start, end)` a slice occupies (empty slices occupy nothing).
fn span<T>(s: &[T]) -> (usize, usize) {
    let start = s.as_ptr() as usize;
    (start, start + std::mem::size_of_val(s))
}
