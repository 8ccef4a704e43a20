//! Writes GGUF v3 files: metadata, tensor directory, aligned tensor data.
//! Used for fixtures, the `quantize` command and tests of the reader.

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::metadata::Metadata;
use super::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, align_up, limits};
use super::value::{Array, Value};
use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

struct PendingTensor<'a> {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes them as one GGUF file. Tensor data
/// may be borrowed (e.g. from a memory-mapped input) to avoid copies.
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Metadata,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata entry (order of first insertion is kept).
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.insert(key, value);
        self
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor. `shape` is in ggml order (row length first); `data` must
    /// be exactly the bytes that shape takes in `ggml_type`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        shape: &[u64],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let data = data.into();
        let err = |msg: String| GgufError::Write(format!("tensor {name:?}: {msg}"));
        if shape.is_empty() || shape.len() > limits::MAX_DIMS as usize {
            return Err(err(format!("{} dimensions; 1 to 4 allowed", shape.len())));
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err("shape overflows".into()))?;
        if !shape[0].is_multiple_of(ggml_type.block_elements()) {
            return Err(err(format!(
                "row length {} is not a multiple of the {ggml_type} block size",
                shape[0]
            )));
        }
        let expected = ggml_type
            .bytes_for(elements)
            .ok_or_else(|| err("size overflows".into()))?;
        if data.len() as u64 != expected {
            return Err(err(format!(
                "{} bytes given, shape {shape:?} of {ggml_type} takes {expected}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(err("added twice".into()));
        }
        self.tensors.push(PendingTensor {
            name,
            shape: shape.to_vec(),
            ggml_type,
            data,
        });
        Ok(self)
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some(v) => Err(GgufError::Write(format!(
                "{ALIGNMENT_KEY} must be a u32 power of two, found {v}"
            ))),
        }
    }

    /// Writes the whole file to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let io = |e: io::Error| GgufError::Write(e.to_string());
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_string(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + t.data.len() as u64, alignment)
                .ok_or_else(|| GgufError::Write("data section overflows".into()))?;
        }
        // llama.cpp's writers pad before tensor data only when there is some: a
        // vocabulary-only file ends right after its metadata.
        if !self.tensors.is_empty() {
            pad(&mut header, alignment);
        }
        out.write_all(&header).map_err(io)?;

        let zeros = vec![0u8; alignment as usize];
        let mut written = 0u64;
        for (t, &at) in self.tensors.iter().zip(&offsets) {
            out.write_all(&zeros[..(at - written) as usize])
                .map_err(io)?;
            out.write_all(&t.data).map_err(io)?;
            written = at + t.data.len() as u64;
        }
        // Pad the last tensor as well, like ggml does, so files concatenate cleanly.
        out.write_all(&zeros[..(offset - written) as usize])
            .map_err(io)?;
        out.flush().map_err(io)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Writes to `path` through a temporary file in the same folder that is
    /// renamed into place only when complete.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let tmp = path.with_file_name(format!(".{file_name}.partial.{}", std::process::id()));
        let result = (|| {
            let mut f = io::BufWriter::new(std::fs::File::create(&tmp).map_err(io_err)?);
            self.write_to(&mut f)?;
            f.into_inner()
                .map_err(|e| io_err(e.into_error()))?
                .sync_all()
                .map_err(io_err)?;
            std::fs::rename(&tmp, path).map_err(io_err)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn pad(buf: &mut Vec<u8>, alignment: u64) {
    let len = buf.len() as u64;
    let target = len.div_ceil(alignment) * alignment;
    buf.resize(target as usize, 0);
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_string(buf, s),
        Value::Array(a) => put_array(buf, a),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&a.element_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! nums {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => nums!(v),
        Array::U16(v) => nums!(v),
        Array::I16(v) => nums!(v),
        Array::U32(v) => nums!(v),
        Array::I32(v) => nums!(v),
        Array::F32(v) => nums!(v),
        Array::U64(v) => nums!(v),
        Array::I64(v) => nums!(v),
        Array::F64(v) => nums!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_string(buf, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(buf, inner)),
    }
}
