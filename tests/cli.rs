//! The `rusty-llm` binary as a user runs it: reports on stdout, one-line errors
//! on stderr, exit code 2 for anything the user can fix.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args(args)
        .env_remove("RUSTY_LLM_MODEL_DIR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rusty-llm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

/// A failure the user can fix: exit code 2 and exactly one line on stderr.
fn assert_user_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn inspect_default_model() {
    let Some(model) = common::default_model() else {
        return;
    };
    let r = json(&run(&[model.to_str().unwrap(), "--inspect"]));
    assert_eq!(r["architecture"], "gemma3");
    assert_eq!(r["block_count"], 18);
    assert_eq!(r["embedding_length"], 640);
    assert_eq!(r["context_length"], 32768);
    assert_eq!(r["head_count"], 4);
    assert_eq!(r["head_count_kv"], 1);
    assert_eq!(r["file_type"], "Q4_K_M");
    assert_eq!(r["parameter_count"], 268_098_176);
    assert_eq!(r["chat_template"], false);
    let types = &r["tensor_types"];
    for (ty, n) in [
        ("F32", 109),
        ("Q5_0", 81),
        ("Q4_K", 27),
        ("Q8_0", 10),
        ("Q6_K", 9),
    ] {
        assert_eq!(types[ty]["tensors"], n, "{ty}");
    }
    assert_eq!(types["Q8_0"]["bytes"], 179_824_640);
    assert_eq!(r["tokenizer"]["model"], "llama");
    assert_eq!(r["tokenizer"]["vocab_size"], 262_144);
    assert_eq!(r["tokenizer"]["bos_token_id"], 2);
    assert_eq!(r["tokenizer"]["eos_token_id"], 1);
    assert_eq!(r["architecture_known"], true);
    assert_eq!(r["missing_tensors"].as_array().unwrap().len(), 0);
    assert_eq!(r["unsupported_tensor_types"].as_array().unwrap().len(), 0);
    assert_eq!(r["supported"], true, "{}", r["reasons"]);
    assert_eq!(r["reasons"].as_array().unwrap().len(), 0);
}

#[test]
fn inspect_reports_missing_tensors_and_unknown_architectures() {
    use rusty_llm::gguf::{GgmlType, GgufFile, GgufWriter, Value};
    let dir = tempfile::tempdir().unwrap();
    // tiny-llama with one block tensor dropped.
    let src = GgufFile::open(common::data("tiny-llama-Q4_K_M.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata().iter() {
        w.set(k, v.clone());
    }
    for t in src
        .tensors()
        .iter()
        .filter(|t| t.name != "blk.1.ffn_gate.weight")
    {
        w.add_tensor(&t.name, t.ggml_type, t.shape(), src.view(t).data)
            .unwrap();
    }
    let pruned = dir.path().join("pruned.gguf");
    w.write_file(&pruned).unwrap();
    let r = json(&run(&[pruned.to_str().unwrap(), "--inspect"]));
    assert_eq!(
        r["missing_tensors"],
        serde_json::json!(["blk.1.ffn_gate.weight"])
    );
    assert!(r["reasons"].to_string().contains("blk.1.ffn_gate.weight"));

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("mamba".into()));
    w.add_tensor("t", GgmlType::IQ2_XXS, &[256], vec![0u8; 66])
        .unwrap();
    let odd = dir.path().join("odd.gguf");
    w.write_file(&odd).unwrap();
    let r = json(&run(&[odd.to_str().unwrap(), "--inspect"]));
    assert_eq!(r["supported"], false);
    assert_eq!(r["architecture_known"], false);
    assert_eq!(
        r["unsupported_tensor_types"],
        serde_json::json!(["IQ2_XXS"])
    );
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("mamba") && reasons.contains("IQ2_XXS"),
        "{reasons}"
    );
}

#[test]
fn inspect_works_on_vocab_only_files() {
    let path = common::data("vocab/ggml-vocab-bert-bge.gguf");
    let r = json(&run(&[path.to_str().unwrap(), "--inspect"]));
    assert_eq!(r["tensor_count"], 0);
    assert_eq!(r["tokenizer"]["model"], "bert");
    assert_eq!(r["tokenizer"]["vocab_size"], 30522);
}

#[test]
fn list_tensors_prints_the_directory() {
    let path = common::data("tiny-llama-Q4_K_M.gguf");
    let o = run(&[path.to_str().unwrap(), "--list-tensors"]);
    assert!(o.status.success());
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("name") && lines[0].contains("bytes"));
    let row = |name: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split_whitespace().map(str::to_string).collect()
    };
    // name, type, "256 x 1024", bytes; llama.cpp's Q4_K_M keeps the output in Q6_K.
    assert_eq!(
        row("output.weight"),
        ["output.weight", "Q6_K", "256", "x", "1024", "215040"]
    );
    assert_eq!(row("token_embd.weight")[1], "Q4_K");
    assert_eq!(row("blk.1.ffn_down.weight")[2..5], ["512", "x", "256"]);
    // 3 global tensors and 9 per block, 2 blocks, plus the header.
    assert_eq!(lines.len(), 1 + 3 + 2 * 9);
}

