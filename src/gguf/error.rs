//! Errors from reading or writing GGUF files.

use super::metadata::MetadataError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// What is wrong with the bytes of a GGUF file. Each variant names the field,
/// key or tensor at fault.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FormatError {
    #[error(
        "not a GGUF file: it starts with \"{}\" instead of \"GGUF\" (rusty-llm runs .gguf models, as llama.cpp does)",
        found.escape_ascii()
    )]
    NotGguf { found: [u8; 4] },
    #[error(
        "big-endian GGUF file: rusty-llm reads only little-endian GGUF (convert it again without --bigendian)"
    )]
    BigEndian,
    #[error(
        "GGUF version {0} is not supported: only versions 2 and 3 are (re-convert the model with a current llama.cpp)"
    )]
    UnsupportedVersion(u32),
    #[error("file is truncated: it ends at byte {offset} while reading {what}")]
    Truncated { offset: u64, what: String },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("{what} {count} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("metadata key {key:?} {problem}")]
    BadMetadata { key: String, problem: String },
    #[error("tensor {name:?} {problem}")]
    BadTensor { name: String, problem: String },
    #[error("tensor {name:?} has unknown ggml type id {id} (this build knows ids 0-39)")]
    UnknownTensorType { name: String, id: u32 },
    #[error(
        "tensor {name:?} has ggml type id {id} ({old}), a layout ggml has removed; re-quantize the model with a current llama.cpp"
    )]
    RetiredTensorType {
        name: String,
        id: u32,
        old: &'static str,
    },
    #[error(
        "tensor {name:?} lies outside the data section: bytes {offset}..+{size}, but the data section holds {data_len} bytes (truncated file?)"
    )]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// A GGUF file that could not be opened, read or written.
#[derive(Debug, Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Format { path: PathBuf, source: FormatError },
    #[error("GGUF writer: {0}")]
    Write(String),
}
