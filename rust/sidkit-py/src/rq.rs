//! Residual-quantization assignment and decoding.

use numpy::{IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use sidkit_core::{Codebooks, Encoding};

use crate::arrays::{owned, slice};
use crate::errors::CoreError;
use crate::pool;

pub(crate) fn codebooks<'a>(
    data: &'a PyReadonlyArray2<'_, f32>,
    sizes: &[usize],
) -> PyResult<Codebooks<'a>> {
    named_codebooks(data, sizes, "codebooks")
}

/// [`codebooks`] for an argument of another name (k-means' `centroids`).
pub(crate) fn named_codebooks<'a>(
    data: &'a PyReadonlyArray2<'_, f32>,
    sizes: &[usize],
    name: &'static str,
) -> PyResult<Codebooks<'a>> {
    let dim = data.shape()[1];
    let cb = Codebooks::new(slice(name, data)?, sizes, dim);
    Ok(cb.map_err(|e| CoreError(e.renamed("codebooks", name)))?)
}

type CodesAndErrors<'py> = (Bound<'py, PyArray2<u16>>, Bound<'py, PyArray2<f32>>);

/// Encodes `x` (N, D) float32 with the codebooks `data` ((sum K_l, D) float32, level sizes
/// `sizes`). Returns codes (N, L) uint16 and errors (N, L) float32: the squared residual norm
/// left after each level.
#[pyfunction]
#[pyo3(signature = (data, sizes, x, beam = 1))]
pub fn rq_encode<'py>(
    py: Python<'py>,
    data: PyReadonlyArray2<'py, f32>,
    sizes: Vec<usize>,
    x: PyReadonlyArray2<'py, f32>,
    beam: usize,
) -> PyResult<CodesAndErrors<'py>> {
    let cb = codebooks(&data, &sizes)?;
    if x.shape()[1] != cb.dim() {
        return Err(PyValueError::new_err(format!(
            "x: expected shape (N, {}), got ({}, {})",
            cb.dim(),
            x.shape()[0],
            x.shape()[1]
        )));
    }
    let (n, levels) = (x.shape()[0], cb.levels());
    let xs = slice("x", &x)?;
    let Encoding { codes, errors } =
        pool::run(py, || sidkit_core::encode(&cb, xs, beam))?.map_err(CoreError)?;
    let codes = codes.into_pyarray(py).reshape([n, levels])?;
    let errors = errors.into_pyarray(py).reshape([n, levels])?;
    Ok((codes, errors))
}

fn decode_with<'py, C: numpy::Element + sidkit_core::rq::Code>(
    py: Python<'py>,
    cb: &Codebooks,
    codes: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyArray2<f32>>>> {
    let Ok(codes) = codes.extract::<PyReadonlyArray2<'py, C>>() else {
        return Ok(None);
    };
    if codes.shape()[1] != cb.levels() {
        return Err(PyValueError::new_err(format!(
            "codes: expected shape (N, {}), got ({}, {})",
            cb.levels(),
            codes.shape()[0],
            codes.shape()[1]
        )));
    }
    let n = codes.shape()[0];
    let cs = owned("codes", &codes)?;
    let out = pool::run(py, || sidkit_core::decode(cb, &cs))?.map_err(CoreError)?;
    Ok(Some(out.into_pyarray(py).reshape([n, cb.dim()])?))
}

/// Reconstructs (N, D) float32 from codes (N, L), uint16 or int64.
#[pyfunction]
pub fn rq_decode<'py>(
    py: Python<'py>,
    data: PyReadonlyArray2<'py, f32>,
    sizes: Vec<usize>,
    codes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let cb = codebooks(&data, &sizes)?;
    if let Some(out) = decode_with::<u16>(py, &cb, codes)? {
        return Ok(out);
    }
    if let Some(out) = decode_with::<i64>(py, &cb, codes)? {
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!(
        "codes: expected a 2-D uint16 or int64 array, got {}",
        codes.get_type().name()?
    )))
}