#[test]
fn models_are_found_by_name_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("org/repo");
    std::fs::create_dir_all(&nested).unwrap();
    for f in ["tiny-llama-Q4_K_M.gguf", "tiny-gemma-Q4_K_M.gguf"] {
        std::fs::copy(common::data(f), nested.join(f)).unwrap();
    }
    std::fs::write(nested.join("mmproj-tiny.gguf"), b"not a model").unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let o = run(&["--list-models", "--model-dir", dir_arg]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("tiny-gemma-Q4_K_M") && l.contains("gemma"))
    );
    assert!(out.contains("Q4_K_M") && !out.contains("mmproj"));

    let r = json(&run(&["tiny-gemma", "--inspect", "--model-dir", dir_arg]));
    assert_eq!(r["architecture"], "gemma");

    let o = Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args(["tiny-llama-q4_k_m", "--inspect"])
        .env("RUSTY_LLM_MODEL_DIR", dir_arg)
        .output()
        .unwrap();
    assert_eq!(json(&o)["architecture"], "llama");

    assert_user_error(
        &run(&["tiny", "--inspect", "--model-dir", dir_arg]),
        "matches 2 models",
    );
    assert_user_error(
        &run(&["qwen", "--inspect", "--model-dir", dir_arg]),
        "tiny-llama-Q4_K_M",
    );
    assert_user_error(
        &run(&[nested.to_str().unwrap(), "--inspect"]),
        "matches 2 models",
    );
}

#[test]
fn user_errors_are_one_line_with_exit_code_2() {
    assert_user_error(&run(&["--bogus-flag"]), "--bogus-flag");
    assert_user_error(&run(&["/no/such/model.gguf", "--inspect"]), "not found");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    assert_user_error(
        &run(&[manifest.to_str().unwrap(), "--inspect"]),
        "not a GGUF file",
    );
    let empty = tempfile::tempdir().unwrap();
    assert_user_error(
        &run(&[empty.path().to_str().unwrap(), "--inspect"]),
        "no .gguf models",
    );
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("cut.gguf");
    let bytes = std::fs::read(common::data("tiny-llama-Q4_K_M.gguf")).unwrap();
    std::fs::write(&truncated, &bytes[..5000]).unwrap();
    assert_user_error(
        &run(&[truncated.to_str().unwrap(), "--inspect"]),
        "truncated",
    );
    assert_user_error(&run(&[]), "no model given");
}

#[test]
fn verbose_times_each_startup_step() {
    let path = common::data("tiny-llama-Q4_K_M.gguf");
    let o = run(&[path.to_str().unwrap(), "--inspect", "-v"]);
    assert!(o.status.success());
    let err = stderr(&o);
    for step in ["kernels: ", "resolve", "open and map", "parse"] {
        assert!(
            err.contains(step) && err.contains(" ms"),
            "{step} missing in {err}"
        );
    }
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
}

#[test]
fn tokenize_prints_ids_as_one_json_line() {
    let vocab = common::data("vocab/ggml-vocab-llama-spm.gguf");
    let v = vocab.to_str().unwrap();
    // A vocabulary-only file is enough: no weights are needed.
    let o = run(&[v, "--tokenize", "--prompt", "Hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[1,15043,3186]\n");
    let o = run(&[v, "--tokenize", "--prompt", "Hello world", "--no-bos"]);
    assert_eq!(stdout(&o), "[15043,3186]\n");
    // Special text is plain text unless --parse-special.
    let o = run(&[v, "--tokenize", "-p", "<s>", "--no-bos"]);
    assert_ne!(stdout(&o), "[1]\n");
    let o = run(&[v, "--tokenize", "-p", "<s>", "--no-bos", "--parse-special"]);
    assert_eq!(stdout(&o), "[1]\n");

    let o = run(&[v, "--tokenize", "-p", "Hello\tworld", "--show-tokens"]);
    assert_eq!(stdout(&o), "1\t<s>\n15043\t Hello\n12\t\\t\n11526\tworld\n");

    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, "Hello world").unwrap();
    let o = run(&[v, "--tokenize", "--prompt-file", prompt.to_str().unwrap()]);
    assert_eq!(stdout(&o), "[1,15043,3186]\n");

    assert_user_error(&run(&[v, "--tokenize"]), "no prompt given");
    assert_user_error(&run(&[v, "--show-tokens", "-p", "x"]), "--tokenize");
    let model = common::data("tiny-llama-Q4_K_M.gguf");
    let o = run(&[model.to_str().unwrap(), "--tokenize", "-p", "Hello world"]);
    assert_eq!(stdout(&o), "[1,379,295,417,281,272,430]\n");
}

