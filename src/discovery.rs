//! Finding models on disk: a MODEL argument may be a `.gguf` path, a folder, or
//! a name looked up in the model folder (`--model-dir`, `RUSTY_LLM_MODEL_DIR`).

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("{}: not found; pass a .gguf file, a folder of models, or a model name with --model-dir", .0.display())]
    PathNotFound(PathBuf),
    #[error("no model matches {selector:?} in {}; {}", dir.display(), available_hint(.available))]
    NoMatch {
        selector: String,
        dir: PathBuf,
        available: Vec<String>,
    },
    #[error("{selector:?} matches {} models; name one of: {}", .candidates.len(), .candidates.join(", "))]
    Ambiguous {
        selector: String,
        candidates: Vec<String>,
    },
    #[error("{}: no .gguf models in this folder", .0.display())]
    EmptyDir(PathBuf),
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn available_hint(available: &[String]) -> String {
    if available.is_empty() {
        "the folder holds no .gguf models".into()
    } else {
        format!("available: {} (see --list-models)", available.join(", "))
    }
}

/// Projector files of multimodal models (`mmproj-*.gguf`) are not language models.
fn is_model_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && !name.to_ascii_lowercase().starts_with("mmproj")
        && !name.starts_with('.')
}

/// All model files under `dir`, recursively, sorted by path.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>, DiscoveryError> {
    if !dir.is_dir() {
        return Err(DiscoveryError::PathNotFound(dir.to_path_buf()));
    }
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true).max_depth(16) {
        let entry = entry.map_err(|e| DiscoveryError::Io {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into(),
        })?;
        if entry.file_type().is_file() && is_model_file(entry.path()) {
            found.push(entry.into_path());
        }
    }
    found.sort();
    Ok(found)
}

/// The display name of a model file: its file name without `.gguf`.
pub fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Resolves a MODEL argument to one file.
///
/// - an existing file is used as it is;
/// - a folder must hold exactly one model;
/// - anything else is a name matched against the models in `model_dir`: an exact
///   file name (with or without `.gguf`) wins, else a unique case-insensitive
///   substring match.
pub fn resolve(selector: &str, model_dir: &Path) -> Result<PathBuf, DiscoveryError> {
    let as_path = Path::new(selector);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_dir() {
        return pick_one(selector, scan(as_path)?, as_path);
    }
    if selector.ends_with(".gguf") || selector.contains(std::path::MAIN_SEPARATOR) {
        return Err(DiscoveryError::PathNotFound(as_path.to_path_buf()));
    }
    if !model_dir.is_dir() {
        return Err(DiscoveryError::PathNotFound(as_path.to_path_buf()));
    }
    let models = scan(model_dir)?;
    let lower = selector.to_ascii_lowercase();
    let matching = |wanted: &str, exactly: bool| -> Vec<PathBuf> {
        models
            .iter()
            .filter(|p| {
                let name = model_name(p).to_ascii_lowercase();
                if exactly {
                    name == wanted
                } else {
                    name.contains(wanted)
                }
            })
            .cloned()
            .collect()
    };
    let exact = matching(&lower, true);
    if !exact.is_empty() {
        return pick_one(selector, exact, model_dir);
    }
    let mut partial = matching(&lower, false);
    // LM Studio names embedding models `text-embedding-<model>`
    // (`text-embedding-nomic-embed-text-v1.5`); files carry the model's name.
    if let Some(model) = lower.strip_prefix("text-embedding-")
        && partial.is_empty()
    {
        partial = matching(model, false);
    }
    if partial.is_empty() {
        return Err(DiscoveryError::NoMatch {
            selector: selector.into(),
            dir: model_dir.to_path_buf(),
            available: models.iter().map(|p| model_name(p)).collect(),
        });
    }
    pick_one(selector, partial, model_dir)
}

fn pick_one(
    selector: &str,
    mut paths: Vec<PathBuf>,
    dir: &Path,
) -> Result<PathBuf, DiscoveryError> {
    match paths.len() {
        0 => Err(DiscoveryError::EmptyDir(dir.to_path_buf())),
        1 => Ok(paths.remove(0)),
        _ => Err(DiscoveryError::Ambiguous {
            selector: selector.into(),
            candidates: paths.iter().map(|p| p.display().to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"GGUF").unwrap();
        p
    }

    #[test]
    fn resolves_paths_folders_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let a = touch(root, "org/gemma-3-270m-q4_k_m.gguf");
        let b = touch(root, "org/qwen3-0.6b-q8_0.gguf");
        touch(root, "org/mmproj-gemma.gguf");
        touch(root, "notes.txt");
        let only = touch(&root.join("single"), "llama.gguf");

        assert_eq!(
            scan(root).unwrap(),
            vec![a.clone(), b.clone(), only.clone()]
        );
        assert_eq!(resolve(a.to_str().unwrap(), root).unwrap(), a);
        assert_eq!(resolve("gemma-3-270m-q4_k_m", root).unwrap(), a);
        assert_eq!(resolve("QWEN3", root).unwrap(), b);
        assert_eq!(
            resolve(root.join("single").to_str().unwrap(), root).unwrap(),
            only
        );

        let err = resolve("q", root).unwrap_err().to_string();
        assert!(
            err.contains("matches 2 models") || err.contains("matches 3 models"),
            "{err}"
        );
        let err = resolve("mistral", root).unwrap_err().to_string();
        assert!(
            err.contains("no model matches") && err.contains("qwen3-0.6b-q8_0"),
            "{err}"
        );
        let err = resolve(root.join("org").to_str().unwrap(), root).unwrap_err();
        assert!(matches!(err, DiscoveryError::Ambiguous { .. }), "{err}");
        let err = resolve("missing.gguf", root).unwrap_err();
        assert!(matches!(err, DiscoveryError::PathNotFound(_)), "{err}");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let err = resolve(root.join("empty").to_str().unwrap(), root).unwrap_err();
        assert!(matches!(err, DiscoveryError::EmptyDir(_)), "{err}");
    }

    #[test]
    fn embedding_model_names_of_ollama_and_lm_studio_find_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let nomic = touch(root, "nomic-embed-text-v1.5.Q8_0.gguf");
        touch(root, "gemma-3-270m-q4_k_m.gguf");
        assert_eq!(resolve("nomic-embed", root).unwrap(), nomic);
        assert_eq!(resolve("nomic-embed-text", root).unwrap(), nomic);
        assert_eq!(
            resolve("text-embedding-nomic-embed-text", root).unwrap(),
            nomic
        );
        assert_eq!(
            resolve("text-embedding-nomic-embed-text-v1.5", root).unwrap(),
            nomic
        );
        let err = resolve("text-embedding-3-small", root).unwrap_err();
        assert!(err.to_string().contains("text-embedding-3-small"), "{err}");
    }
}
