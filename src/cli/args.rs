//! Command-line flags.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// rusty-llm: run GGUF language models locally.
#[derive(Debug, Parser)]
#[command(
    name = "rusty-llm",
    version,
    about,
    after_help = "Other commands:\n  rusty-llm quantize IN.gguf OUT.gguf TYPE   convert a model (see rusty-llm quantize --help)"
)]
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

    /// With --tokenize: print each token as its id, a tab and its piece, one per line, instead of a JSON array.
    #[arg(long, requires = "tokenize")]
    pub show_tokens: bool,

    /// The prompt text (with --embed: repeatable, one input each).
    #[arg(short, long, value_name = "TEXT", conflicts_with = "prompt_file")]
    pub prompt: Vec<String>,

    /// Read the prompt from a file (with --embed: one input per line).
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,

    /// Print the embedding of each --prompt (or each line of --prompt-file
    /// or stdin) as a JSON array per line: the model's pooling, unit length.
    #[arg(long, conflicts_with_all = ["inspect", "list_tensors", "list_models", "tokenize", "repl", "bench", "serve", "dump_activations"])]
    pub embed: bool,

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

    // ---- generation ----
    /// Send the prompt as plain text, without the chat template (the default
    /// for models without a template).
    #[arg(long, help_heading = "Generation")]
    pub raw: bool,

    /// Interactive chat (history, multi-line input with a trailing `\`,
    /// /reset, /system TEXT, /stats, /help; Ctrl-C stops an answer, Ctrl-D exits).
    #[arg(long, help_heading = "Generation", conflicts_with_all = ["inspect", "list_tensors", "list_models", "tokenize"])]
    pub repl: bool,

    /// Most tokens to generate.
    #[arg(
        short = 'n',
        long,
        default_value_t = 256,
        value_name = "N",
        help_heading = "Generation"
    )]
    pub max_tokens: usize,

    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(
        short = 't',
        long = "temp",
        default_value_t = 0.8,
        value_name = "T",
        help_heading = "Sampling"
    )]
    pub temperature: f32,

    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(
        long,
        default_value_t = 0.95,
        value_name = "P",
        help_heading = "Sampling"
    )]
    pub top_p: f32,

    /// Keep the K most likely tokens (0 = off).
    #[arg(
        long,
        default_value_t = 40,
        value_name = "K",
        help_heading = "Sampling"
    )]
    pub top_k: usize,

    /// Drop tokens less likely than P × the most likely one (0 = off).
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "P",
        help_heading = "Sampling"
    )]
    pub min_p: f32,

    /// Penalize tokens seen in the last --repeat-last-n tokens (1 = off).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "X",
        help_heading = "Sampling"
    )]
    pub repeat_penalty: f32,

    /// Window of the repetition penalties.
    #[arg(
        long,
        default_value_t = 64,
        value_name = "N",
        help_heading = "Sampling"
    )]
    pub repeat_last_n: usize,

    /// Subtracted from the logit of every token already in the window.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "X",
        help_heading = "Sampling"
    )]
    pub presence_penalty: f32,

    /// Subtracted once per occurrence in the window.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "X",
        help_heading = "Sampling"
    )]
    pub frequency_penalty: f32,

    /// Random seed (same seed, same text); default: from the clock.
    #[arg(long, value_name = "N", help_heading = "Sampling")]
    pub seed: Option<u64>,

    /// System prompt for chat models.
    #[arg(long, value_name = "TEXT", help_heading = "Generation")]
    pub system_prompt: Option<String>,

    /// Stop when the output contains TEXT (repeatable; not printed).
    #[arg(long = "stop", value_name = "TEXT", help_heading = "Generation")]
    pub stop: Vec<String>,

    /// Keep generating past end-of-generation tokens.
    #[arg(long, help_heading = "Generation")]
    pub ignore_eos: bool,

    /// When the context is full, drop the older half and go on instead of failing.
    #[arg(long, help_heading = "Generation")]
    pub context_shift: bool,

    /// Threads for generation (default: physical cores).
    #[arg(long, value_name = "N", help_heading = "Performance")]
    pub threads: Option<usize>,

    /// Threads for prompt processing (default: --threads).
    #[arg(long, value_name = "N", help_heading = "Performance")]
    pub threads_batch: Option<usize>,

    /// Context size in tokens (default: the model's, capped at 4096); with
    /// --serve, per slot (see --parallel).
    #[arg(short = 'c', long, value_name = "N", help_heading = "Performance")]
    pub ctx_size: Option<usize>,

    /// Prompt tokens per batch; with --serve, per prompt chunk, run between
    /// other requests' decoding steps (smaller: steadier streams).
    #[arg(
        long,
        default_value_t = 512,
        value_name = "N",
        help_heading = "Performance"
    )]
    pub ubatch: usize,

    /// KV cache element type: f16 (default, llama.cpp's) or f32 (exact).
    #[arg(
        long,
        default_value = "f16",
        value_name = "TYPE",
        help_heading = "Performance"
    )]
    pub kv_type: String,

    /// Lock the weights in RAM.
    #[arg(long, help_heading = "Performance")]
    pub mlock: bool,

    /// Append each turn as a JSON line to PATH (never truncated; fsynced per turn).
    #[arg(
        long,
        alias = "chat-log",
        value_name = "PATH",
        help_heading = "Generation"
    )]
    pub chat_history: Option<PathBuf>,

    /// Run the prompt once and write every named intermediate activation
    /// (`inp_embd`, `blk.N.attn_norm`, `blk.N.attn_out`, `blk.N.ffn_out`,
    /// `blk.N.l_out`, `result_norm`, `result_output`) to PATH as JSON lines,
    /// for tracing a divergence from llama.cpp to one layer.
    #[arg(long, value_name = "PATH", help_heading = "Generation")]
    pub dump_activations: Option<PathBuf>,

    /// Print only the generated text (no summary on stderr).
    #[arg(short, long, help_heading = "Generation")]
    pub quiet: bool,

    // ---- server ----
    /// Serve the model over HTTP at ADDR (e.g. 127.0.0.1:8080): OpenAI-style
    /// /v1/chat/completions and /v1/completions, /generate, /tokenize, …
    #[arg(long, value_name = "ADDR", help_heading = "Server", conflicts_with_all = ["inspect", "list_tensors", "list_models", "tokenize", "repl", "bench"])]
    pub serve: Option<std::net::SocketAddr>,

    /// Require `Authorization: Bearer KEY` on every route but the health checks.
    #[arg(
        long,
        env = "RUSTY_LLM_API_KEY",
        value_name = "KEY",
        help_heading = "Server",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Largest accepted request body.
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES", help_heading = "Server")]
    pub max_body_bytes: usize,

    /// Sequence slots: requests generated at once (continuous batching), each
    /// with its own KV cache of --ctx-size positions.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Server")]
    pub parallel: u32,

    /// Requests that may wait for a free slot; beyond that the server answers 503.
    #[arg(long, default_value_t = 16, value_name = "N", help_heading = "Server")]
    pub queue_size: usize,

    /// Connections served at once; more wait to be accepted
    /// [default: max(16, threads × 8)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Server")]
    pub max_connections: Option<u32>,

    /// Seconds a connection may take to send a request's headers before it is closed.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Server")]
    pub read_timeout: u64,

    /// Prefill every request from scratch instead of reusing a prompt prefix
    /// a slot still holds: slower, but answers do not depend on earlier
    /// requests (a prompt prefilled in other chunks rounds differently).
    #[arg(long, help_heading = "Server")]
    pub no_prompt_cache: bool,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Server"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Server"
    )]
    pub tls_key: Option<PathBuf>,

    // ---- benchmark ----
    /// Benchmark prompt processing and generation, llama-bench style.
    #[arg(long, help_heading = "Benchmark", conflicts_with_all = ["inspect", "list_tensors", "list_models", "tokenize", "repl"])]
    pub bench: bool,

    /// Measured runs (after one warm-up run).
    #[arg(
        long,
        default_value_t = 3,
        value_name = "N",
        help_heading = "Benchmark"
    )]
    pub bench_runs: usize,

    /// Print one JSON object instead of a table.
    #[arg(long, help_heading = "Benchmark")]
    pub bench_json: bool,

    /// Thread counts to measure, e.g. 1,2.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        help_heading = "Benchmark"
    )]
    pub bench_threads: Vec<usize>,

    /// Synthetic prompt length (random tokens) instead of --prompt.
    #[arg(
        long,
        default_value_t = 512,
        value_name = "N",
        help_heading = "Benchmark"
    )]
    pub bench_prompt_tokens: usize,

    /// Tokens generated per run.
    #[arg(
        long,
        default_value_t = 128,
        value_name = "N",
        help_heading = "Benchmark"
    )]
    pub bench_gen_tokens: usize,

    /// Tokens already in the context (untimed) before each pp and tg test,
    /// like llama-bench's `-d`: decode and prefill speed deep into a chat.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        help_heading = "Benchmark"
    )]
    pub bench_depth: usize,
}

impl Args {
    /// Parses `std::env::args`. Help and version go to stdout (exit 0); a usage
    /// error becomes one line on stderr and exit code 2.
    pub fn parse_or_message() -> Result<Self, ExitCode> {
        Self::try_parse().map_err(|e| clap_exit(e, "rusty-llm --help"))
    }
}

/// Help and version go to stdout (exit 0); a usage error becomes one line on
/// stderr pointing at `help` (the command that shows the usage), exit code 2.
pub(super) fn clap_exit(e: clap::Error, help: &str) -> ExitCode {
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
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("rusty-llm: {message}; see {help}");
            ExitCode::from(2)
        }
    }
}
