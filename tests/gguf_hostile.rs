//! Hostile and broken GGUF files: each gives a clear error that names the field,
//! key or tensor at fault, never a panic, and never a huge allocation.

mod common;

use rusty_llm::gguf::{FormatError, GgmlType, GgufFile, GgufWriter, Value, limits, reader};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Raw GGUF bytes, for writing what the writer would refuse to.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A tensor directory entry.
    fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Pads to 32 bytes and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let padded = self.0.len().div_ceil(32) * 32;
        self.0.resize(padded + n, 0);
        self
    }
    fn parse(&self) -> Result<(), FormatError> {
        reader::parse(&self.0).map(|_| ())
    }
}

fn err_of(raw: &Raw) -> String {
    raw.parse().expect_err("must be refused").to_string()
}

#[test]
fn versions_and_byte_order() {
    assert!(Raw::header(3, 0, 0).parse().is_ok());
    assert!(Raw::header(2, 0, 0).parse().is_ok());
    let e = err_of(&Raw::header(1, 0, 0));
    assert!(e.contains("version 1") && e.contains("2 and 3"), "{e}");
    assert!(err_of(&Raw::header(7, 0, 0)).contains("version 7"));
    let mut be = Raw::default();
    be.0.extend_from_slice(b"GGUF");
    be.0.extend_from_slice(&3u32.to_be_bytes());
    be.0.extend_from_slice(&0u64.to_be_bytes());
    be.0.extend_from_slice(&0u64.to_be_bytes());
    assert_eq!(be.parse(), Err(FormatError::BigEndian));
    let e = err_of(&Raw(b"PK\x03\x04 zip file".to_vec()));
    assert!(e.contains("not a GGUF file") && e.contains("PK"), "{e}");
    assert!(err_of(&Raw(b"GG".to_vec())).contains("truncated"));
}

#[test]
fn metadata_problems_name_the_key() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(42);
    let e = err_of(&r);
    assert!(
        e.contains("general.name") && e.contains("value type id 42"),
        "{e}"
    );

    let mut r = Raw::header(3, 0, 1);
    r.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(u64::MAX);
    let e = err_of(&r);
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("exceeds"),
        "{e}"
    );

    // A plausible length with no bytes behind it: truncated, nothing allocated.
    let mut r = Raw::header(3, 0, 1);
    r.str("tokenizer.ggml.scores")
        .u32(9)
        .u32(6)
        .u64(limits::MAX_ARRAY_LEN);
    let e = err_of(&r);
    assert!(
        e.contains("truncated") && e.contains("tokenizer.ggml.scores"),
        "{e}"
    );

    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(8).u64(1 << 40);
    let e = err_of(&r);
    assert!(e.contains("general.name") && e.contains("exceeds"), "{e}");

    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..10 {
        r.u32(9).u64(1);
    }
    let e = err_of(&r);
    assert!(e.contains("deep") && e.contains("nested"), "{e}");

    let mut r = Raw::header(3, 0, 2);
    r.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
    assert!(err_of(&r).contains("appears twice"));

    let mut r = Raw::header(3, 0, 1);
    r.str("flag").u32(7);
    r.0.push(2);
    assert!(err_of(&r).contains("bool byte is 2"));

    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(4).u32(48);
    assert!(err_of(&r).contains("power of two"));

    let mut r = Raw::header(3, 0, 1);
    r.str("name").u32(8).u64(2);
    r.0.extend_from_slice(&[0xff, 0xfe]);
    assert!(err_of(&r).contains("UTF-8"));

    let e = err_of(&Raw::header(3, u64::MAX, 0));
    assert!(e.contains("tensor count") && e.contains("limit"), "{e}");
}

