//! Generation from the command line: loading the runner from flags, one-shot
//! prompts (streamed to stdout), and `--bench`.

use super::chat_log::ChatLog;
use super::{Args, CliError};
use crate::chat::Message;
use crate::engine::{
    GenerationOptions, LoadOptions, Runner, SamplerConfig, Session, SessionOptions,
};
use crate::kernels::ThreadPool;
use crate::model::KvType;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

/// Loads the model with the flags' thread and memory options.
pub fn load_runner(path: &Path, args: &Args, threads: Option<usize>) -> Result<Runner, CliError> {
    let defaults = LoadOptions::default();
    let threads = threads.or(args.threads).unwrap_or(defaults.threads);
    let options = LoadOptions {
        threads,
        threads_batch: args.threads_batch.unwrap_or(threads),
        mmap: !args.no_mmap,
        mlock: args.mlock,
    };
    let runner = Runner::load(path, &options)?;
    tracing::debug!(
        "load model: {:.1} ms",
        runner.load_time().as_secs_f64() * 1e3
    );
    Ok(runner)
}

/// Generation settings from the flags.
pub fn generation_options(args: &Args) -> GenerationOptions {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    GenerationOptions {
        max_tokens: args.max_tokens,
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: args.repeat_last_n,
            presence_penalty: args.presence_penalty,
            frequency_penalty: args.frequency_penalty,
            logit_bias: Vec::new(),
            seed,
        },
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        context_shift: args.context_shift,
        top_logprobs: None,
    }
}

/// Session sizes from the flags.
pub fn session_options(runner: &Runner, args: &Args) -> Result<SessionOptions, CliError> {
    let kv_type = KvType::from_name(&args.kv_type).ok_or_else(|| {
        CliError::Usage(format!("--kv-type {:?}: expected f16 or f32", args.kv_type))
    })?;
    if args.ubatch == 0 {
        return Err(CliError::Usage("--ubatch must be at least 1".into()));
    }
    let ctx_size = args.ctx_size.unwrap_or_else(|| runner.default_ctx_size());
    if ctx_size == 0 {
        return Err(CliError::Usage("--ctx-size must be at least 1".into()));
    }
    Ok(SessionOptions {
        ctx_size,
        ubatch: args.ubatch,
        kv_type,
    })
}

/// The one-shot prompt: -p/--prompt-file, or stdin when it is not a terminal.
pub(super) fn one_shot_prompt(args: &Args) -> Result<String, CliError> {
    if !args.prompt.is_empty() || args.prompt_file.is_some() {
        return super::prompt_text(args);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::Usage(
            "no prompt: pass -p TEXT, --prompt-file PATH, pipe text on stdin, or use --repl".into(),
        ));
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text)?;
    Ok(text)
}

