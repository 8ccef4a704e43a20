//! An opened GGUF file: parsed layout plus the bytes behind it, either memory
//! mapped (zero-copy, the default) or held in memory (tests, WASM).

use super::error::{FormatError, GgufError};
use super::metadata::Metadata;
use super::reader::{self, Layout};
use super::tensor::{TensorInfo, TensorView};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

enum Storage {
    #[cfg(not(target_family = "wasm"))]
    Mapped(memmap2::Mmap),
    Owned(AlignedBytes),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_family = "wasm"))]
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v.bytes(),
        }
    }
}

/// Bytes in a buffer aligned like a page-aligned map would be for tensor data
/// (8 bytes), so f32/f16 weights can be viewed in place rather than copied.
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn zeroed(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// A parsed GGUF file. Parsing reads only the header, metadata and tensor
/// directory; tensor bytes are touched when a caller asks for them.
pub struct GgufFile {
    path: Option<PathBuf>,
    storage: Storage,
    layout: Layout,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.layout.version)
            .field("metadata_entries", &self.layout.metadata.len())
            .field("tensors", &self.layout.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let started = Instant::now();
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this process. If another
        // process truncates the file while it is mapped, reads past the new end
        // fault (SIGBUS); every mmap-based model loader shares that contract.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        tracing::debug!(
            "open and map {}: {:.2} ms ({} bytes)",
            path.display(),
            started.elapsed().as_secs_f64() * 1e3,
            map.len()
        );
        Self::from_storage(Storage::Mapped(map), Some(path.to_path_buf()))
    }

    /// Reads the whole file into memory and parses it (`--no-mmap`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        use std::io::Read;
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let len = usize::try_from(len)
            .map_err(|_| io_err(std::io::Error::other("file larger than the address space")))?;
        let mut buf = AlignedBytes::zeroed(len);
        file.read_exact(buf.bytes_mut()).map_err(io_err)?;
        Self::from_storage(Storage::Owned(buf), Some(path.to_path_buf()))
    }

    /// Parses a file that is already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        let layout = reader::parse(&bytes)?;
        let mut buf = AlignedBytes::zeroed(bytes.len());
        buf.bytes_mut().copy_from_slice(&bytes);
        Ok(Self {
            path: None,
            storage: Storage::Owned(buf),
            layout,
        })
    }

    /// Locks the mapped file in RAM (`--mlock`), so weights are never paged
    /// out and re-read. Only mapped files can be locked.
    pub fn lock_in_memory(&self) -> std::io::Result<()> {
        match &self.storage {
            #[cfg(unix)]
            Storage::Mapped(map) => map.lock(),
            _ => Err(std::io::Error::other(
                "locking applies to memory-mapped files (drop --no-mmap)",
            )),
        }
    }

    fn from_storage(storage: Storage, path: Option<PathBuf>) -> Result<Self, GgufError> {
        let started = Instant::now();
        let layout = reader::parse(storage.bytes()).map_err(|source| GgufError::Format {
            path: path.clone().unwrap_or_default(),
            source,
        })?;
        tracing::debug!(
            "parse header, {} metadata entries and {} tensors: {:.2} ms",
            layout.metadata.len(),
            layout.tensors.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(Self {
            path,
            storage,
            layout,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn version(&self) -> u32 {
        self.layout.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.layout.metadata
    }

    pub fn alignment(&self) -> u64 {
        self.layout.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.layout.data_offset
    }

    /// Total file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.layout.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.layout
            .tensor_index
            .get(name)
            .map(|&i| &self.layout.tensors[i])
    }

    /// The named tensor with its bytes, borrowed from the map.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    /// The bytes of a tensor from this file's directory (`tensors()`); an entry
    /// from another file is a caller bug and may panic.
    /// Drops a tensor's pages from this process's resident memory (not from
    /// the page cache) once a copy made at load serves instead, so the copy
    /// does not count twice; a later read faults them back in from the file.
    /// Best effort: does nothing for files held in memory.
    pub fn release(&self, info: &TensorInfo) {
        self.release_part(info, 0..info.size as usize);
    }

    /// [`GgufFile::release`] for the bytes `part` of a tensor's data.
    pub fn release_part(&self, info: &TensorInfo, part: std::ops::Range<usize>) {
        let part = part.start.min(info.size as usize)..part.end.min(info.size as usize);
        #[cfg(unix)]
        if let Storage::Mapped(map) = &self.storage
            && !part.is_empty()
        {
            let start = (self.layout.data_offset + info.offset) as usize + part.start;
            // SAFETY: the map is a read-only view of the file, never
            // written, so MADV_DONTNEED only drops pages whose contents the
            // next access reads again from the file (the same bytes); no
            // reference sees different data.
            let dropped = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, part.len())
            };
            if let Err(e) = dropped {
                tracing::debug!("madvise(DONTNEED) on {:?}: {e}", info.name);
            }
        }
    }

    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // Bounds were checked against the file length at parse time.
        let start = (self.layout.data_offset + info.offset) as usize;
        TensorView {
            info,
            data: &self.storage.bytes()[start..start + info.size as usize],
        }
    }
}