#[test]
fn tokenize_refuses_unsupported_tokenizers_by_name() {
    use rusty_llm::gguf::{Array, GgufWriter, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t5.gguf");
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("t5".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into()])),
    );
    w.write_file(&path).unwrap();
    assert_user_error(
        &run(&[path.to_str().unwrap(), "--tokenize", "-p", "a"]),
        "\"t5\"",
    );
}

#[test]
fn simd_variant_can_be_forced_and_bad_values_are_refused() {
    let path = common::data("tiny-llama-Q4_K_M.gguf");
    let p = path.to_str().unwrap();
    let with_simd = |v: &str| {
        Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
            .args([p, "--inspect", "-v"])
            .env("RUSTY_LLM_SIMD", v)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = with_simd("scalar");
    assert!(o.status.success());
    assert!(stderr(&o).contains("kernels: scalar"), "{}", stderr(&o));
    assert_user_error(&with_simd("sse9"), "RUSTY_LLM_SIMD");
}

#[test]
fn kernel_order_can_be_chosen_and_bad_values_are_refused() {
    let path = common::data("tiny-llama-Q4_K_M.gguf");
    let p = path.to_str().unwrap();
    let with_order = |v: &str| {
        Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
            .args([p, "--inspect", "-v"])
            .env("RUSTY_LLM_KERNELS", v)
            .env_remove("RUSTY_LLM_SIMD")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = with_order("exact");
    assert!(o.status.success());
    assert!(stderr(&o).contains("in exact order"), "{}", stderr(&o));
    assert_user_error(&with_order("sloppy"), "RUSTY_LLM_KERNELS");
}

fn tiny_model(name: &str) -> Option<String> {
    let path = common::shared()?.join("tiny").join(format!("{name}.gguf"));
    Some(path.to_str().unwrap().to_string())
}

#[test]
fn generates_from_prompt_flag_and_stdin() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let args = [
        &model,
        "-p",
        "Hello",
        "-n",
        "8",
        "--temp",
        "0",
        "--ignore-eos",
        "-q",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.trim().is_empty());
    assert!(stderr(&o).is_empty(), "--quiet: {}", stderr(&o));
    // Deterministic with --temp 0, and the same from stdin.
    assert_eq!(stdout(&run(&args)), text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args([&model, "-n", "8", "--temp", "0", "--ignore-eos", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"Hello").unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), text);

    // Without --quiet a summary goes to stderr.
    let o = run(&[&model, "-p", "Hello", "-n", "4", "--temp", "0"]);
    let err = stderr(&o);
    assert!(
        err.contains("chat-template=") && err.contains("tok/s"),
        "{err}"
    );
}

#[test]
fn generation_errors_are_one_line() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let o = run(&[
        &model,
        "-p",
        "Hello world, this is long",
        "-c",
        "8",
        "-n",
        "4",
    ]);
    assert_user_error(&o, "--ctx-size");
    let o = run(&[&model, "-p", "Hi", "--kv-type", "q4"]);
    assert_user_error(&o, "--kv-type");
    let o = run(&[&model, "-p", "Hi", "--top-p", "0"]);
    assert_user_error(&o, "top_p");
}

#[test]
fn chat_history_appends_turns() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chat.jsonl");
    let log_arg = log.to_str().unwrap();
    for _ in 0..2 {
        let o = run(&[
            &model,
            "-p",
            "Hi",
            "-n",
            "3",
            "--temp",
            "0",
            "-q",
            "--chat-history",
            log_arg,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["role"], "user");
    assert_eq!(lines[0]["content"], "Hi");
    assert_eq!(lines[1]["role"], "assistant");
    assert!(lines[1]["generated_tokens"].as_u64().unwrap() <= 3);
}

#[test]
fn bench_json_reports_runs_and_summary() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let o = run(&[
        &model,
        "--bench",
        "--bench-json",
        "--bench-runs",
        "2",
        "--bench-prompt-tokens",
        "16",
        "--bench-gen-tokens",
        "4",
        "--bench-threads",
        "1,2",
    ]);
    let r = json(&o);
    assert_eq!(r["threads"], 1);
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    assert_eq!(r["runs"][0]["prompt_tokens"], 16);
    assert_eq!(r["runs"][0]["generated_tokens"], 4);
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(r["summary"][key]["mean"].as_f64().unwrap() > 0.0, "{key}");
        assert!(r["summary"][key]["sd"].as_f64().is_some(), "{key}");
    }
    assert!(r["simd"].is_string() && r["model"].is_string());
    // The table form has pp and tg rows.
    let o = run(&[
        &model,
        "--bench",
        "--bench-runs",
        "1",
        "--bench-prompt-tokens",
        "8",
        "--bench-gen-tokens",
        "2",
    ]);
    let table = stdout(&o);
    assert!(table.contains("pp8") && table.contains("tg2"), "{table}");
}