/// `rusty-llm MODEL -p TEXT`: streams the answer to stdout, a summary to stderr.
pub fn one_shot(path: &Path, args: &Args) -> Result<(), CliError> {
    let prompt = one_shot_prompt(args)?;
    let runner = load_runner(path, args, None)?;
    let options = generation_options(args);
    let mut session = Session::new(&runner, session_options(&runner, args)?);
    let use_chat = !args.raw && runner.has_model_template();
    let tokens = if use_chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system_prompt {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &prompt));
        runner.tokenize_chat(&messages)?
    } else {
        runner.tokenize_prompt(&prompt)
    };
    if let Some(dump_path) = &args.dump_activations {
        return dump_activations(&mut session, &tokens, dump_path);
    }
    // Refuse bad requests before printing anything.
    session.check_request(tokens.len(), &options)?;
    if !args.quiet {
        eprintln!(
            "rusty-llm: {} | {} | simd={} kernels={} threads={} | chat-template={} | ctx={} kv={:?}",
            path.display(),
            runner.model().config().arch,
            runner.model().kernels().simd.name(),
            runner.model().kernels().order.name(),
            runner.pool().threads(),
            if use_chat {
                runner.chat_template().name()
            } else {
                "raw"
            },
            session.options().ctx_size,
            session.options().kv_type,
        );
    }
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let generation = session.generate(&tokens, &options, |piece| {
        match out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writeln!(out)?;
    if let Some(log_path) = &args.chat_history {
        let mut log = ChatLog::open(log_path);
        let model = path.display().to_string();
        log.append_exchange(&model, &prompt, &generation);
    }
    if !args.quiet {
        eprintln!(
            "rusty-llm: {} prompt tokens, first token after {:.0} ms | prefill {:.1} tok/s | decode {:.1} tok/s ({} tokens, {:?})",
            generation.prompt_tokens,
            generation.time_to_first_token_ms,
            generation.prefill_tokens_per_s(),
            generation.decode_tokens_per_s(),
            generation.generated_tokens,
            generation.stop_reason,
        );
    }
    Ok(())
}

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> serde_json::Value {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    serde_json::json!({ "mean": mean, "sd": var.sqrt() })
}

/// `--bench`: for each thread count, one warm-up run and `--bench-runs`
/// measured runs of a synthetic prompt (`--bench-prompt-tokens` random
/// tokens) followed by `--bench-gen-tokens` greedy tokens, like llama-bench's
/// pp and tg tests. Prints a table, or one JSON object with `--bench-json`.
pub fn bench(path: &Path, args: &Args) -> Result<(), CliError> {
    let thread_counts = if args.bench_threads.is_empty() {
        vec![args.threads.unwrap_or_else(ThreadPool::default_threads)]
    } else {
        args.bench_threads.clone()
    };
    if thread_counts.contains(&0) || args.bench_runs == 0 {
        return Err(CliError::Usage(
            "--bench-threads and --bench-runs must be positive".into(),
        ));
    }
    let mut results = Vec::new();
    // Progress on stderr (a terminal only): one step per run, warm-up included.
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new((thread_counts.len() * (args.bench_runs + 1)) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut out = std::io::stdout().lock();
    if !args.bench_json {
        writeln!(
            out,
            "| model | threads | simd | test | tokens/s (mean ± sd) |"
        )?;
        writeln!(out, "|---|---:|---|---|---:|")?;
    }
    for &threads in &thread_counts {
        let runner = load_runner(path, args, Some(threads))?;
        let n_vocab = runner.model().config().n_vocab as u32;
        // Deterministic pseudo-random ids, avoiding the first few (specials).
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut random_tokens = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    3 + (s % (n_vocab.max(4) as u64 - 3)) as u32
                })
                .collect()
        };
        let prompt: Vec<u32> = match (args.prompt.as_slice(), &args.prompt_file) {
            ([], None) => random_tokens(args.bench_prompt_tokens.max(1)),
            _ => runner.tokenize_prompt(&super::prompt_text(args)?),
        };
        // As llama-bench does: ppN is the prompt's prefill alone, tgN a
        // generation after one token of prompt, both behind `--bench-depth`
        // tokens already cached (none by default), so decode speed does not
        // depend on the prompt length.
        let depth = random_tokens(args.bench_depth);
        let after_depth = |tokens: &[u32]| [depth.as_slice(), tokens].concat();
        let (pp_prompt, tg_prompt) = (after_depth(&prompt), after_depth(&prompt[..1]));
        let prefill_only = GenerationOptions::greedy(0);
        let mut options = GenerationOptions::greedy(args.bench_gen_tokens);
        options.ignore_eos = true;
        let session_opts = SessionOptions {
            ctx_size: depth.len() + prompt.len() + args.bench_gen_tokens + 1,
            ..session_options(&runner, args)?
        };
        // A session holding the depth tokens, its prefill not timed.
        let session_at_depth = || -> Result<Session<'_>, CliError> {
            let mut session = Session::new(&runner, session_opts);
            if !depth.is_empty() {
                session.prefill(&depth)?;
            }
            Ok(session)
        };
        let mut runs = Vec::new();
        let mut warmup = None;
        bar.set_message(format!("bench, {threads} thread(s)"));
        for run in 0..=args.bench_runs {
            bar.inc(1);
            let started = std::time::Instant::now();
            let pp = session_at_depth()?.generate(&pp_prompt, &prefill_only, |_| true)?;
            let tg = session_at_depth()?.generate(&tg_prompt, &options, |_| true)?;
            let record = serde_json::json!({
                "prompt_tokens": pp.prompt_tokens - pp.cached_tokens,
                "generated_tokens": tg.generated_tokens,
                "prefill_ms": pp.prefill_ms,
                "decode_ms": tg.decode_ms,
                "wall_ms": started.elapsed().as_secs_f64() * 1e3,
                "prefill_tokens_per_s": pp.prefill_tokens_per_s(),
                "decode_tokens_per_s": tg.decode_tokens_per_s(),
            });
            if run == 0 {
                warmup = Some(record);
            } else {
                runs.push(record);
            }
        }
        let series =
            |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key].as_f64()).collect() };
        let summary = serde_json::json!({
            "prefill_tokens_per_s": mean_sd(&series("prefill_tokens_per_s")),
            "decode_tokens_per_s": mean_sd(&series("decode_tokens_per_s")),
            "prefill_ms": mean_sd(&series("prefill_ms")),
            "decode_ms": mean_sd(&series("decode_ms")),
        });
        let model = path.display().to_string();
        let simd = runner.model().kernels().simd.name();
        if !args.bench_json {
            // llama-bench's labels: "pp512", or "pp512 @ d2048" at a depth.
            let at_depth = match depth.len() {
                0 => String::new(),
                d => format!(" @ d{d}"),
            };
            for (test, key) in [
                (
                    format!("pp{}{at_depth}", prompt.len()),
                    "prefill_tokens_per_s",
                ),
                (
                    format!("tg{}{at_depth}", args.bench_gen_tokens),
                    "decode_tokens_per_s",
                ),
            ] {
                writeln!(
                    out,
                    "| {model} | {threads} | {simd} | {test} | {:.2} ± {:.2} |",
                    summary[key]["mean"].as_f64().unwrap_or(0.0),
                    summary[key]["sd"].as_f64().unwrap_or(0.0)
                )?;
            }
        }
        results.push(serde_json::json!({
            "model": model,
            "threads": threads,
            "simd": simd,
            "kv_type": format!("{:?}", session_opts.kv_type),
            "weight_bytes_per_token": runner.model().weight_bytes_per_token(),
            "prompt_tokens": prompt.len(),
            "gen_tokens": args.bench_gen_tokens,
            "depth": depth.len(),
            "warmup": warmup,
            "runs": runs,
            "summary": summary,
        }));
    }
    bar.finish_and_clear();
    if args.bench_json {
        // The first thread count's result at the top level; all of them
        // under `results` when several were measured.
        let mut value = results[0].clone();
        if results.len() > 1 {
            value["results"] = serde_json::Value::Array(results);
        }
        serde_json::to_writer(&mut out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `--dump-activations PATH`: one prefill of the prompt, every activation the
/// decoder names written as `{"name", "tokens", "width", "values"}` lines.
fn dump_activations(
    session: &mut Session<'_>,
    tokens: &[u32],
    path: &Path,
) -> Result<(), CliError> {
    let file = std::fs::File::create(path)
        .map_err(|e| CliError::Usage(format!("--dump-activations {}: {e}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let mut failure = None;
    let n_tokens = tokens.len();
    let mut hook = |name: &str, values: &[f32]| {
        if failure.is_some() {
            return;
        }
        // `result_*` hold only the rows that produce logits (the last token).
        let rows = if name.starts_with("result_") {
            1
        } else {
            n_tokens
        };
        let line = serde_json::json!({
            "name": name,
            "tokens": rows,
            "width": values.len() / rows.max(1),
            "values": values,
        });
        if let Err(e) = serde_json::to_writer(&mut out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
        {
            failure = Some(e);
        }
    };
    session.prefill_with_hook(tokens, Some(&mut hook))?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    out.flush()?;
    Ok(())
}

/// `--serve ADDR`: the HTTP server over this model.
pub fn serve(path: &Path, addr: std::net::SocketAddr, args: &Args) -> Result<(), CliError> {
    let defaults = LoadOptions::default();
    let threads = args.threads.unwrap_or(defaults.threads);
    let kv_type = KvType::from_name(&args.kv_type).ok_or_else(|| {
        CliError::Usage(format!("--kv-type {:?}: expected f16 or f32", args.kv_type))
    })?;
    let options = crate::server::ServerOptions {
        addr,
        model_path: path.to_path_buf(),
        load: LoadOptions {
            threads,
            threads_batch: args.threads_batch.unwrap_or(threads),
            mmap: !args.no_mmap,
            mlock: args.mlock,
        },
        session: SessionOptions {
            ctx_size: args.ctx_size.unwrap_or(0),
            ubatch: args.ubatch.max(1),
            kv_type,
        },
        parallel: args.parallel as usize,
        queue_size: args.queue_size,
        max_body_bytes: args.max_body_bytes,
        api_key: args.api_key.clone(),
        max_connections: args
            .max_connections
            .map_or((threads * 8).max(16), |n| n as usize),
        read_timeout: std::time::Duration::from_secs(args.read_timeout),
        cache_prompt: !args.no_prompt_cache,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
    };
    crate::server::serve(options)?;
    Ok(())
}
