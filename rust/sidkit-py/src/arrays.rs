//! Borrowing numpy arrays' data (the Python layer makes inputs C-contiguous first).

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

fn strided(arg: &str) -> pyo3::PyErr {
    PyValueError::new_err(format!(
        "{arg}: expected a C-contiguous array, got a strided one"
    ))
}

/// The data of a C-contiguous 2-D array. (`as_slice` alone also accepts a Fortran-ordered
/// array, whose data would then be read transposed.)
pub fn slice<'a, T: numpy::Element>(
    arg: &str,
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<&'a [T]> {
    if !a.is_c_contiguous() {
        return Err(strided(arg));
    }
    a.as_slice().map_err(|_| strided(arg))
}

/// The data of a writable C-contiguous 2-D array.
pub fn slice_mut<'a, T: numpy::Element>(
    arg: &str,
    a: &'a mut PyReadwriteArray2<'_, T>,
) -> PyResult<&'a mut [T]> {
    if !a.is_c_contiguous() {
        return Err(strided(arg));
    }
    a.as_slice_mut().map_err(|_| strided(arg))
}

/// A copy of a C-contiguous array's data, taken while attached. Index arrays (codes, labels,
/// item ids) are copied before the core runs detached: another Python thread may write a
/// numpy array meanwhile, and a value checked before could index out of bounds after. (Float
/// data is read in place: a concurrent write changes the numbers, never an index.)
pub fn owned<T: numpy::Element + Copy, D: numpy::ndarray::Dimension>(
    arg: &str,
    a: &numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<Vec<T>> {
    if !a.is_c_contiguous() {
        return Err(strided(arg));
    }
    Ok(a.as_slice().map_err(|_| strided(arg))?.to_vec())
}

/// The data of a C-contiguous 1-D array.
pub fn slice1<'a, T: numpy::Element>(
    arg: &str,
    a: &'a PyReadonlyArray1<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| strided(arg))
}
