//! Entries of the tensor directory and zero-copy views of their data.

use super::ggml_type::GgmlType;
use serde::Serialize;

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Number of meaningful entries in `dims`, 1 to 4.
    pub n_dims: usize,
    /// ggml order: `dims[0]` is the row length (contiguous), unused entries are 1.
    pub dims: [u64; 4],
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Byte size, from the type's block geometry.
    pub size: u64,
}

impl TensorInfo {
    pub fn shape(&self) -> &[u64] {
        &self.dims[..self.n_dims]
    }

    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (`dims[0]`) and the number of rows (everything else).
    pub fn rows(&self) -> (u64, u64) {
        (self.dims[0], self.dims[1..].iter().product())
    }
}

/// A tensor's directory entry with its bytes, borrowed from the file's storage
/// (a memory map or an in-memory buffer) without copying.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

/// A serializable summary of a tensor, for `--list-tensors` and reports.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub ggml_type: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
}

impl From<&TensorInfo> for TensorSummary {
    fn from(t: &TensorInfo) -> Self {
        Self {
            name: t.name.clone(),
            ggml_type: t.ggml_type.name().into(),
            shape: t.shape().to_vec(),
            bytes: t.size,
        }
    }
}
