//! Parses a GGUF header, metadata and tensor directory out of a byte slice.
//!
//! The file is treated as hostile. Every length is capped before anything is
//! allocated for it, every size and offset is computed with checked arithmetic,
//! and every tensor must lie inside the data section without overlapping another.
//! Layout (little-endian, GGUF v2/v3; see ggml's `docs/gguf.md`):
//!
//! ```text
//! "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv × (key: string, type: u32, value)
//! n_tensors × (name: string, n_dims u32, dims u64 × n_dims, type u32, offset u64)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor's offset is relative to the start of this section
//! string = len u64 + UTF-8 bytes;  array = elem_type u32 + count u64 + elements
//! ```

use super::error::FormatError;
use super::ggml_type::{GgmlType, UnknownType};
use super::metadata::Metadata;
use super::tensor::TensorInfo;
use super::value::{Array, Value, ValueType};
use std::collections::HashMap;

/// Caps on what a file may declare. Real models stay far below each of them; a
/// file beyond them is refused before any allocation is made for it.
pub mod limits {
    /// Longest metadata key or tensor name.
    pub const MAX_NAME_BYTES: u64 = 1 << 16;
    /// Longest string value (chat templates are tens of KiB).
    pub const MAX_STRING_BYTES: u64 = 1 << 24;
    /// Most elements in one array (vocabularies are ~262k tokens, merges ~1M).
    pub const MAX_ARRAY_LEN: u64 = 1 << 24;
    /// Deepest nesting of arrays inside arrays.
    pub const MAX_NESTING: usize = 4;
    /// Most metadata entries.
    pub const MAX_KV: u64 = 1 << 16;
    /// Most tensors.
    pub const MAX_TENSORS: u64 = 1 << 20;
    /// Most dimensions per tensor (ggml's `GGML_MAX_DIMS`).
    pub const MAX_DIMS: u32 = 4;
    /// Largest `general.alignment` accepted.
    pub const MAX_ALIGNMENT: u64 = 1 << 20;
}

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Everything in a GGUF file except the tensor bytes.
#[derive(Debug, Clone)]
pub struct Layout {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
}

/// Parses `bytes`, the whole file. Tensor bounds are checked against its length.
pub fn parse(bytes: &[u8]) -> Result<Layout, FormatError> {
    let mut r = Reader { buf: bytes, pos: 0 };

    let magic: [u8; 4] = r.array("the magic number")?;
    if magic != MAGIC {
        return Err(FormatError::NotGguf { found: magic });
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        // A big-endian file stores its version big-endian too.
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(FormatError::BigEndian),
        v => return Err(FormatError::UnsupportedVersion(v)),
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    check_limit("tensor count", n_tensors, limits::MAX_TENSORS)?;
    check_limit("metadata entry count", n_kv, limits::MAX_KV)?;

    let mut metadata = Metadata::new();
    for _ in 0..n_kv {
        let key = r.string(limits::MAX_NAME_BYTES, "a metadata key")?;
        let value = read_value(&mut r, &key)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(FormatError::BadMetadata {
                key,
                problem: "appears twice".into(),
            });
        }
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= limits::MAX_ALIGNMENT => a,
            _ => {
                return Err(FormatError::BadMetadata {
                    key: ALIGNMENT_KEY.into(),
                    problem: format!(
                        "must be a power of two up to {}, found {v}",
                        limits::MAX_ALIGNMENT
                    ),
                });
            }
        },
    };

    let mut tensors = Vec::with_capacity(cap_hint(n_tensors));
    let mut tensor_index = HashMap::with_capacity(cap_hint(n_tensors));
    for _ in 0..n_tensors {
        let info = read_tensor_info(&mut r)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(FormatError::BadTensor {
                name: info.name,
                problem: "appears twice in the tensor directory".into(),
            });
        }
        tensors.push(info);
    }

    let data_offset = align_up(r.pos as u64, alignment).ok_or(FormatError::Truncated {
        offset: r.pos as u64,
        what: "the padding before tensor data".into(),
    })?;
    let file_len = bytes.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(FormatError::Truncated {
            offset: file_len,
            what: "the padding before tensor data".into(),
        });
    }
    check_tensor_placement(&tensors, alignment, file_len.saturating_sub(data_offset))?;

    Ok(Layout {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

fn check_limit(what: &'static str, count: u64, limit: u64) -> Result<(), FormatError> {
    if count > limit {
        return Err(FormatError::LimitExceeded { what, count, limit });
    }
    Ok(())
}

/// A capacity to reserve for `n` declared items: never more than a small bound,
/// so that a lying count costs nothing until its items are actually read.
fn cap_hint(n: u64) -> usize {
    n.min(4096) as usize
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    Some(x.checked_add(alignment - 1)? / alignment * alignment)
}

fn read_value(r: &mut Reader<'_>, key: &str) -> Result<Value, FormatError> {
    let type_id = r.u32_for(key, "its type")?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| FormatError::BadMetadata {
        key: key.into(),
        problem: format!("unknown value type id {type_id}"),
    })?;
    Ok(match ty {
        ValueType::U8 => Value::U8(r.num(key)?),
        ValueType::I8 => Value::I8(r.num(key)?),
        ValueType::U16 => Value::U16(r.num(key)?),
        ValueType::I16 => Value::I16(r.num(key)?),
        ValueType::U32 => Value::U32(r.num(key)?),
        ValueType::I32 => Value::I32(r.num(key)?),
        ValueType::F32 => Value::F32(r.num(key)?),
        ValueType::U64 => Value::U64(r.num(key)?),
        ValueType::I64 => Value::I64(r.num(key)?),
        ValueType::F64 => Value::F64(r.num(key)?),
        ValueType::Bool => Value::Bool(read_bool(r, key)?),
        ValueType::String => Value::String(r.value_string(key)?),
        ValueType::Array => Value::Array(read_array(r, key, 1)?),
    })
}

fn read_bool(r: &mut Reader<'_>, key: &str) -> Result<bool, FormatError> {
    match r.num::<u8>(key)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(FormatError::BadMetadata {
            key: key.into(),
            problem: format!("bool byte is {b}, expected 0 or 1"),
        }),
    }
}

fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<Array, FormatError> {
    if depth > limits::MAX_NESTING {
        return Err(FormatError::BadMetadata {
            key: key.into(),
            problem: format!("arrays nested deeper than {}", limits::MAX_NESTING),
        });
    }
    let type_id = r.u32_for(key, "its array element type")?;
    let elem = ValueType::from_id(type_id).ok_or_else(|| FormatError::BadMetadata {
        key: key.into(),
        problem: format!("unknown array element type id {type_id}"),
    })?;
    let len = r.u64_for(key, "its array length")?;
    if len > limits::MAX_ARRAY_LEN {
        return Err(FormatError::BadMetadata {
            key: key.into(),
            problem: format!(
                "array length {len} exceeds the limit of {}",
                limits::MAX_ARRAY_LEN
            ),
        });
    }
    // Fixed-size elements: the whole array must be present before we allocate.
    if let Some(size) = elem.fixed_size() {
        let bytes = len * size as u64; // both capped: no overflow
        if bytes > r.remaining() {
            return Err(r.truncated(format!("the array value of metadata key {key:?}")));
        }
    }
    let n = len as usize;
    Ok(match elem {
        ValueType::U8 => Array::U8(r.nums(key, n)?),
        ValueType::I8 => Array::I8(r.nums(key, n)?),
        ValueType::U16 => Array::U16(r.nums(key, n)?),
        ValueType::I16 => Array::I16(r.nums(key, n)?),
        ValueType::U32 => Array::U32(r.nums(key, n)?),
        ValueType::I32 => Array::I32(r.nums(key, n)?),
        ValueType::F32 => Array::F32(r.nums(key, n)?),
        ValueType::U64 => Array::U64(r.nums(key, n)?),
        ValueType::I64 => Array::I64(r.nums(key, n)?),
        ValueType::F64 => Array::F64(r.nums(key, n)?),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(r, key)?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(cap_hint(len));
            for _ in 0..n {
                v.push(r.value_string(key)?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(cap_hint(len));
            for _ in 0..n {
                v.push(read_array(r, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

fn read_tensor_info(r: &mut Reader<'_>) -> Result<TensorInfo, FormatError> {
    let name = r.string(limits::MAX_NAME_BYTES, "a tensor name")?;
    let bad = |problem: String| FormatError::BadTensor {
        name: name.clone(),
        problem,
    };
    let n_dims = r.u32(&format!("the dimension count of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > limits::MAX_DIMS {
        return Err(bad(format!(
            "has {n_dims} dimensions; 1 to {} are allowed",
            limits::MAX_DIMS
        )));
    }
    let mut dims = [1u64; 4];
    for d in dims.iter_mut().take(n_dims as usize) {
        *d = r.u64(&format!("the shape of tensor {name:?}"))?;
    }
    let type_id = r.u32(&format!("the type of tensor {name:?}"))?;
    let offset = r.u64(&format!("the data offset of tensor {name:?}"))?;

    let ggml_type = GgmlType::from_id(type_id).map_err(|why| match why {
        UnknownType::Retired(old) => FormatError::RetiredTensorType {
            name: name.clone(),
            id: type_id,
            old,
        },
        UnknownType::Unassigned => FormatError::UnknownTensorType {
            name: name.clone(),
            id: type_id,
        },
    })?;
    // ggml keeps element counts in i64.
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad(format!("shape {:?} overflows", &dims[..n_dims as usize])))?;
    if !dims[0].is_multiple_of(ggml_type.block_elements()) {
        return Err(bad(format!(
            "row length {} is not a multiple of the {ggml_type} block size {}",
            dims[0],
            ggml_type.block_elements()
        )));
    }
    let size = ggml_type.bytes_for(elements).ok_or_else(|| {
        bad(format!(
            "byte size of {elements} {ggml_type} elements overflows"
        ))
    })?;
    Ok(TensorInfo {
        name,
        n_dims: n_dims as usize,
        dims,
        ggml_type,
        offset,
        size,
    })
}

/// Each tensor must start aligned, end inside the data section, and not overlap
/// its neighbours.
fn check_tensor_placement(
    tensors: &[TensorInfo],
    alignment: u64,
    data_len: u64,
) -> Result<(), FormatError> {
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(FormatError::BadTensor {
                name: t.name.clone(),
                problem: format!("data offset {} is not {alignment}-byte aligned", t.offset),
            });
        }
        match t.offset.checked_add(t.size) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(FormatError::TensorOutOfBounds {
                    name: t.name.clone(),
                    offset: t.offset,
                    size: t.size,
                    data_len,
                });
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    order.sort_unstable_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.size > b.offset {
            return Err(FormatError::BadTensor {
                name: b.name.clone(),
                problem: format!("data overlaps tensor {:?}", a.name),
            });
        }
    }
    Ok(())
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Little-endian numbers of fixed width.
trait FromLe: Sized {
    const SIZE: usize;
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! from_le {
    ($($t:ty),*) => {$(
        impl FromLe for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
from_le!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: String) -> FormatError {
        FormatError::Truncated {
            offset: self.buf.len() as u64,
            what,
        }
    }

    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], FormatError> {
        if n > self.buf.len() - self.pos {
            return Err(self.truncated(what()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, || what.into())?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn u32_for(&mut self, key: &str, part: &str) -> Result<u32, FormatError> {
        let b = self.take(4, || format!("{part} of metadata key {key:?}"))?;
        Ok(<u32 as FromLe>::read_le(b))
    }

    fn u64_for(&mut self, key: &str, part: &str) -> Result<u64, FormatError> {
        let b = self.take(8, || format!("{part} of metadata key {key:?}"))?;
        Ok(<u64 as FromLe>::read_le(b))
    }

    fn num<T: FromLe>(&mut self, key: &str) -> Result<T, FormatError> {
        let b = self.take(T::SIZE, || format!("the value of metadata key {key:?}"))?;
        Ok(T::read_le(b))
    }

    fn nums<T: FromLe>(&mut self, key: &str, n: usize) -> Result<Vec<T>, FormatError> {
        let bytes = self.take(n * T::SIZE, || {
            format!("the array value of metadata key {key:?}")
        })?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::read_le).collect())
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String, FormatError> {
        let len = self.u64(&format!("the length of {what}"))?;
        if len > max {
            return Err(FormatError::LimitExceeded {
                what: "string length",
                count: len,
                limit: max,
            });
        }
        let bytes = self.take(len as usize, || what.into())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::InvalidUtf8 {
            what: what.into(),
            offset: (self.pos - bytes.len()) as u64,
        })
    }

    fn value_string(&mut self, key: &str) -> Result<String, FormatError> {
        let len = self.u64_for(key, "a string length")?;
        if len > limits::MAX_STRING_BYTES {
            return Err(FormatError::BadMetadata {
                key: key.into(),
                problem: format!(
                    "string of {len} bytes exceeds the limit of {}",
                    limits::MAX_STRING_BYTES
                ),
            });
        }
        let bytes = self.take(len as usize, || {
            format!("a string value of metadata key {key:?}")
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::BadMetadata {
            key: key.into(),
            problem: format!(
                "string at byte {} is not valid UTF-8",
                self.pos - bytes.len()
            ),
        })
    }
}
