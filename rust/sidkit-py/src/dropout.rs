//! Counter-based dropout (see `sidkit_core::dropout`), applied into a caller-owned array.

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
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
    let xs = slice1("x", &x)?;
    let dtype = x.dtype().str()?;
    let Ok(out) = out.cast::<PyArray1<T>>() else {
        return Err(PyTypeError::new_err(format!(
            "out: expected a 1-D array of x's dtype ({dtype}), got {}",
            describe(out)?
        )));
    };
    if !out.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "out: expected a C-contiguous array, got a strided one",
        ));
    }
    // Two numpy views of one torch tensor have different bases, so numpy's borrow tracking
    // does not see them overlap: compare the memory ranges.
    let size = std::mem::size_of::<T>();
    let (xa, oa) = (xs.as_ptr() as usize, out.data() as usize);
    if !xs.is_empty()
        && out.len() > 0
        && xa < oa + out.len() * size
        && oa < xa + std::mem::size_of_val(xs)
    {
        return Err(PyValueError::new_err(
            "out: expected an array that does not overlap x, got one that shares its memory",
        ));
    }
    let Ok(mut out) = out.try_readwrite() else {
        return Err(PyValueError::new_err(
            "out: expected a writable array, got a read-only one",
        ));
    };
    let os = out.as_slice_mut().map_err(|_| {
        PyValueError::new_err("out: expected a C-contiguous array, got a strided one")
    })?;
    pool::run(py, || run(xs, os))?.map_err(CoreError)?;
    Ok(Some(()))
}

fn describe(a: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(match a.cast::<numpy::PyUntypedArray>() {
        Ok(a) => format!("a {}-D {} array", a.ndim(), a.dtype().str()?),
        Err(_) => a.get_type().name()?.to_string(),
    })
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
        describe(x)?
    )))
}
