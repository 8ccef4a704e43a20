//! Command-line flags.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// rusty-llm: run GGUF language models locally.
#[derive(Debug, Parser)]
#[command(name = "rusty-llm", version, about)]
pub struct Args {
    /// A .gguf file, a folder holding one model, or a model name looked up in --model-dir.
    pub model: Option<String>,

    /// Print a JSON compatibility report (architecture, shapes, tensor types,
    /// tokenizer, whether this build can run it) without reading weights.
    #[arg(long)]
    pub inspect: bool,

    /// Print the tensor directory: name, type, shape, bytes.
    #[arg(long, conflicts_with = "inspect")]
    pub list_tensors: bool,

    /// List the models found in --model-dir (or in MODEL, when it is a folder).
    #[arg(long, conflicts_with_all = ["inspect", "list_tensors"])]
    pub list_models: bool,

    /// Print the token ids of --prompt (or --prompt-file) as one JSON array.
    #[arg(long, conflicts_with_all = ["inspect", "list_tensors", "list_models"])]
    pub tokenize: bool,

    /// With --tokenize: print "id<TAB>piece" per line instead of a JSON array.
    #[arg(long, requires = "tokenize")]
    pub show_tokens: bool,

    /// The prompt text.
    #[arg(short, long, value_name = "TEXT", conflicts_with = "prompt_file")]
    pub prompt: Option<String>,

    /// Read the prompt from a file.
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,

    /// Add no BOS token (nor the other special tokens the model's metadata asks for).
    #[arg(long)]
    pub no_bos: bool,

    /// Turn special-token text such as <start_of_turn> into control tokens.
    #[arg(long)]
    pub parse_special: bool,

    /// Folder searched (recursively) for model names and by --list-models.
    #[arg(
        long,
        env = "RUSTY_LLM_MODEL_DIR",
        default_value = "models",
        value_name = "DIR"
    )]
    pub model_dir: PathBuf,

    /// Read the file into memory instead of memory-mapping it.
    #[arg(long)]
    pub no_mmap: bool,

    /// Log the timing of each startup step (resolve, open and map, parse) to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

impl Args {
    /// Parses `std::env::args`. Help and version go to stdout (exit 0); a usage
    /// error becomes one line on stderr and exit code 2.
    pub fn parse_or_message() -> Result<Self, ExitCode> {
        Self::try_parse().map_err(|e| {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    // Clap's message spans several lines; keep what precedes its
                    // usage block, folded into one line.
                    let rendered = e.to_string();
                    let message: Vec<&str> = rendered
                        .lines()
                        .take_while(|l| !l.starts_with("Usage:"))
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    let message = message.join(" ");
                    let message = message.strip_prefix("error: ").unwrap_or(&message);
                    eprintln!("rusty-llm: {message}; see rusty-llm --help");
                    ExitCode::from(2)
                }
            }
        })
    }
}
