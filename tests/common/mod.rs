//! Paths shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fixtures copied into the project (llama.cpp data, MIT; see tests/data/LICENSE-llama.cpp).
pub fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

/// `../shared`, llama.cpp's reference material beside the project. In CI it
/// must be there; elsewhere tests that need it are skipped with a notice.
pub fn shared() -> Option<PathBuf> {
    let dir = root().join("../shared");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs with ../shared beside the project, but {} is missing",
        dir.display()
    );
    eprintln!("skipping: {} not present", dir.display());
    None
}

/// The default model, fetched by scripts/fetch-default-model.sh (the README's
/// test command runs it first). Required in CI, skipped with a notice elsewhere.
pub fn default_model() -> Option<PathBuf> {
    let path = root().join("models/gemma-3-270m-q4_k_m.gguf");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI fetches the default model first, but {} is missing",
        path.display()
    );
    eprintln!(
        "skipping: {} not present (run scripts/fetch-default-model.sh)",
        path.display()
    );
    None
}

/// Every `.gguf` file in the given folders of ../shared, sorted.
pub fn shared_ggufs(subdirs: &[&str]) -> Vec<PathBuf> {
    let Some(shared) = shared() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = subdirs
        .iter()
        .flat_map(|d| std::fs::read_dir(shared.join(d)).expect("read shared folder"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    files
}

/// One of llama.cpp's tokenizer test vectors: the `.inp` cases paired with the
/// `.out` id lines.
pub struct VocabCase {
    pub text: String,
    pub ids: Vec<u32>,
}

/// The vocabulary `ggml-vocab-NAME.gguf` and its cases: from tests/data/vocab,
/// or from ../shared/vocab for files too large to copy into the project.
/// `None` (skip) only outside CI when the files are not available.
///
/// Cases are read as llama.cpp's `test-tokenizer-0` reads them (`read_tests`):
/// separated by `\n__ggml_vocab_test__\n`; a final separator ends the list,
/// and a last case may also end the file without one (gemma-4's does).
pub fn vocab_cases(name: &str) -> Option<(PathBuf, Vec<VocabCase>)> {
    let file = format!("ggml-vocab-{name}.gguf");
    let local = data("vocab").join(&file);
    let path = if local.is_file() {
        local
    } else {
        shared()?.join("vocab").join(&file)
    };
    let read = |ext: &str| {
        let p = PathBuf::from(format!("{}.{ext}", path.display()));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (inp, out) = (read("inp"), read("out"));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        let (text, after) = rest.split_once(SEP).unwrap_or((rest, ""));
        texts.push(text);
        rest = after;
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the case count"
    );
    let cases = texts
        .into_iter()
        .zip(ids)
        .map(|(t, ids)| VocabCase {
            text: t.to_string(),
            ids,
        })
        .collect();
    Some((path, cases))
}

/// A copy of the model at `path` (in a temporary file) with the metadata
/// `set` applied and only the tensors `edit` keeps (it may add its own).
pub fn rewritten(
    path: &Path,
    edit: impl Fn(&mut rusty_llm::gguf::GgufWriter<'_>, &str) -> bool,
    set: &[(&str, rusty_llm::gguf::Value)],
) -> tempfile::TempPath {
    use rusty_llm::gguf::{GgufFile, GgufWriter};
    let file = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata().iter() {
        w.set(k, v.clone());
    }
    for (k, v) in set {
        w.set(*k, v.clone());
    }
    for t in file.tensors() {
        if edit(&mut w, &t.name) {
            w.add_tensor(
                t.name.clone(),
                t.ggml_type,
                t.shape(),
                file.view(t).data.to_vec(),
            )
            .unwrap();
        }
    }
    let out = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    w.write_file(&out).unwrap();
    out
}

/// A runner on two threads (the CI machine's cores) for the model at `path`.
pub fn runner(path: &Path) -> rusty_llm::engine::Runner {
    let options = rusty_llm::engine::LoadOptions {
        threads: 2,
        threads_batch: 2,
        ..rusty_llm::engine::LoadOptions::default()
    };
    rusty_llm::engine::Runner::load(path, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
