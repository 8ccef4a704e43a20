//! `--embed`: embeddings from the command line, one JSON array per input.

use super::generate::{load_runner, one_shot_prompt};
use super::{Args, CliError};
use crate::engine::EmbedOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

/// Inputs handed to the engine at a time, so progress and output advance
/// through a long file (each group still runs as batched passes).
const GROUP: usize = 256;

/// `rusty-llm MODEL --embed -p TEXT [-p TEXT…]` (or `--prompt-file`/stdin,
/// one input per non-empty line): each vector as a JSON array on its own
/// line, in input order; a summary on stderr unless `-q`.
pub fn embed(path: &Path, args: &Args) -> Result<(), CliError> {
    let inputs: Vec<String> = if args.prompt.is_empty() {
        one_shot_prompt(args)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    } else {
        args.prompt.clone()
    };
    if inputs.is_empty() {
        return Err(CliError::Usage(
            "--embed: no input (the prompt file or stdin has no non-empty line)".into(),
        ));
    }
    if args.ubatch == 0 {
        return Err(CliError::Usage("--ubatch must be at least 1".into()));
    }
    let runner = load_runner(path, args, None)?;
    let options = EmbedOptions {
        ctx_size: args.ctx_size.unwrap_or_else(|| runner.embedding_ctx_size()),
        batch_tokens: args.ubatch,
        ..EmbedOptions::new(&runner)
    };
    // Tokenize everything first, so a bad input fails before any output.
    let tokens = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| runner.tokenize_for_embedding(i, text, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let c = runner.model().config();
    if !args.quiet {
        eprintln!(
            "rusty-llm: {} | {} | simd={} threads={} | {} pooling, {} dimensions{}",
            path.display(),
            c.arch,
            runner.model().kernels().simd.name(),
            runner.batch_pool().threads(),
            c.pooling.name(),
            c.n_embd,
            if c.output_head {
                " (a decoder: mean of its last layer; dedicated embedding models do better)"
            } else {
                ""
            }
        );
    }
    let bar = if std::io::stderr().is_terminal() && inputs.len() > GROUP {
        indicatif::ProgressBar::new(inputs.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut total_tokens = 0;
    for group in tokens.chunks(GROUP) {
        for embedding in runner.embed_tokens(group, &options)? {
            total_tokens += embedding.n_tokens;
            serde_json::to_writer(&mut out, &embedding.vector).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        bar.inc(group.len() as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "rusty-llm: {} inputs, {total_tokens} tokens in {:.0} ms ({:.1} inputs/s, {:.0} tokens/s)",
            inputs.len(),
            secs * 1e3,
            inputs.len() as f64 / secs,
            total_tokens as f64 / secs
        );
    }
    Ok(())
}
