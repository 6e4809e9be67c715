//! The one error type of the core. Every variant names the argument it is about, what was
//! expected and what was received, so the Python binding can turn it into a readable
//! `ValueError` / `TypeError` / `IndexError` without adding context of its own.

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A shape or size does not match what the call needs (maps to `ValueError`).
    #[error("{arg}: expected {expected}, got {got}")]
    Shape {
        arg: &'static str,
        expected: String,
        got: String,
    },
    /// A value is outside its valid range, e.g. a code >= the codebook size (maps to `ValueError`).
    #[error("{arg}: expected {expected}, got {got}")]
    Value {
        arg: &'static str,
        expected: String,
        got: String,
    },
    /// An allocation the call needs failed (maps to `MemoryError`).
    #[error("{arg}: could not allocate {what}")]
    Memory { arg: &'static str, what: String },
    /// A NaN or infinity in an input that must be finite (maps to `ValueError`).
    #[error("{arg}: expected finite values, got {what} at flat index {index}")]
    NonFinite {
        arg: &'static str,
        what: &'static str,
        index: usize,
    },
}

impl Error {
    pub(crate) fn shape(
        arg: &'static str,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            arg,
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    pub(crate) fn memory(arg: &'static str, what: impl Into<String>) -> Self {
        Error::Memory {
            arg,
            what: what.into(),
        }
    }

    pub(crate) fn value(
        arg: &'static str,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Self {
        Error::Value {
            arg,
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}

/// Largest magnitude accepted in embeddings and codebooks: beyond it, squared distances over
/// thousands of dimensions would overflow f32.
pub const MAX_ABS: f32 = 1e15;

/// Fails with [`Error::NonFinite`] at the first NaN, infinity or value beyond [`MAX_ABS`].
pub fn check_finite(arg: &'static str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| v.is_nan() || v.abs() > MAX_ABS) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            arg,
            what: match data[index] {
                v if v.is_nan() => "NaN",
                v if v.is_infinite() => "inf",
                _ => "a value beyond ±1e15",
            },
            index,
        }),
    }
}