#[test]
fn bench_depth_measures_after_cached_tokens() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let o = run(&[
        &model,
        "--bench",
        "--bench-json",
        "--bench-runs",
        "1",
        "--bench-prompt-tokens",
        "16",
        "--bench-gen-tokens",
        "4",
        "--bench-depth",
        "40",
    ]);
    let r = json(&o);
    assert_eq!(r["depth"], 40);
    // Only the 16 new tokens are prefilled; the 40 before them come from the cache.
    assert_eq!(r["runs"][0]["prompt_tokens"], 16);
    assert_eq!(r["runs"][0]["generated_tokens"], 4);
    let o = run(&[
        &model,
        "--bench",
        "--bench-runs",
        "1",
        "--bench-prompt-tokens",
        "8",
        "--bench-gen-tokens",
        "2",
        "--bench-depth",
        "40",
    ]);
    let table = stdout(&o);
    assert!(
        table.contains("pp8 @ d40") && table.contains("tg2 @ d40"),
        "{table}"
    );
}

#[test]
fn repl_reuses_the_cache_across_turns() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args([&model, "--repl", "-n", "4", "--temp", "0", "--ignore-eos"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\n/stats\nHow are you\n/stats\n/bogus\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let stats: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("reused from the cache"))
        .collect();
    assert_eq!(stats.len(), 2, "{err}");
    assert!(stats[0].contains("(0 reused"), "{}", stats[0]);
    // The second turn's prompt starts with the first turn: its tokens are reused.
    let reused: usize = stats[1]
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reused > 5, "{}", stats[1]);
    assert!(err.contains("unknown command /bogus"));
}

#[test]
fn dump_activations_writes_every_layer() {
    let Some(model) = tiny_model("tiny-llama-Q8_0") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acts.jsonl");
    let o = run(&[
        &model,
        "--raw",
        "-p",
        "Hello world",
        "--dump-activations",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    for want in [
        "inp_embd",
        "blk.0.attn_norm",
        "blk.1.attn_out",
        "blk.1.l_out",
        "result_norm",
        "result_output",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let logits = lines.iter().find(|l| l["name"] == "result_output").unwrap();
    assert_eq!(logits["width"], 1024);
    assert_eq!(logits["values"].as_array().unwrap().len(), 1024);
    let embd = &lines[0];
    assert_eq!(embd["width"], 256);
    assert_eq!(
        embd["values"].as_array().unwrap().len(),
        256 * embd["tokens"].as_u64().unwrap() as usize
    );
}

#[test]
fn embed_prints_one_json_vector_per_input() {
    let model = common::data("embed/tiny-bert-Q4_K_M.gguf");
    let m = model.to_str().unwrap();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::data("embed/tiny-bert-Q4_K_M.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<f32> =
        serde_json::from_value(reference["embeddings"][0]["embedding"].clone()).unwrap();
    let vectors = |o: &Output| -> Vec<Vec<f32>> {
        assert!(o.status.success(), "failed: {}", stderr(o));
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON array per line"))
            .collect()
    };

    let one = vectors(&run(&[m, "--embed", "-p", "Hello world"]));
    assert_eq!(one.len(), 1);
    let v = &one[0];
    assert_eq!(v.len(), 256);
    let dot: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
    assert!(dot > 0.999, "cosine with llama.cpp's embedding: {dot}");

    let two = vectors(&run(&[
        m,
        "--embed",
        "-q",
        "-p",
        "Hello world",
        "-p",
        "A cat.",
    ]));
    assert_eq!(two.len(), 2);
    // Batched with another input: the same up to f32 rounding.
    let dot: f32 = two[0].iter().zip(&one[0]).map(|(a, b)| a * b).sum();
    assert!(dot > 0.99999, "{dot}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, "Hello world\n\nA cat.\n").unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(vectors(&run(&[m, "--embed", "--prompt-file", f])), two);

    let long = "word ".repeat(300);
    assert_user_error(
        &run(&[m, "--embed", "-q", "-p", "hi", "-p", &long]),
        "input 1 is 302 tokens long, more than the context of 256 tokens",
    );
    assert_user_error(
        &run(&[m, "-p", "hi", "-p", "ho"]),
        "only --embed takes several",
    );
    assert_user_error(&run(&[m, "-p", "hi"]), "embedding model");

    let r = json(&run(&[m, "--inspect"]));
    assert_eq!(r["supported"], true, "{}", r["reasons"]);
    assert_eq!(r["capabilities"], serde_json::json!(["embedding"]));
}
