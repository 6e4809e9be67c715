//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::PyErr;
use sidkit_core::Error;

/// Newtype so `?` can turn a core error into a `PyErr` (the orphan rule forbids the direct impl).
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e.0 {
            Error::Shape { .. } | Error::Value { .. } | Error::NonFinite { .. } => {
                PyValueError::new_err(e.0.to_string())
            }
            Error::Memory { .. } => PyMemoryError::new_err(e.0.to_string()),
        }
    }
}
