//! Opening and parsing GGUF files: the default model (262k-token vocabulary)
//! must open, map and parse its metadata and tensor directory in well under
//! 50 ms warm. Run with `cargo bench --bench gguf_open`.

use criterion::{Criterion, criterion_group, criterion_main};
use rusty_llm::gguf::GgufFile;
use std::hint::black_box;
use std::path::Path;

fn open_and_parse(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        root.join("models/gemma-3-270m-q4_k_m.gguf"),
        root.join("tests/data/tiny-llama-Q4_K_M.gguf"),
    ];
    for path in files {
        if !path.exists() {
            eprintln!(
                "skipping {}: not present (scripts/fetch-default-model.sh)",
                path.display()
            );
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        c.bench_function(&format!("open+parse {name}"), |b| {
            b.iter(|| {
                let f = GgufFile::open(black_box(&path)).expect("parse");
                black_box(f.tensors().len())
            })
        });
    }
}

criterion_group!(benches, open_and_parse);
criterion_main!(benches);
