//! `--repl`: an interactive chat. The conversation is re-rendered through the
//! chat template each turn and the session's KV cache is reused, so only the
//! new tokens are prefilled. Ctrl-C stops the current answer (not the
//! program), Ctrl-D exits.

use super::chat_log::ChatLog;
use super::generate::{generation_options, load_runner, session_options};
use super::{Args, CliError};
use crate::chat::Message;
use crate::engine::Session;
use rustyline::error::ReadlineError;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const HELP: &str = "commands: /reset (forget the conversation), /system TEXT (set the system prompt), \
/stats (last answer's speed), /help; end a line with \\ to continue it; Ctrl-C stops an answer, Ctrl-D exits";

pub fn repl(path: &Path, args: &Args) -> Result<(), CliError> {
    let runner = load_runner(path, args, None)?;
    let mut options = generation_options(args);
    let mut session = Session::new(&runner, session_options(&runner, args)?);
    let model_name = path.display().to_string();
    let mut log = args.chat_history.as_deref().map(ChatLog::open);
    let mut system = args.system_prompt.clone();
    let mut history: Vec<Message> = Vec::new();
    let mut last_stats = None;

    // Ctrl-C while generating sets this flag; at the prompt rustyline sees it.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc_handler(move || flag.store(true, Ordering::SeqCst));
    }

    eprintln!(
        "rusty-llm chat: {} ({}), chat-template={}, ctx={}. {HELP}",
        model_name,
        runner.model().config().arch,
        runner.chat_template().name(),
        session.options().ctx_size
    );
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| CliError::Usage(format!("cannot start the line editor: {e}")))?;
    loop {
        let mut input = String::new();
        let mut prompt = "> ";
        loop {
            match editor.readline(prompt) {
                Ok(line) => {
                    if let Some(head) = line.strip_suffix('\\') {
                        input.push_str(head);
                        input.push('\n');
                        prompt = ". ";
                        continue;
                    }
                    input.push_str(&line);
                    break;
                }
                Err(ReadlineError::Interrupted) => {
                    input.clear();
                    break;
                }
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(CliError::Usage(format!("line editor: {e}"))),
            }
        }
        let input = input.trim();
        if input.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(input);
        match input
            .split_once(' ')
            .map_or((input, ""), |(c, rest)| (c, rest))
        {
            ("/help", _) => {
                eprintln!("{HELP}");
                continue;
            }
            ("/reset", _) => {
                history.clear();
                session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            ("/system", text) => {
                system = (!text.trim().is_empty()).then(|| text.trim().to_string());
                history.clear();
                session.reset();
                eprintln!("(system prompt set; conversation cleared)");
                continue;
            }
            ("/stats", _) => {
                match &last_stats {
                    Some(s) => eprintln!("{s}"),
                    None => eprintln!("(no answer yet)"),
                }
                continue;
            }
            (cmd, _) if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}; {HELP}");
                continue;
            }
            _ => {}
        }

        history.push(Message::new("user", input));
        let mut messages = Vec::new();
        if let Some(s) = &system {
            messages.push(Message::new("system", s));
        }
        messages.extend(history.iter().cloned());
        let tokens = runner.tokenize_chat(&messages)?;
        options.sampler.seed = options.sampler.seed.wrapping_add(1);
        interrupted.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let result = session.generate(&tokens, &options, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            !interrupted.load(Ordering::SeqCst)
        });
        let _ = writeln!(out);
        match result {
            Ok(g) => {
                let stats = format!(
                    "{} prompt tokens ({} reused from the cache), first token after {:.0} ms, prefill {:.1} tok/s, decode {:.1} tok/s, {} tokens ({:?})",
                    g.prompt_tokens,
                    g.cached_tokens,
                    g.time_to_first_token_ms,
                    g.prefill_tokens_per_s(),
                    g.decode_tokens_per_s(),
                    g.generated_tokens,
                    g.stop_reason
                );
                if let Some(log) = log.as_mut() {
                    log.append_exchange(&model_name, input, &g);
                }
                history.push(Message::new("assistant", &g.text));
                last_stats = Some(stats);
            }
            Err(e) => {
                // The turn failed (e.g. the context is full): drop it, keep the chat.
                history.pop();
                eprintln!("rusty-llm: {e}");
            }
        }
    }
}

/// Installs a SIGINT handler that calls `f` instead of killing the process.
fn ctrlc_handler(f: impl Fn() + Send + Sync + 'static) {
    if let Err(e) = ctrlc::set_handler(f) {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}
