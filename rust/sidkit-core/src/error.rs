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

    /// The same error about `to` where it was about `from` (a helper that validates an
    /// argument under its own name, called for another argument).
    pub fn renamed(mut self, from: &'static str, to: &'static str) -> Self {
        let arg = match &mut self {
            Error::Shape { arg, .. }
            | Error::Value { arg, .. }
            | Error::Memory { arg, .. }
            | Error::NonFinite { arg, .. } => arg,
        };
        if *arg == from {
            *arg = to;
        }
        self
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
///
/// The scan is branch-free over fixed blocks (so it vectorises) and runs the blocks in
/// parallel; only a block that holds a bad value is searched for its first one. It is called
/// on every input of every k-means iteration, so a scalar early-exit scan cost a tenth of a
/// Lloyd iteration's time.
pub fn check_finite(arg: &'static str, data: &[f32]) -> Result<()> {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 14;
    // True for NaN, ±inf and values beyond the limit; `|`, not `||`, keeps it branch-free.
    let out = |v: &f32| v.is_nan() | (v.abs() > MAX_ABS);
    let bad = |block: &[f32]| block.iter().fold(false, |b, v| b | out(v));
    let first_block = if data.len() <= 4 * BLOCK {
        data.chunks(BLOCK).position(bad)
    } else {
        data.par_chunks(BLOCK).position_first(bad)
    };
    let first = first_block.and_then(|b| {
        let start = b * BLOCK;
        data[start..(start + BLOCK).min(data.len())]
            .iter()
            .position(out)
            .map(|i| start + i)
    });
    match first {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bad value a scalar scan finds, for every kind of bad value, at block edges,
    /// in the short (sequential) and long (parallel) paths, with later bad values present.
    #[test]
    fn check_finite_names_the_first_bad_value() {
        let scalar = |d: &[f32]| d.iter().position(|v| v.is_nan() || v.abs() > MAX_ABS);
        for n in [0usize, 1, 17, 16_384, 65_536, 65_537, 300_001] {
            let clean: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e14).collect();
            assert!(check_finite("x", &clean).is_ok());
            for (bad, what) in [
                (f32::NAN, "NaN"),
                (f32::INFINITY, "inf"),
                (f32::NEG_INFINITY, "inf"),
                (-2e15, "a value beyond ±1e15"),
            ] {
                for at in [
                    0,
                    16_383,
                    16_384,
                    65_535,
                    65_536,
                    n / 2,
                    n.saturating_sub(1),
                ] {
                    if at >= n {
                        continue;
                    }
                    let mut d = clean.clone();
                    d[at] = bad;
                    if at + 3 < n {
                        d[n - 1] = f32::NAN; // a later bad value must not win
                    }
                    let want = scalar(&d).unwrap();
                    match check_finite("x", &d) {
                        Err(Error::NonFinite {
                            arg,
                            what: w,
                            index,
                        }) => {
                            assert_eq!((arg, w, index), ("x", what, want));
                        }
                        other => panic!("n = {n}, at = {at}: {other:?}"),
                    }
                }
            }
        }
        // The limit itself is accepted.
        assert!(check_finite("x", &[MAX_ABS, -MAX_ABS]).is_ok());
    }
}