#[test]
fn tensor_problems_name_the_tensor() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.0.attn_q.weight", &[32], 99, 0).data(64);
    let e = err_of(&r);
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("type id 99"),
        "{e}"
    );

    let mut r = Raw::header(3, 1, 0);
    r.tensor("old", &[32], 31, 0).data(64);
    let e = err_of(&r);
    assert!(e.contains("old") && e.contains("Q4_0_4_4"), "{e}");

    let mut r = Raw::header(3, 1, 0);
    r.tensor("five", &[1, 1, 1, 1, 1], 0, 0).data(64);
    assert!(err_of(&r).contains("5 dimensions"));

    let mut r = Raw::header(3, 1, 0);
    r.tensor("huge", &[1 << 40, 1 << 40], 0, 0).data(64);
    assert!(err_of(&r).contains("overflows"));

    let mut r = Raw::header(3, 1, 0);
    r.tensor("ragged", &[33, 2], GgmlType::Q8_0.id(), 0)
        .data(256);
    assert!(err_of(&r).contains("not a multiple"));

    let mut r = Raw::header(3, 1, 0);
    r.tensor("past_end", &[64], 0, 0).data(100);
    let e = err_of(&r);
    assert!(
        e.contains("past_end") && e.contains("outside the data section"),
        "{e}"
    );

    let mut r = Raw::header(3, 1, 0);
    r.tensor("offset_overflow", &[8], 0, u64::MAX - 31).data(64);
    assert!(err_of(&r).contains("outside the data section"));

    let mut r = Raw::header(3, 1, 0);
    r.tensor("misaligned", &[8], 0, 4).data(64);
    assert!(err_of(&r).contains("aligned"));

    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(128);
    let e = err_of(&r);
    assert!(e.contains("overlaps"), "{e}");

    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32).data(128);
    assert!(err_of(&r).contains("appears twice"));
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("x", GgmlType::F32, &[64], vec![0u8; 256])
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("broken.gguf") && e.contains("\"x\""), "{e}");
    let e = GgufFile::open(dir.path().join("absent.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.gguf"), "{e}");
}

/// Deterministic generator for the mutation test (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    mutations: usize,
    ok: usize,
    err: usize,
    panics: Vec<String>,
}

impl Tally {
    fn check(&mut self, bytes: &[u8], what: impl FnOnce() -> String) {
        self.mutations += 1;
        match catch_unwind(AssertUnwindSafe(|| reader::parse(bytes).map(|_| ()))) {
            Ok(Ok(())) => self.ok += 1,
            Ok(Err(_)) => self.err += 1,
            Err(_) => self.panics.push(what()),
        }
    }
}

/// Truncations at many offsets and byte corruptions across the header and
/// tensor directory of real files: every one gives Ok or Err, never a panic.
#[test]
fn ten_thousand_mutations_never_panic() {
    let mut files = vec![
        common::data("tiny-llama-Q4_K_M.gguf"),
        common::data("tiny-gemma-Q4_K_M.gguf"),
        common::data("vocab/ggml-vocab-llama-spm.gguf"),
        common::data("vocab/ggml-vocab-bert-bge.gguf"),
    ];
    if let Some(shared) = common::shared() {
        files.push(shared.join("tiny/tiny-phi3-Q4_K_M.gguf"));
        files.push(shared.join("tiny/tiny-bert-Q4_K_M.gguf"));
    }
    let mut rng = Rng(0x5eed);
    let mut tally = Tally::default();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut bytes = std::fs::read(path).unwrap();
        let header_end = reader::parse(&bytes).unwrap().data_offset as usize;
        let header_end = header_end.min(bytes.len());

        // Truncation at every offset of the first 512 bytes, then spread across
        // the directory and into the tensor data.
        let mut cuts: Vec<usize> = (0..512.min(bytes.len())).collect();
        cuts.extend((0..600).map(|_| rng.below(header_end + 1)));
        cuts.extend((0..100).map(|_| header_end + rng.below(bytes.len() - header_end + 1)));
        for cut in cuts {
            tally.check(&bytes[..cut], || format!("{name} truncated at {cut}"));
        }

        // Corruptions, each undone after the parse.
        for i in 0..1000 {
            let at = if i % 4 == 0 {
                rng.below(64.min(header_end))
            } else {
                rng.below(header_end)
            };
            let width = [1, 1, 2, 4, 8][rng.below(5)].min(bytes.len() - at);
            let saved = bytes[at..at + width].to_vec();
            let patch: Vec<u8> = match rng.below(4) {
                0 => saved.iter().map(|b| b ^ (1 << rng.below(8))).collect(),
                1 => vec![0xff; width],
                2 => vec![0; width],
                _ => (0..width).map(|_| rng.next() as u8).collect(),
            };
            bytes[at..at + width].copy_from_slice(&patch);
            tally.check(&bytes, || {
                format!("{name}: bytes {at}..+{width} set to {patch:02x?}")
            });
            bytes[at..at + width].copy_from_slice(&saved);
        }
    }
    eprintln!(
        "{} mutations: {} parsed, {} refused, {} panicked",
        tally.mutations,
        tally.ok,
        tally.err,
        tally.panics.len()
    );
    assert!(
        tally.panics.is_empty(),
        "panics on: {:#?}",
        &tally.panics[..tally.panics.len().min(20)]
    );
    assert!(
        tally.mutations >= 10_000,
        "only {} mutations",
        tally.mutations
    );
    // Both outcomes occur: the test exercises acceptance as well as refusal.
    assert!(
        tally.ok > 100 && tally.err > 5_000,
        "ok {} err {}",
        tally.ok,
        tally.err
    );
}
