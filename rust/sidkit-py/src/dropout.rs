//! Counter-based dropout (see `sidkit_core::dropout`), applied into a caller-owned array.

use numpy::{PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use sidkit_core::dropout::Dropout;

use crate::arrays::slice1;
use crate::errors::CoreError;
use crate::pool;

fn apply<'py, T: numpy::Element + Copy + Send + Sync>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: &Bound<'py, PyAny>,
    run: impl FnOnce(&[T], &mut [T]) -> sidkit_core::Result<()> + Send,
) -> PyResult<Option<()>> {
    let Ok(x) = x.extract::<PyReadonlyArray1<'py, T>>() else {
        return Ok(None);
    };
    let Ok(mut out) = out.extract::<PyReadwriteArray1<'py, T>>() else {
        return Err(PyTypeError::new_err(
            "out: expected a writable 1-D array of x's dtype",
        ));
    };
    let xs = slice1("x", &x)?;
    let os = out.as_slice_mut().map_err(|_| {
        PyValueError::new_err("out: expected a C-contiguous array, got a strided one")
    })?;
    pool::run(py, || run(xs, os))?.map_err(CoreError)?;
    Ok(Some(()))
}

/// Writes `x * mask / (1 - p')` into `out` (both 1-D, float32 or bfloat16 bits as uint16),
/// where the mask keeps element `i` by a counter-based draw from `seed` and `p'` is `p`
/// rounded to a multiple of 1/65536. Returns `p'`. `x` and `out` may not overlap.
#[pyfunction]
pub fn dropout<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    out: &Bound<'py, PyAny>,
    p: f64,
    seed: u64,
) -> PyResult<f64> {
    let d = Dropout::new(p, seed).map_err(CoreError)?;
    if apply::<f32>(py, x, out, |x, o| d.apply_f32(x, o))?.is_some()
        || apply::<u16>(py, x, out, |x, o| d.apply_bf16(x, o))?.is_some()
    {
        return Ok(d.p());
    }
    Err(PyTypeError::new_err(format!(
        "x: expected a 1-D float32 or uint16 (bfloat16 bits) array, got {}",
        x.get_type().name()?
    )))
}
