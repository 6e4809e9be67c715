//! Residual-quantization codebooks: L levels of K_l codewords of dimension D, stored as one
//! row-major (sum K_l, D) float32 matrix. Ragged levels (different K_l) are allowed.

use std::borrow::Cow;

use crate::error::{check_finite, Error, Result};
use crate::kernels::sq_norm;

/// Largest codebook size a level may have: codes are stored as `u16`.
pub const MAX_CODEBOOK_SIZE: usize = 1 << 16;

/// Validated codebooks with their squared norms precomputed.
#[derive(Debug, Clone)]
pub struct Codebooks<'a> {
    data: Cow<'a, [f32]>,
    dim: usize,
    sizes: Vec<usize>,
    /// Row offset of each level in `data`, `levels + 1` entries.
    offsets: Vec<usize>,
    /// `||c||²` for every codeword, aligned with the rows of `data`.
    norms: Vec<f32>,
    /// Largest `||c||²` of each level (used to bound rounding error).
    max_norm: Vec<f32>,
}

impl<'a> Codebooks<'a> {
    /// Wraps `data`, the row-major concatenation of levels of `sizes[l]` rows of `dim` floats.
    pub fn new(data: impl Into<Cow<'a, [f32]>>, sizes: &[usize], dim: usize) -> Result<Self> {
        let data = data.into();
        if sizes.is_empty() {
            return Err(Error::shape(
                "codebooks",
                "at least one level (L >= 1)",
                "L = 0",
            ));
        }
        if dim == 0 {
            return Err(Error::shape("codebooks", "dimension D >= 1", "D = 0"));
        }
        for (l, &k) in sizes.iter().enumerate() {
            if k == 0 || k > MAX_CODEBOOK_SIZE {
                return Err(Error::value(
                    "codebooks",
                    format!("1 <= codebook size <= {MAX_CODEBOOK_SIZE} at every level"),
                    format!("K = {k} at level {l}"),
                ));
            }
        }
        let rows: usize = sizes.iter().sum();
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(Error::shape(
                "codebooks",
                format!("{rows} x {dim} = {} values", rows as u128 * dim as u128),
                data.len(),
            ));
        }
        check_finite("codebooks", &data)?;
        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        offsets.push(0);
        for &k in sizes {
            offsets.push(offsets.last().copied().unwrap_or(0) + k);
        }
        let norms: Vec<f32> = data.chunks_exact(dim).map(|c| sq_norm(c) as f32).collect();
        let max_norm = offsets
            .windows(2)
            .map(|w| norms[w[0]..w[1]].iter().copied().fold(0.0, f32::max))
            .collect();
        Ok(Self {
            data,
            dim,
            sizes: sizes.to_vec(),
            offsets,
            norms,
            max_norm,
        })
    }

    pub fn levels(&self) -> usize {
        self.sizes.len()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The (K_l, D) row-major codewords of level `l`.
    pub fn level(&self, l: usize) -> &[f32] {
        &self.data[self.offsets[l] * self.dim..self.offsets[l + 1] * self.dim]
    }

    /// Codeword `code` of level `l`.
    pub fn codeword(&self, l: usize, code: usize) -> &[f32] {
        let row = self.offsets[l] + code;
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// `||c||²` of every codeword of level `l`.
    pub fn norms(&self, l: usize) -> &[f32] {
        &self.norms[self.offsets[l]..self.offsets[l + 1]]
    }

    pub(crate) fn max_norm(&self, l: usize) -> f32 {
        self.max_norm[l]
    }
}
