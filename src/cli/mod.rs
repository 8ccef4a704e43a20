//! The `rusty-llm` command line: argument parsing, logging setup, and the
//! mapping from library errors to one-line messages and exit codes.

mod args;
mod chat_log;
mod embed;
mod generate;
mod quantize;
mod repl;
mod tables;

pub use args::Args;

use crate::discovery::{self, DiscoveryError};
use crate::gguf::{GgufError, GgufFile};
use crate::inspect::inspect;
use crate::tokenizer::{Tokenizer, TokenizerError};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use thiserror::Error;

/// Everything that can stop a CLI run, each mapped to an exit code in one place.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        source: TokenizerError,
    },
    #[error("cannot read the prompt file {}: {source}", path.display())]
    PromptFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Simd(#[from] crate::kernels::SimdError),
    #[error(transparent)]
    Runner(#[from] crate::engine::RunnerError),
    #[error(transparent)]
    Generate(#[from] crate::engine::GenerateError),
    #[error(transparent)]
    Embed(#[from] crate::engine::EmbedError),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// 2 for anything the user can fix by changing the command or the file,
    /// 1 for failures of the environment.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Discovery(_)
            | CliError::Gguf(_)
            | CliError::Tokenizer { .. }
            | CliError::Simd(_)
            | CliError::PromptFile { .. }
            | CliError::Runner(_)
            | CliError::Generate(_)
            | CliError::Embed(_)
            | CliError::Server(_) => 2,
            CliError::Output(_) => 1,
        }
    }
}

/// Entry point used by `main`: parses arguments, runs, and reports.
pub fn main() -> ExitCode {
    // Subcommands come first and have their own parsers, so the plain
    // `rusty-llm MODEL …` form stays as it was (a model file named `quantize`
    // is still reachable as `./quantize`).
    if std::env::args_os().nth(1).is_some_and(|a| a == "quantize") {
        init_logging(false);
        return quantize::main(std::env::args_os().skip(1));
    }
    let args = match Args::parse_or_message() {
        Ok(args) => args,
        Err(code) => return code,
    };
    init_logging(args.verbose);
    let result = run(&args);
    if let Some(table) = crate::profile::report() {
        eprint!("{table}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`rusty-llm … | head`) is the reader's choice, not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rusty-llm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "rusty_llm=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}

pub fn run(args: &Args) -> Result<(), CliError> {
    let kernels = crate::kernels::kernels_checked()?;
    let supported: Vec<&str> = crate::kernels::Simd::supported()
        .iter()
        .map(|s| s.name())
        .collect();
    tracing::debug!(
        "kernels: {} in {} order (this CPU supports: {}; RUSTY_LLM_SIMD and RUSTY_LLM_KERNELS override)",
        kernels.simd.name(),
        kernels.order.name(),
        supported.join(", ")
    );
    let mut out = std::io::stdout().lock();
    if args.list_models {
        let dir = args
            .model
            .as_ref()
            .map_or(args.model_dir.clone(), PathBuf::from);
        return tables::list_models(&mut out, &discovery::scan(&dir)?);
    }

    let Some(selector) = args.model.as_deref() else {
        return Err(CliError::Usage(
            "no model given: pass a .gguf file, a folder, or a model name (see --list-models)"
                .into(),
        ));
    };
    let started = Instant::now();
    let path = discovery::resolve(selector, &args.model_dir)?;
    tracing::debug!(
        "resolve {selector:?} -> {}: {:.2} ms",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if !(args.inspect || args.tokenize || args.list_tensors) {
        return if let Some(addr) = args.serve {
            generate::serve(&path, addr, args)
        } else if args.embed {
            embed::embed(&path, args)
        } else if args.bench {
            generate::bench(&path, args)
        } else if args.repl {
            repl::repl(&path, args)
        } else {
            generate::one_shot(&path, args)
        };
    }
    let file = if args.no_mmap {
        GgufFile::read(&path)?
    } else {
        GgufFile::open(&path)?
    };

    if args.inspect {
        serde_json::to_writer_pretty(&mut out, &inspect(&file)).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if args.tokenize {
        tokenize(&mut out, &file, args)?;
    } else {
        tables::list_tensors(&mut out, &file)?;
    }
    Ok(())
}

/// The prompt from --prompt or --prompt-file.
fn prompt_text(args: &Args) -> Result<String, CliError> {
    match (args.prompt.as_slice(), &args.prompt_file) {
        ([p], _) => Ok(p.clone()),
        ([], Some(path)) => read_prompt_file(path),
        ([], None) => Err(CliError::Usage(
            "no prompt given: pass --prompt TEXT or --prompt-file PATH".into(),
        )),
        (several, _) => Err(CliError::Usage(format!(
            "--prompt was given {} times; only --embed takes several",
            several.len()
        ))),
    }
}

fn read_prompt_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::PromptFile {
        path: path.to_path_buf(),
        source,
    })
}

fn tokenize(out: &mut impl Write, file: &GgufFile, args: &Args) -> Result<(), CliError> {
    let text = prompt_text(args)?;
    let started = Instant::now();
    let tokenizer = Tokenizer::from_gguf(file).map_err(|source| CliError::Tokenizer {
        path: file.path().unwrap_or(Path::new("")).to_path_buf(),
        source,
    })?;
    tracing::debug!(
        "build tokenizer: {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let ids = tokenizer.encode(&text, !args.no_bos, args.parse_special);
    tracing::debug!(
        "tokenize {} bytes into {} tokens: {:.2} ms",
        text.len(),
        ids.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if args.show_tokens {
        for &id in &ids {
            let piece = String::from_utf8_lossy(&tokenizer.token_bytes(id, true)).into_owned();
            writeln!(out, "{id}\t{}", piece.escape_debug())?;
        }
    } else {
        serde_json::to_writer(&mut *out, &ids).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    Ok(())
}
