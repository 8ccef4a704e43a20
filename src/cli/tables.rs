//! Plain-text tables for `--list-tensors` and `--list-models`.

use super::CliError;
use crate::discovery::model_name;
use crate::gguf::GgufFile;
use crate::inspect::file_type_label;
use std::io::Write;
use std::path::PathBuf;

pub fn list_tensors(out: &mut impl Write, file: &GgufFile) -> Result<(), CliError> {
    let rows: Vec<[String; 4]> = file
        .tensors()
        .iter()
        .map(|t| {
            let shape: Vec<String> = t.shape().iter().map(u64::to_string).collect();
            [
                t.name.clone(),
                t.ggml_type.name().into(),
                shape.join(" x "),
                t.size.to_string(),
            ]
        })
        .collect();
    write_table(out, ["name", "type", "shape", "bytes"], &rows)
}

pub fn list_models(out: &mut impl Write, paths: &[PathBuf]) -> Result<(), CliError> {
    let rows: Vec<[String; 5]> = paths
        .iter()
        .map(|path| {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let (arch, quant) = match GgufFile::open(path) {
                Ok(f) => (
                    f.metadata()
                        .str("general.architecture")
                        .ok()
                        .flatten()
                        .unwrap_or("?")
                        .to_string(),
                    file_type_label(&f).unwrap_or_else(|| "?".into()),
                ),
                Err(e) => {
                    tracing::warn!("{e}");
                    ("unreadable".into(), "-".into())
                }
            };
            [
                model_name(path),
                arch,
                human_bytes(size),
                quant,
                path.display().to_string(),
            ]
        })
        .collect();
    write_table(
        out,
        ["name", "architecture", "size", "quant", "path"],
        &rows,
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> Result<(), CliError> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
