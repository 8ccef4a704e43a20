//! The writer and reader agree: write → read gives back the same metadata and
//! tensor bytes, and re-writing a llama.cpp-made file reproduces it byte for byte.

mod common;

use rusty_llm::gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};

fn every_value_kind() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo ▁wörld \u{1F600}".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.empty", Value::String(String::new())),
        ("t.arr.u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("t.arr.i32", Value::Array(Array::I32(vec![-1, 0, 1]))),
        ("t.arr.f32", Value::Array(Array::F32(vec![0.5, -0.25]))),
        ("t.arr.bool", Value::Array(Array::Bool(vec![true, false]))),
        (
            "t.arr.str",
            Value::Array(Array::String(vec!["a".into(), "".into(), "<0x0A>".into()])),
        ),
        ("t.arr.empty", Value::Array(Array::U64(vec![]))),
        (
            "t.arr.nested",
            Value::Array(Array::Array(vec![
                Array::I16(vec![1, -2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::F64(vec![1.0])]),
            ])),
        ),
    ]
}

#[test]
fn metadata_and_tensors_round_trip_exactly() {
    for alignment in [None, Some(64u32), Some(1)] {
        let mut w = GgufWriter::new();
        for (k, v) in every_value_kind() {
            w.set(k, v);
        }
        if let Some(a) = alignment {
            w.set("general.alignment", Value::U32(a));
        }
        let f32_data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let q8_data: Vec<u8> = (0..34 * 2).map(|i| i as u8).collect();
        w.add_tensor("a", GgmlType::F32, &[3, 4], f32_data.clone())
            .unwrap();
        w.add_tensor("b.q8", GgmlType::Q8_0, &[32, 1, 2], q8_data.clone())
            .unwrap();
        w.add_tensor("c", GgmlType::F16, &[1], vec![0u8, 60])
            .unwrap();
        let bytes = w.to_bytes().unwrap();

        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), u64::from(alignment.unwrap_or(32)));
        assert_eq!(f.metadata(), w.metadata());
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b.q8", "c"]);
        assert_eq!(f.tensor("a").unwrap().data, &f32_data[..]);
        assert_eq!(f.tensor("a").unwrap().info.shape(), [3, 4]);
        assert_eq!(f.tensor("b.q8").unwrap().data, &q8_data[..]);
        assert_eq!(f.tensor("b.q8").unwrap().info.shape(), [32, 1, 2]);
        assert_eq!(f.tensor("c").unwrap().data, [0, 60]);
        for t in f.tensors() {
            assert_eq!((f.data_offset() + t.offset) % f.alignment(), 0);
        }
    }
}

#[test]
fn rewriting_llama_cpp_files_is_byte_identical() {
    let mut files = vec![
        common::data("tiny-llama-Q4_K_M.gguf"),
        common::data("tiny-gemma-Q4_K_M.gguf"),
        common::data("vocab/ggml-vocab-llama-spm.gguf"),
    ];
    files.extend(common::shared_ggufs(&["tiny"]));
    for path in files {
        let original = std::fs::read(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata().iter() {
            w.set(k, v.clone());
        }
        for t in f.tensors() {
            w.add_tensor(&t.name, t.ggml_type, t.shape(), f.view(t).data)
                .unwrap();
        }
        let rewritten = w.to_bytes().unwrap();
        assert!(
            rewritten == original,
            "{} differs after rewrite",
            path.display()
        );
    }
}

#[test]
fn writer_refuses_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("short", GgmlType::F32, &[4], vec![0u8; 15])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("short") && err.contains("15 bytes"), "{err}");
    assert!(
        w.add_tensor("odd", GgmlType::Q4_0, &[31], vec![0u8; 18])
            .is_err()
    );
    assert!(
        w.add_tensor("dims", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0u8; 4])
            .is_err()
    );
    w.add_tensor("dup", GgmlType::F32, &[1], vec![0u8; 4])
        .unwrap();
    assert!(
        w.add_tensor("dup", GgmlType::F32, &[1], vec![0u8; 4])
            .is_err()
    );
}

#[test]
fn write_file_is_atomic_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("x", GgmlType::F32, &[2], vec![0u8; 8])
        .unwrap();
    w.write_file(&path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.metadata().required_str("general.architecture").unwrap(),
        "llama"
    );
}

/// Streaming a file tensor by tensor (in pieces) gives the same bytes as
/// writing it whole; a short or overlong tensor is refused and leaves no file.
#[test]
fn streamed_file_matches_the_whole_write() {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<u8> = (0..64 * 4).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..34 * 3).map(|i| (i * 7) as u8).collect();
    let mut whole = GgufWriter::new();
    whole.set("general.architecture", Value::String("llama".into()));
    whole
        .add_tensor("a", GgmlType::F32, &[64], a.as_slice())
        .unwrap();
    whole
        .add_tensor("b", GgmlType::Q8_0, &[32, 3], b.as_slice())
        .unwrap();

    let mut declared = GgufWriter::new();
    declared.set("general.architecture", Value::String("llama".into()));
    declared.declare_tensor("a", GgmlType::F32, &[64]).unwrap();
    declared
        .declare_tensor("b", GgmlType::Q8_0, &[32, 3])
        .unwrap();
    assert!(
        declared.to_bytes().is_err(),
        "declared tensors have no data"
    );
    let path = dir.path().join("s.gguf");
    let mut stream = declared.stream_file(&path).unwrap();
    stream.write(&a[..100]).unwrap();
    stream.write(&a[100..]).unwrap();
    for piece in b.chunks(34) {
        stream.write(piece).unwrap();
    }
    assert!(stream.write(&[0]).is_err(), "past the last tensor");
    stream.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole.to_bytes().unwrap());

    let short = dir.path().join("short.gguf");
    let mut stream = declared.stream_file(&short).unwrap();
    stream.write(&a).unwrap();
    assert!(
        stream.write(&vec![0; b.len() + 1]).is_err(),
        "overlong piece"
    );
    assert!(stream.finish().is_err(), "b is missing");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only s.gguf remains: {left:?}");
}
