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
    size: u64,
    /// `None` for a tensor declared with [`GgufWriter::declare_tensor`], whose
    /// bytes are streamed later through [`TensorStream`].
    data: Option<Cow<'a, [u8]>>,
}

/// Collects metadata and tensors, then writes them as one GGUF file. Tensor data
/// may be borrowed (e.g. from a memory-mapped input) to avoid copies, or
/// declared up front and streamed tensor by tensor ([`GgufWriter::stream_file`])
/// so that a multi-gigabyte model never has to be in memory at once.
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
        let data = data.into();
        self.push_tensor(name.into(), ggml_type, shape, Some(data))
    }

    /// Declares a tensor whose bytes are not given yet: they are written in
    /// order through the [`TensorStream`] that [`GgufWriter::stream_file`] returns.
    pub fn declare_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        shape: &[u64],
    ) -> Result<&mut Self, GgufError> {
        self.push_tensor(name.into(), ggml_type, shape, None)
    }

    fn push_tensor(
        &mut self,
        name: String,
        ggml_type: GgmlType,
        shape: &[u64],
        data: Option<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
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
        if let Some(data) = &data
            && data.len() as u64 != expected
        {
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
            size: expected,
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

    /// The header, metadata and tensor directory, padded to the data section;
    /// each tensor's offset in the data section; the padded data section size.
    fn header(&self) -> Result<(Vec<u8>, Vec<u64>, u64), GgufError> {
        let alignment = self.alignment()?;
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
            offset = align_up(offset + t.size, alignment)
                .ok_or_else(|| GgufError::Write("data section overflows".into()))?;
        }
        // llama.cpp's writers pad before tensor data only when there is some: a
        // vocabulary-only file ends right after its metadata.
        if !self.tensors.is_empty() {
            pad(&mut header, alignment);
        }
        Ok((header, offsets, offset))
    }

    /// Writes the whole file to `out`. Every tensor must have its data (none
    /// may be merely declared).
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), GgufError> {
        let io = |e: io::Error| GgufError::Write(e.to_string());
        let (header, offsets, end) = self.header()?;
        out.write_all(&header).map_err(io)?;
        let mut written = 0u64;
        for (t, &at) in self.tensors.iter().zip(&offsets) {
            let Some(data) = &t.data else {
                return Err(GgufError::Write(format!(
                    "tensor {:?} was declared without data; stream it with stream_file",
                    t.name
                )));
            };
            write_zeros(out, at - written).map_err(io)?;
            out.write_all(data).map_err(io)?;
            written = at + t.size;
        }
        // Pad the last tensor as well, like ggml does, so files concatenate cleanly.
        write_zeros(out, end - written).map_err(io)?;
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
        let mut partial = PartialFile::create(path)?;
        self.write_to(&mut partial.out)?;
        partial.commit()
    }

    /// Starts writing to `path` like [`GgufWriter::write_file`] (a temporary
    /// file renamed into place by [`TensorStream::finish`]), but with the
    /// tensors' bytes given afterwards, in declaration order, so they need not
    /// all be in memory. Every tensor must have been declared with
    /// [`GgufWriter::declare_tensor`].
    pub fn stream_file(&self, path: impl AsRef<Path>) -> Result<TensorStream, GgufError> {
        if let Some(t) = self.tensors.iter().find(|t| t.data.is_some()) {
            return Err(GgufError::Write(format!(
                "tensor {:?} has data; stream_file takes only declared tensors",
                t.name
            )));
        }
        let (header, offsets, end) = self.header()?;
        let mut partial = PartialFile::create(path.as_ref())?;
        let io = partial.io_err();
        partial.out.write_all(&header).map_err(io)?;
        Ok(TensorStream {
            partial,
            tensors: self
                .tensors
                .iter()
                .zip(offsets)
                .map(|(t, at)| (t.name.clone(), at, t.size))
                .collect(),
            next: 0,
            written: 0,
            end,
        })
    }
}

/// A file being written beside its final path; removed unless committed.
struct PartialFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    out: io::BufWriter<std::fs::File>,
    committed: bool,
}

impl PartialFile {
    fn create(path: &Path) -> Result<Self, GgufError> {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let tmp = path.with_file_name(format!(".{file_name}.partial.{}", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            // Large buffer: tensors arrive in multi-megabyte pieces anyway.
            out: io::BufWriter::with_capacity(1 << 20, file),
            committed: false,
        })
    }

    fn io_err(&self) -> impl Fn(io::Error) -> GgufError + use<> {
        let path = self.path.clone();
        move |source| GgufError::Io {
            path: path.clone(),
            source,
        }
    }

    fn commit(mut self) -> Result<(), GgufError> {
        let io = self.io_err();
        self.out.flush().map_err(&io)?;
        self.out.get_ref().sync_all().map_err(&io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(&io)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The data section of a file started by [`GgufWriter::stream_file`]: takes
/// each declared tensor's bytes in order, in as many pieces as convenient.
/// Dropped before [`TensorStream::finish`], it removes the partial file.
pub struct TensorStream {
    partial: PartialFile,
    /// Name, offset in the data section, size.
    tensors: Vec<(String, u64, u64)>,
    /// The tensor now being written.
    next: usize,
    /// Bytes of the data section written so far.
    written: u64,
    end: u64,
}

impl TensorStream {
    /// Appends `bytes` to the current tensor, moving on to the next one when
    /// it is complete. A piece may not run past the end of its tensor.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.skip_empty_tensors();
        let Some((name, at, size)) = self.tensors.get(self.next) else {
            return Err(GgufError::Write(format!(
                "{} bytes past the last tensor",
                bytes.len()
            )));
        };
        let (at, size) = (*at, *size);
        let io = self.partial.io_err();
        if self.written < at {
            write_zeros(&mut self.partial.out, at - self.written).map_err(&io)?;
            self.written = at;
        }
        let left = at + size - self.written;
        if bytes.len() as u64 > left {
            return Err(GgufError::Write(format!(
                "tensor {name:?}: {} bytes given, {left} left of its {size}",
                bytes.len()
            )));
        }
        self.partial.out.write_all(bytes).map_err(&io)?;
        self.written += bytes.len() as u64;
        if self.written == at + size {
            self.next += 1;
        }
        Ok(())
    }

    /// Zero-sized tensors are complete without a write.
    fn skip_empty_tensors(&mut self) {
        while let Some((_, at, 0)) = self.tensors.get(self.next) {
            self.written = self.written.max(*at);
            self.next += 1;
        }
    }

    /// Checks every tensor was written in full, pads, syncs, and renames the
    /// file into place.
    pub fn finish(mut self) -> Result<(), GgufError> {
        self.skip_empty_tensors();
        if let Some((name, at, size)) = self.tensors.get(self.next) {
            return Err(GgufError::Write(format!(
                "tensor {name:?}: {} of its {size} bytes written",
                self.written.saturating_sub(*at)
            )));
        }
        let io = self.partial.io_err();
        write_zeros(&mut self.partial.out, self.end - self.written).map_err(&io)?;
        self.partial.commit()
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
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
