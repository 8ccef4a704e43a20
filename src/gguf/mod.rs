//! The GGUF file format: reading (hardened against hostile files) and writing.
//!
//! Entry points: [`GgufFile::open`] (memory-mapped), [`GgufFile::from_bytes`]
//! (in memory), and [`GgufWriter`].

mod error;
mod file;
mod ggml_type;
mod metadata;
pub mod reader;
mod tensor;
mod value;
mod writer;

pub use error::{FormatError, GgufError};
pub use file::GgufFile;
pub use ggml_type::{GgmlType, UnknownType};
pub use metadata::{Metadata, MetadataError};
pub use reader::{DEFAULT_ALIGNMENT, limits};
pub use tensor::{TensorInfo, TensorSummary, TensorView};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorStream};
