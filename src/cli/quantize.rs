//! `rusty-llm quantize IN.gguf OUT.gguf TYPE`: the command-line face of
//! [`crate::quant::convert::quantize_file`], with a progress bar on stderr.

use super::args::clap_exit;
use crate::quant::convert::{Progress, QuantTarget, QuantizeOptions, quantize_file};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Convert a GGUF model to another weight type, like llama.cpp's llama-quantize.
///
/// 2-D weight matrices take TYPE (K-quant mixtures follow llama.cpp: the
/// output projection gets Q6_K, some attn_v/ffn_down layers more bits); norms,
/// biases and other 1-D tensors are copied unchanged. Already quantized inputs
/// are dequantized first (with a warning: quality suffers).
#[derive(Debug, Parser)]
#[command(name = "rusty-llm quantize", bin_name = "rusty-llm quantize", version)]
pub struct QuantizeArgs {
    /// The model to convert (.gguf).
    #[arg(value_name = "IN.gguf")]
    pub input: PathBuf,

    /// Where to write the result (written to a temporary file, then renamed).
    #[arg(value_name = "OUT.gguf")]
    pub output: PathBuf,

    /// Target: Q4_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0, F16, BF16, F32;
    /// Q4_K and Q5_K mean Q4_K_M and Q5_K_M, as in llama-quantize.
    #[arg(value_name = "TYPE")]
    pub target: QuantTarget,

    /// Threads converting rows (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// No progress bar and no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Parses `rusty-llm quantize …` (`args` starts with `quantize`) and runs it.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match QuantizeArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => return clap_exit(e, "rusty-llm quantize --help"),
    };
    let mut options = QuantizeOptions::new(args.target);
    if let Some(n) = args.threads {
        options.threads = n.max(1);
    }
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut tensors = 0;
    let result = quantize_file(&args.input, &args.output, &options, |p| match p {
        Progress::Begin {
            tensors: n,
            input_bytes,
        } => {
            tensors = n;
            bar.set_length(input_bytes);
        }
        Progress::Tensor {
            index,
            name,
            from,
            to,
        } => bar.set_message(format!("[{}/{tensors}] {name} {from} -> {to}", index + 1)),
        Progress::Advance(bytes) => bar.inc(bytes),
        // Warnings show even with --quiet or without a terminal.
        Progress::Warning(w) => bar.suspend(|| eprintln!("rusty-llm: warning: {w}")),
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if !args.quiet {
                let types: Vec<String> = report
                    .type_counts
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect();
                eprintln!(
                    "quantized {} ({:.1} MiB) -> {} ({:.1} MiB, {}) in {:.1} s; {} tensors converted, {} copied ({})",
                    args.input.display(),
                    mib(report.input_bytes),
                    args.output.display(),
                    mib(report.output_bytes),
                    args.target,
                    report.elapsed.as_secs_f64(),
                    report.converted,
                    report.copied,
                    types.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rusty-llm: {e}");
            ExitCode::from(2)
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
