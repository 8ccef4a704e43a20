//! The HTTP server as a client sees it: the binary started with `--serve` on a
//! loopback port, spoken to over plain HTTP/1.1.

mod common;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status, headers (lowercased names) and body of one request.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    try_request(port, method, path, body, extra).unwrap()
}

fn try_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, head, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn start(model: &str, extra: &[&str]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![model, "--serve", &addr, "--threads", "1"];
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args(&args)
        .env_remove("RUSTY_LLM_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Until the listener is up, connections are refused (or reset).
        if let Ok((200, _, _)) = try_request(port, "GET", "/ready", None, &[]) {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tiny(name: &str) -> Option<String> {
    Some(
        common::shared()?
            .join("tiny")
            .join(format!("{name}.gguf"))
            .to_str()
            .unwrap()
            .to_string(),
    )
}

#[test]
fn openai_and_native_routes() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;

    let (status, _, body) = request(p, "GET", "/health", None, &[]);
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (200, json!("ok"))
    );
    let (_, _, body) = request(p, "GET", "/v1/models", None, &[]);
    let models = json_of(&body);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-llama-Q8_0");
    assert_eq!(
        request(p, "GET", "/v1/models/tiny-llama-Q8_0", None, &[]).0,
        200
    );
    // Unknown ids map to the loaded model (clients hard-code names).
    let (_, _, body) = request(p, "GET", "/v1/models/gpt-4o", None, &[]);
    assert_eq!(json_of(&body)["id"], "tiny-llama-Q8_0");

    // Chat, greedy: deterministic, with usage.
    let chat = json!({"model": "x", "messages": [{"role": "user", "content": "Hello"}],
                      "max_tokens": 6, "temperature": 0, "ignore_eos": true})
    .to_string();
    let (status, _, body) = request(p, "POST", "/v1/chat/completions", Some(&chat), &[]);
    assert_eq!(status, 200, "{body}");
    let r = json_of(&body);
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(
        r["model"], "tiny-llama-Q8_0",
        "responses name the serving model"
    );
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 6);
    let text = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    // The same request streamed gives the same text, chunk by chunk, then [DONE].
    let streamed = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6,
                          "temperature": 0, "ignore_eos": true, "stream": true})
    .to_string();
    let (status, head, body) = request(p, "POST", "/v1/chat/completions", Some(&streamed), &[]);
    assert_eq!(status, 200);
    assert!(head.contains("text/event-stream"), "{head}");
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let mut joined = String::new();
    for d in &datas[..datas.len() - 1] {
        let chunk = json_of(d);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            joined.push_str(t);
        }
    }
    assert_eq!(joined, text);
    let last = json_of(datas[datas.len() - 2]);
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    // The second identical prompt reused the cached prefix.
    assert!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Text completions and the native route.
    let c = json!({"prompt": "Once upon", "max_tokens": 4, "temperature": 0, "ignore_eos": true})
        .to_string();
    let (status, _, body) = request(p, "POST", "/v1/completions", Some(&c), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["object"], "text_completion");
    let (status, _, body) = request(p, "POST", "/generate", Some(&c), &[]);
    assert_eq!(status, 200, "{body}");
    let g = json_of(&body);
    assert_eq!(g["generated_tokens"], 4);
    for key in [
        "text",
        "prompt_tokens",
        "prefill_ms",
        "decode_ms",
        "total_ms",
    ] {
        assert!(!g[key].is_null(), "{key}");
    }

    // llama-server's tokenize / detokenize shapes round-trip.
    let (_, _, body) = request(
        p,
        "POST",
        "/tokenize",
        Some(r#"{"content": "Hello world"}"#),
        &[],
    );
    let tokens = json_of(&body)["tokens"].clone();
    assert!(!tokens.as_array().unwrap().is_empty());
    let (_, _, body) = request(
        p,
        "POST",
        "/detokenize",
        Some(&json!({"tokens": tokens}).to_string()),
        &[],
    );
    assert_eq!(json_of(&body)["content"], "Hello world");

    // Bad requests: clear 4xx JSON errors, never a crash.
    for (path, bad) in [
        ("/v1/chat/completions", "{not json"),
        ("/v1/chat/completions", r#"{"messages": []}"#),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}"#,
        ),
        (
            "/v1/completions",
            r#"{"prompt": "hi", "max_tokens": 100000}"#,
        ),
        ("/generate", r#"{"max_tokens": 3}"#),
        ("/detokenize", r#"{"tokens": [999999]}"#),
    ] {
        let (status, _, body) = request(p, "POST", path, Some(bad), &[]);
        assert!(
            (400..500).contains(&status),
            "{path} {bad}: {status} {body}"
        );
        assert!(json_of(&body)["error"]["message"].is_string(), "{body}");
    }
    let (status, _, body) = request(p, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#), &[]);
    assert_eq!(status, 501, "{body}");
    assert_eq!(request(p, "GET", "/nope", None, &[]).0, 404);

    // A client that disconnects mid-stream does not wedge the engine.
    let long = json!({"prompt": "Hello", "max_tokens": 200, "ignore_eos": true, "stream": true})
        .to_string();
    let mut c = TcpStream::connect(("127.0.0.1", p)).unwrap();
    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}", long.len()).unwrap();
    let mut first = [0u8; 64];
    let _ = c.read(&mut first).unwrap();
    drop(c);
    let (status, _, _) = request(p, "POST", "/generate", Some(&c_small()), &[]);
    assert_eq!(status, 200);
}

fn c_small() -> String {
    json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}).to_string()
}

#[test]
fn api_key_guards_everything_but_health() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &["--api-key", "sekrit"]);
    let p = s.port;
    assert_eq!(request(p, "GET", "/health", None, &[]).0, 200);
    let (status, head, _) = request(p, "GET", "/v1/models", None, &[]);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate"));
    assert_eq!(
        request(
            p,
            "GET",
            "/v1/models",
            None,
            &[("Authorization", "Bearer wrong")]
        )
        .0,
        401
    );
    assert_eq!(
        request(
            p,
            "GET",
            "/v1/models",
            None,
            &[("Authorization", "Bearer sekrit")]
        )
        .0,
        200
    );
    let (status, _, _) = request(
        p,
        "POST",
        "/generate",
        Some(&c_small()),
        &[("Authorization", "Bearer sekrit")],
    );
    assert_eq!(status, 200);
}

#[test]
fn ollama_routes() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    // Non-streaming chat.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "stream": false,
                      "options": {"temperature": 0, "num_predict": 5}})
    .to_string();
    let (status, _, body) = request(p, "POST", "/api/chat", Some(&chat), &[]);
    assert_eq!(status, 200, "{body}");
    let r = json_of(&body);
    assert_eq!(r["done"], true);
    assert_eq!(r["message"]["role"], "assistant");
    assert!(r["eval_count"].as_u64().unwrap() <= 5);
    assert!(r["prompt_eval_count"].as_u64().unwrap() > 0);
    let text = r["message"]["content"].as_str().unwrap().to_string();

    // Streaming is Ollama's default: JSON lines ending with done: true.
    let streamed = json!({"messages": [{"role": "user", "content": "Hello"}],
                          "options": {"temperature": 0, "num_predict": 5}})
    .to_string();
    let (status, head, body) = request(p, "POST", "/api/chat", Some(&streamed), &[]);
    assert_eq!(status, 200);
    assert!(head.contains("application/x-ndjson"), "{head}");
    let lines: Vec<Value> = body
        .lines()
        .filter(|l| !l.is_empty())
        .map(json_of)
        .collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    let joined: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(joined, text);

    let generate = json!({"prompt": "Once upon", "raw": true, "stream": false, "options": {"num_predict": 3, "temperature": 0}})
        .to_string();
    let (status, _, body) = request(p, "POST", "/api/generate", Some(&generate), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["response"].is_string());

    let (_, _, body) = request(p, "GET", "/api/tags", None, &[]);
    let tags = json_of(&body);
    assert_eq!(tags["models"][0]["name"], "tiny-llama-Q8_0");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");
    let (_, _, body) = request(p, "GET", "/api/ps", None, &[]);
    assert_eq!(json_of(&body)["models"].as_array().unwrap().len(), 1);
    let (_, _, body) = request(
        p,
        "POST",
        "/api/show",
        Some(r#"{"model": "tiny-llama-Q8_0"}"#),
        &[],
    );
    assert_eq!(json_of(&body)["model_info"]["llama.block_count"], 2);
}

#[test]
fn responses_and_lmstudio_routes() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    let req = json!({"input": "Hello", "instructions": "Be brief", "max_output_tokens": 4,
                     "temperature": 0, "ignore_eos": true})
    .to_string();
    let (status, _, body) = request(p, "POST", "/v1/responses", Some(&req), &[]);
    assert_eq!(status, 200, "{body}");
    let r = json_of(&body);
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["usage"]["output_tokens"], 4);
    let text = r["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r["output_text"], text.as_str());

    let streamed = json!({"input": "Hello", "instructions": "Be brief", "max_output_tokens": 4,
                          "temperature": 0, "ignore_eos": true, "stream": true})
    .to_string();
    let (_, _, body) = request(p, "POST", "/v1/responses", Some(&streamed), &[]);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"response.completed"));
    let deltas: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(json_of)
        .filter(|v| v["type"] == "response.output_text.delta")
        .map(|v| v["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, text);

    let (_, _, body) = request(p, "GET", "/api/v0/models", None, &[]);
    let m = json_of(&body);
    assert_eq!(m["data"][0]["state"], "loaded");
    assert_eq!(m["data"][0]["compatibility_type"], "gguf");
    let chat =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).to_string();
    assert_eq!(
        request(p, "POST", "/api/v0/chat/completions", Some(&chat), &[]).0,
        200
    );
}

#[test]
fn openapi_and_offline_docs() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    let (status, _, body) = request(p, "GET", "/openapi.json", None, &[]);
    assert_eq!(status, 200);
    let doc = json_of(&body);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/v1/chat/completions",
        "/api/chat",
        "/generate",
        "/tokenize",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert_eq!(request(p, "GET", "/swagger.json", None, &[]).0, 200);
    let (status, _, page) = request(p, "GET", "/docs", None, &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("/docs/swagger-ui-bundle.js") && !page.contains("https://"),
        "no CDN"
    );
    let (status, head, js) = request(p, "GET", "/docs/swagger-ui-bundle.js", None, &[]);
    assert_eq!(status, 200);
    assert!(head.contains("application/javascript"));
    assert!(js.len() > 1_000_000);
}
