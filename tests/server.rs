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
                          "temperature": 0, "ignore_eos": true, "stream": true,
                          "stream_options": {"include_usage": true}})
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
    // include_usage: the finish chunk, then one with usage and no choices.
    let finish = json_of(datas[datas.len() - 3]);
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert!(finish["usage"].is_null());
    let last = json_of(datas[datas.len() - 2]);
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 6);
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
    // A decoder embeds too (the mean of its last layer).
    let (status, _, body) = request(p, "POST", "/v1/embeddings", Some(r#"{"input": "x"}"#), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        256
    );
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
    // Cut by max_output_tokens, as OpenAI reports it.
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
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
    assert_eq!(doc["openapi"], "3.1.0");
    // Request schemas come from the request types: the shared sampling fields
    // with their ranges, and each route's own fields.
    let sampling = &doc["components"]["schemas"]["SamplingFields"]["properties"];
    assert_eq!(sampling["top_p"]["maximum"], 1.0);
    assert!(sampling["logit_bias"].is_object());
    // Bodies refer to named component schemas.
    let component = |schema: &Value| -> Value {
        let name = schema["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}"));
        doc["components"]["schemas"][name.trim_start_matches("#/components/schemas/")].clone()
    };
    let chat = &component(
        &doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    assert_eq!(
        chat["allOf"][0]["$ref"],
        "#/components/schemas/SamplingFields"
    );
    assert_eq!(
        chat["allOf"][1]["properties"]["top_logprobs"]["maximum"],
        20
    );
    assert_eq!(chat["allOf"][1]["required"], json!(["messages"]));
    let ollama = &component(
        &doc["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(ollama["properties"]["options"].is_object(), "{ollama}");
    // Errors are described per family: OpenAI's object, Ollama's string.
    let error_schema = |path: &str| {
        let method = if path == "/v1/models" { "get" } else { "post" };
        doc["paths"][path][method]["responses"]["4XX"]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    assert_eq!(error_schema("/v1/models"), "#/components/schemas/ErrorBody");
    // Typed success bodies: chat, completions and the model list.
    let ok = &doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"];
    assert_eq!(
        ok["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChatCompletion"
    );
    assert!(ok["text/event-stream"].is_object());
    let usage = &doc["components"]["schemas"]["Usage"]["required"];
    assert!(usage.as_array().unwrap().contains(&json!("total_tokens")));
    assert_eq!(
        error_schema("/api/chat"),
        "#/components/schemas/OllamaErrorBody"
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorDetail"]["required"],
        json!(["message", "type", "param", "code"])
    );
    // Every route has a typed 200 answer; streaming routes also type their items.
    let (_, _, root) = request(p, "GET", "/", None, &[]);
    let routes = json_of(&root)["routes"].clone();
    assert!(routes.as_array().unwrap().len() >= 27, "{routes}");
    for path in routes.as_array().unwrap() {
        let path = path.as_str().unwrap();
        let item = doc["paths"][path].as_object().unwrap();
        let (_, operation) = item.iter().next().unwrap();
        let content = &operation["responses"]["200"]["content"];
        assert!(content.is_object(), "{path}: no 200 content");
    }
    let sse = |path: &str| {
        doc["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
            ["properties"]["data"]
            .clone()
    };
    assert_eq!(
        sse("/v1/responses")["contentSchema"]["$ref"],
        "#/components/schemas/SequencedEvent"
    );
    let chunks = sse("/v1/chat/completions");
    assert_eq!(chunks["anyOf"][0]["const"], "[DONE]");
    assert_eq!(
        chunks["anyOf"][1]["contentSchema"]["$ref"],
        "#/components/schemas/ChatCompletionChunk"
    );
    let lines = &doc["paths"]["/api/generate"]["post"]["responses"]["200"]["content"]["application/x-ndjson"];
    assert_eq!(
        lines["x-item-schema"]["$ref"],
        "#/components/schemas/OllamaGenerateResponse"
    );
    for name in [
        "ChatCompletionChunk",
        "GenerateResponse",
        "TagsResponse",
        "ShowResponse",
    ] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
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

/// The data lines of a server-sent-event stream, without the final `[DONE]`
/// (asserted present).
fn sse_datas(body: &str) -> Vec<Value> {
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{body}");
    datas[..datas.len() - 1]
        .iter()
        .map(|d| json_of(d))
        .collect()
}

fn post(p: u16, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) = request(p, "POST", path, Some(&body.to_string()), &[]);
    (status, json_of(&text))
}

#[test]
fn logprobs_logit_bias_stop_and_seed() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    let hello = json!([{"role": "user", "content": "Hello"}]);

    // Greedy with log-probabilities: the sampled token is the most likely one,
    // alternatives come most likely first, and the tokens spell the text.
    let (status, r) = post(
        p,
        "/v1/chat/completions",
        &json!({"messages": hello, "max_tokens": 5, "temperature": 0, "ignore_eos": true,
                "logprobs": true, "top_logprobs": 3}),
    );
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 5);
    let mut spelled = String::new();
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(lp <= 0.0);
        assert_eq!(
            entry["token"], top[0]["token"],
            "greedy picks the top token"
        );
        assert!((lp - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "{lps:?}");
        assert!(lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-6);
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            entry["token"].as_str().unwrap()
        );
        spelled.push_str(entry["token"].as_str().unwrap());
    }
    assert_eq!(spelled, text);

    // Streamed, the chunks carry the same log-probabilities.
    let (_, _, body) = request(
        p,
        "POST",
        "/v1/chat/completions",
        Some(
            &json!({"messages": hello, "max_tokens": 5, "temperature": 0, "ignore_eos": true,
                    "logprobs": true, "top_logprobs": 3, "stream": true})
            .to_string(),
        ),
        &[],
    );
    let streamed: Vec<Value> = sse_datas(&body)
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(&streamed, content);

    // Banning the greedy first token through logit_bias makes the runner-up win.
    let first_token = |bias: Value| {
        let (status, r) = post(
            p,
            "/v1/chat/completions",
            &json!({"messages": hello, "max_tokens": 1, "temperature": 0, "ignore_eos": true,
                    "logprobs": true, "top_logprobs": 2, "logit_bias": bias}),
        );
        assert_eq!(status, 200, "{r}");
        r["choices"][0]["logprobs"]["content"][0].clone()
    };
    let unbiased = first_token(json!({}));
    let (greedy, runner_up) = (&unbiased["top_logprobs"][0], &unbiased["top_logprobs"][1]);
    assert_eq!(unbiased["id"], greedy["id"]);
    let banned = first_token(json!({ greedy["id"].to_string(): -100 }));
    assert_eq!(banned["id"], runner_up["id"]);
    // The reported log-probabilities are the model's, not the biased ones.
    assert_eq!(banned["logprob"], runner_up["logprob"]);
    let boosted = first_token(json!({ runner_up["id"].to_string(): 100 }));
    assert_eq!(boosted["id"], runner_up["id"]);

    // Completions report the legacy shape.
    let (status, r) = post(
        p,
        "/v1/completions",
        &json!({"prompt": "Once upon", "max_tokens": 3, "temperature": 0, "ignore_eos": true,
                "logprobs": 2}),
    );
    assert_eq!(status, 200, "{r}");
    let lp = &r["choices"][0]["logprobs"];
    let tokens: String = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens, r["choices"][0]["text"].as_str().unwrap());
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 3);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(lp["text_offset"][0], 0);

    // A stop string cuts the text before it, with finish_reason "stop".
    let (_, r) = post(
        p,
        "/v1/completions",
        &json!({"prompt": "Once upon", "max_tokens": 12, "temperature": 0, "ignore_eos": true}),
    );
    let full = r["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop: String = full[cut..].chars().take(2).collect();
    let (_, r) = post(
        p,
        "/v1/completions",
        &json!({"prompt": "Once upon", "max_tokens": 12, "temperature": 0, "ignore_eos": true,
                "stop": [stop.clone(), "\u{1}never"]}),
    );
    let stopped = r["choices"][0]["text"].as_str().unwrap();
    assert_eq!(stopped, &full[..full.find(&stop).unwrap()]);
    assert_eq!(r["choices"][0]["finish_reason"], "stop");

    // Sampling with a seed repeats; penalties are accepted and validated.
    let sampled = |seed: u64| {
        let (status, r) = post(
            p,
            "/v1/chat/completions",
            &json!({"messages": hello, "max_tokens": 8, "temperature": 1.0, "seed": seed,
                    "ignore_eos": true, "presence_penalty": 0.5, "frequency_penalty": 0.5}),
        );
        assert_eq!(status, 200, "{r}");
        r["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(sampled(7), sampled(7));
}

#[test]
fn error_matrix() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &["--max-body-bytes", "4096"]);
    let p = s.port;
    let raw = |method: &str, path: &str, headers: &str, body: &str| {
        let mut c = TcpStream::connect(("127.0.0.1", p)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://example.com\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    };
    let json_ct = "Content-Type: application/json\r\n";
    let chat = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#;
    let openai_error = |status: u16, head: &str, body: &str| {
        assert!(
            head.contains("access-control-allow-origin"),
            "CORS on {status}: {head}"
        );
        let e = json_of(body)["error"].clone();
        assert!(e["message"].is_string(), "{body}");
        assert!(e["type"].is_string(), "{body}");
        assert!(e.as_object().unwrap().contains_key("param"), "{body}");
        assert!(e.as_object().unwrap().contains_key("code"), "{body}");
        e
    };

    let (status, head, body) = raw("POST", "/v1/chat/completions", "", chat);
    assert_eq!(status, 415);
    openai_error(status, &head, &body);
    let (status, head, body) = raw(
        "POST",
        "/v1/chat/completions",
        "Content-Type: text/plain\r\n",
        chat,
    );
    assert_eq!(status, 415);
    openai_error(status, &head, &body);
    let (status, head, body) = raw("GET", "/v1/chat/completions", "", "");
    assert_eq!(status, 405);
    openai_error(status, &head, &body);
    let (status, head, body) = raw("GET", "/v2/nothing", "", "");
    assert_eq!(status, 404);
    openai_error(status, &head, &body);
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(5000));
    let (status, head, body) = raw("POST", "/v1/completions", json_ct, &big);
    assert_eq!(status, 413, "{body}");
    openai_error(status, &head, &body);

    for (body, param) in [
        ("{not json", None),
        (r#"{"messages": [{"role": 5}]}"#, Some("messages[0].role")),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
            Some("temperature"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}"#,
            Some("top_p"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"x": 1}}"#,
            Some("logit_bias"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 1000}}"#,
            Some("logit_bias"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#,
            Some("top_logprobs"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}"#,
            Some("top_logprobs"),
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#,
            Some("n"),
        ),
        (r#"{"messages": []}"#, Some("messages")),
    ] {
        let (status, head, text) = raw("POST", "/v1/chat/completions", json_ct, body);
        assert_eq!(status, 400, "{body}: {text}");
        let e = openai_error(status, &head, &text);
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}: {text}");
            assert!(e["message"].as_str().unwrap().contains(param), "{text}");
        }
    }
    // Over the context: both numbers in the message.
    let (status, head, text) = raw(
        "POST",
        "/v1/completions",
        json_ct,
        r#"{"prompt": "Hello there", "max_tokens": 100000}"#,
    );
    assert_eq!(status, 400);
    let e = openai_error(status, &head, &text);
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("100000"), "{message}");
    assert_eq!(e["code"], "context_length_exceeded");
    let ctx: u64 = message
        .rsplit("context of ")
        .next()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no context size in {message}"));
    assert!(ctx > 0);

    // Ollama routes answer {"error": "…"}.
    for (path, body) in [
        ("/api/chat", "{oops"),
        (
            "/api/chat",
            r#"{"messages": [{"role": "user", "content": "x"}], "options": {"num_ctx": 100000000}}"#,
        ),
        (
            "/api/generate",
            r#"{"prompt": "x", "options": {"temperature": "warm"}}"#,
        ),
    ] {
        let (status, head, text) = raw("POST", path, json_ct, body);
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(head.contains("access-control-allow-origin"));
        assert!(json_of(&text)["error"].is_string(), "{text}");
    }
    let (status, _, text) = raw("GET", "/api/chat", "", "");
    assert_eq!(status, 405);
    assert!(json_of(&text)["error"].is_string(), "{text}");

    // CORS preflight.
    let (status, head, _) = raw(
        "OPTIONS",
        "/v1/chat/completions",
        "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,authorization\r\n",
        "",
    );
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-methods"), "{head}");
    assert!(head.contains("access-control-allow-headers"), "{head}");

    // After all that, the server still serves.
    let (status, _, text) = raw("POST", "/v1/chat/completions", json_ct, chat);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn ollama_options_tags_and_lmstudio_stats() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &["--ctx-size", "256"]);
    let p = s.port;
    // num_ctx below the server's: honoured (a prompt + num_predict beyond it is refused).
    let (status, r) = post(
        p,
        "/api/generate",
        &json!({"prompt": "Once upon a time", "raw": true, "stream": false,
                "options": {"num_ctx": 12, "num_predict": 100}}),
    );
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("context of 12"),
        "{r}"
    );
    let (status, r) = post(
        p,
        "/api/generate",
        &json!({"prompt": "x", "options": {"num_ctx": 512}}),
    );
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("256"), "{r}");

    // Options reach the sampler: greedy, num_predict, stop, seed.
    let generate = |options: Value| {
        let (status, r) = post(
            p,
            "/api/generate",
            &json!({"prompt": "Once upon", "raw": true, "stream": false, "options": options}),
        );
        assert_eq!(status, 200, "{r}");
        r
    };
    let full = generate(
        json!({"temperature": 0, "num_predict": 8, "repeat_last_n": -1,
                               "repeat_penalty": 1.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}),
    );
    assert_eq!(full["eval_count"], 8);
    assert_eq!(full["done_reason"], "length");
    let text = full["response"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(3).take(2).collect();
    let stopped = generate(json!({"temperature": 0, "num_predict": 8, "stop": [stop]}));
    assert_eq!(stopped["done_reason"], "stop");
    assert_eq!(
        stopped["response"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
    let seeded = |seed: i64| {
        generate(json!({"temperature": 1.0, "seed": seed, "num_predict": 6}))["response"].clone()
    };
    assert_eq!(seeded(3), seeded(3));
    // `system` belongs to the template, so raw mode refuses it.
    let (status, r) = post(
        p,
        "/api/generate",
        &json!({"prompt": "Once upon", "system": "Be terse", "raw": true}),
    );
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("system"), "{r}");
    // An empty prompt only loads the model, as in Ollama.
    let (_, r) = post(p, "/api/generate", &json!({"model": "x"}));
    assert_eq!(r["done_reason"], "load");

    // /api/tags: the digest is the file's SHA-256, details from the metadata.
    let (_, _, body) = request(p, "GET", "/api/tags", None, &[]);
    let entry = json_of(&body)["models"][0].clone();
    let bytes = std::fs::read(&model).unwrap();
    let expected: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(entry["digest"], expected.as_str());
    assert_eq!(entry["size"], bytes.len());
    assert_eq!(entry["details"]["quantization_level"], "Q8_0");
    assert_eq!(entry["details"]["family"], "llama");
    assert!(
        entry["details"]["parameter_size"]
            .as_str()
            .unwrap()
            .ends_with('M')
    );
    assert!(entry["modified_at"].as_str().unwrap().contains('T'));

    // LM Studio: OpenAI's body plus stats, model_info and runtime.
    let (status, r) = post(
        p,
        "/api/v0/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["stats"]["stop_reason"], "maxPredictedTokensReached");
    for key in [
        "tokens_per_second",
        "time_to_first_token",
        "generation_time",
    ] {
        assert!(r["stats"][key].as_f64().unwrap() >= 0.0, "{key}: {r}");
    }
    assert_eq!(r["model_info"]["quant"], "Q8_0");
    assert_eq!(r["model_info"]["context_length"], 256);
    assert_eq!(r["runtime"]["name"], "rusty-llm");
    let (_, r) = post(
        p,
        "/api/v0/completions",
        &json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(r["stats"]["stop_reason"], "maxPredictedTokensReached");
    let (_, _, body) = request(p, "GET", "/api/v0/models/whatever", None, &[]);
    let m = json_of(&body);
    assert_eq!(
        (
            m["type"].clone(),
            m["arch"].clone(),
            m["quantization"].clone()
        ),
        (json!("llm"), json!("llama"), json!("Q8_0"))
    );
    assert!(m["max_context_length"].as_u64().unwrap() > 0);
}

#[test]
fn responses_stream_event_sequence() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    let req = json!({"input": [{"type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "Hello"}]}],
                     "instructions": "Be brief", "max_output_tokens": 5,
                     "temperature": 0, "ignore_eos": true});
    let (status, whole) = post(p, "/v1/responses", &req);
    assert_eq!(status, 200, "{whole}");
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let (_, _, body) = request(p, "POST", "/v1/responses", Some(&streamed.to_string()), &[]);
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(json_of)
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(names, kinds);
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert!(deltas > 0);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    let item_id = events[2]["item"]["id"].clone();
    assert!(item_id.is_string());
    for e in &events[3..events.len() - 2] {
        assert_eq!(e["item_id"], item_id, "{e}");
        assert_eq!(
            (e["output_index"].clone(), e["content_index"].clone()),
            (json!(0), json!(0))
        );
    }
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["output_text"].as_str().unwrap());
    let done = &events[events.len() - 5 + 1];
    assert_eq!(done["text"], text.as_str());
    let completed = &events.last().unwrap()["response"];
    assert_eq!(completed["id"], events[0]["response"]["id"]);
    assert_eq!(completed["output"][0]["id"], item_id);
    assert_eq!(completed["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(completed["usage"]["output_tokens"], 5);
    assert_eq!(
        completed["usage"]["input_tokens"],
        whole["usage"]["input_tokens"]
    );
    assert!(completed["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // Items other than messages are refused, naming the item.
    let (status, r) = post(
        p,
        "/v1/responses",
        &json!({"input": [{"type": "function_call_output", "role": "tool", "content": "x"}]}),
    );
    assert_eq!(status, 400);
    assert_eq!(r["error"]["param"], "input[0].type");
    // The length limit is named as this route calls it.
    let (status, r) = post(
        p,
        "/v1/responses",
        &json!({"input": "Hello", "max_output_tokens": 1_000_000}),
    );
    assert_eq!(status, 400);
    assert_eq!(r["error"]["param"], "max_output_tokens");
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("1000000"),
        "{r}"
    );
}

#[test]
fn connection_limit_and_read_timeout() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &["--max-connections", "1", "--read-timeout", "3"]);
    let p = s.port;
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // One idle connection holds the only slot; the next is not served...
    let holder = TcpStream::connect(("127.0.0.1", p)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = TcpStream::connect(("127.0.0.1", p)).unwrap();
    waiting.write_all(health).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 256];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served past the limit: {early:?}"
    );
    // ...until the first one closes.
    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    waiting.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A client that never finishes its headers is cut off after the read timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", p)).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    // So is a kept-alive connection that sends no next request.
    let mut idle = TcpStream::connect(("127.0.0.1", p)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(15), "kept open");
    // And the server goes on serving.
    assert_eq!(request(p, "GET", "/health", None, &[]).0, 200);
}

/// One HTTPS request to the server; `None` when the handshake or exchange fails.
fn https_get(port: u16, path: &str, roots: &rustls::RootCertStore) -> Option<(u16, String)> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still delivered the response.
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[test]
fn https_with_a_self_signed_certificate() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_rusty-llm"))
        .args([&model, "--serve", &addr, "--threads", "1"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_remove("RUSTY_LLM_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while https_get(port, "/ready", &roots).map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "HTTPS server did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = https_get(port, "/v1/models", &roots).unwrap();
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["data"][0]["id"], "tiny-llama-Q8_0");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = try_request(port, "GET", "/health", None, &[]);
    assert!(!matches!(plain, Ok((200, _, _))));
    // A client that does not trust the certificate fails the handshake.
    assert!(https_get(port, "/health", &rustls::RootCertStore::empty()).is_none());
}

/// The official `openai` and `ollama` Python clients against the default
/// model and, for embeddings, tiny-bert (scripts/test-server-clients.sh
/// makes its own venv from PyPI), with greedy answers and embeddings checked
/// against the CLI's.
#[test]
fn official_python_clients() {
    let Some(model) = common::default_model() else {
        return;
    };
    let embedder = common::data("embed/tiny-bert-Q4_K_M.gguf");
    let Some(log) = run_python_script(
        "test-server-clients.sh",
        &[model.as_os_str(), embedder.as_os_str()],
        "the Python clients",
    ) else {
        return;
    };
    assert!(log.contains("all client checks passed"), "{log}");
}

/// Runs `scripts/NAME` (which makes its own venv from PyPI) on the server
/// binary and `args`, asserts it succeeded and returns its output. `None`
/// (the test skips) where it exits 3 because it could not install `what`,
/// outside CI.
fn run_python_script(name: &str, args: &[&std::ffi::OsStr], what: &str) -> Option<String> {
    let out = Command::new(common::root().join("scripts").join(name))
        .arg(env!("CARGO_BIN_EXE_rusty-llm"))
        .args(args)
        .env_remove("RUSTY_LLM_API_KEY")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) && std::env::var_os("CI").is_none() {
        eprintln!("skipping: cannot install {what} here:\n{log}");
        return None;
    }
    assert!(out.status.success(), "{name}: {log}");
    Some(log)
}

/// A bounded schemathesis run against /openapi.json (no 5xx, every answer
/// and server-sent event matches its schema) and the streamed items checked
/// against their item schemas (scripts/test-server-schemathesis.sh, which
/// makes its own venv from PyPI).
#[test]
fn openapi_document_holds_under_schemathesis() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let Some(log) = run_python_script(
        "test-server-schemathesis.sh",
        &[model.as_ref(), "10".as_ref()],
        "schemathesis",
    ) else {
        return;
    };
    assert!(
        log.contains("schemathesis and stream schema checks passed"),
        "{log}"
    );
}

#[test]
fn prompt_cache_can_be_turned_off_and_sigterm_exits_cleanly() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let mut s = start(&model, &[]);
    let p = s.port;
    let req = json!({"prompt": "Once upon a time", "max_tokens": 2, "temperature": 0});
    post(p, "/v1/completions", &req);
    let (_, cached) = post(p, "/v1/completions", &req);
    assert!(
        cached["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let mut fresh = req.clone();
    fresh["cache_prompt"] = json!(false);
    let (_, fresh) = post(p, "/v1/completions", &fresh);
    assert_eq!(fresh["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    let killed = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(
        &model,
        &["--parallel", "1", "--queue-size", "1", "--ctx-size", "8192"],
    );
    let p = s.port;
    // Long streamed generations: one runs in the only slot, one waits in the
    // queue, the third finds the queue full. Their connections stay open
    // until dropped.
    let long =
        json!({"prompt": "Hi", "max_tokens": 8000, "ignore_eos": true, "stream": true}).to_string();
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(("127.0.0.1", p)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}", long.len()).unwrap();
        let mut head = [0u8; 1024];
        let n = c.read(&mut head).unwrap();
        answers.push(String::from_utf8_lossy(&head[..n]).to_ascii_lowercase());
        held.push(c);
    }
    assert!(answers[0].starts_with("http/1.1 200"), "{}", answers[0]);
    // Until the engine takes the first job from the queue the second is
    // refused; once it has, the second waits and the third is refused.
    let busy = answers[1..]
        .iter()
        .find(|a| a.starts_with("http/1.1 503"))
        .unwrap_or_else(|| panic!("no 503: {answers:?}"));
    assert!(busy.contains("retry-after: 1"), "{busy}");
    // Clients that go away cancel their work; the server serves again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = request(p, "POST", "/generate", Some(&c_small()), &[]);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "still busy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tools` and `response_format` are accepted and reach the prompt (as a
/// system instruction for this template-less model); a malformed tool is a
/// 400 naming it.
#[test]
fn chat_tools_and_response_format_reach_the_prompt() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &[]);
    let p = s.port;
    let base = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
                      "max_tokens": 1, "cache_prompt": false});
    let prompt_tokens = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = post(p, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{answer}");
        answer["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let plain = prompt_tokens(json!({}));
    let tool = json!({"type": "function", "function": {"name": "get_weather",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let with_tools = prompt_tokens(json!({"tools": [tool]}));
    assert!(with_tools > plain + 20, "{with_tools} vs {plain}");
    assert_eq!(
        prompt_tokens(json!({"tools": [tool], "tool_choice": "none"})),
        plain
    );
    let with_format = prompt_tokens(json!({"response_format": {"type": "json_object"}}));
    assert!(with_format > plain, "{with_format} vs {plain}");
    let (status, err) = post(
        p,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}], "tools": ["get_weather"]}),
    );
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "tools[0]");
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "{what}: values differ by up to {worst}");
}

#[test]
fn embedding_routes() {
    use base64::Engine as _;
    let model = common::data("embed/tiny-bert-Q4_K_M.gguf");
    let s = start(model.to_str().unwrap(), &[]);
    let p = s.port;
    let texts = [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
    ];

    // OpenAI: a list, floats, in order, with usage.
    let (status, r) = post(
        p,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": texts}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "tiny-bert-Q4_K_M");
    assert_eq!(r["usage"]["prompt_tokens"], 5 + 16);
    assert_eq!(r["usage"]["total_tokens"], 5 + 16);
    let floats: Vec<Vec<f32>> = (0..2)
        .map(|i| {
            assert_eq!(r["data"][i]["index"], i);
            assert_eq!(r["data"][i]["object"], "embedding");
            vector(&r["data"][i]["embedding"])
        })
        .collect();
    for v in &floats {
        assert_eq!(v.len(), 256);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    // The same as llama.cpp's embedding of the first text.
    let reference: Value = serde_json::from_slice(
        &std::fs::read(common::data("embed/tiny-bert-Q4_K_M.json")).unwrap(),
    )
    .unwrap();
    let want = vector(&reference["embeddings"][0]["embedding"]);
    let dot: f32 = floats[0].iter().zip(&want).map(|(a, b)| a * b).sum();
    assert!(dot > 0.999, "cosine with llama.cpp: {dot}");

    // base64: the little-endian bytes of the same floats.
    let (status, r) = post(
        p,
        "/v1/embeddings",
        &json!({"input": texts, "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{r}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_close(&decoded, &floats[1], "base64");

    // Token ids give what their text gives; LM Studio's route is OpenAI's.
    let (status, r) = post(
        p,
        "/v1/embeddings",
        &json!({"input": [2, 2115, 1086, 1094, 3]}),
    );
    assert_eq!(status, 200, "{r}");
    let one = vector(&r["data"][0]["embedding"]);
    let (_, r) = post(p, "/api/v0/embeddings", &json!({"input": "Hello world"}));
    assert_close(
        &vector(&r["data"][0]["embedding"]),
        &one,
        "token ids vs text",
    );
    let (_, r) = post(
        p,
        "/v1/embeddings",
        &json!({"input": [[2, 2115, 1086, 1094, 3], [2, 3]]}),
    );
    assert_eq!(r["data"].as_array().unwrap().len(), 2);

    // Refusals name the field; a long input names both lengths.
    let long = "word ".repeat(300);
    for (body, field, needle) in [
        (
            json!({"input": ["hi", long]}),
            "input[1]",
            "302 tokens long, more than the context of 256",
        ),
        (json!({"input": long}), "input", "302 tokens"),
        (
            json!({"input": "hi", "dimensions": 64}),
            "dimensions",
            "256 dimensions",
        ),
        (
            json!({"input": "hi", "encoding_format": "hex"}),
            "encoding_format",
            "hex",
        ),
        (json!({"input": []}), "input", "empty"),
        (json!({"input": [[1, 99999]]}), "input[0]", "99999"),
        (json!({"input": 5}), "input", "expected a string"),
        (json!({"input": [[]]}), "input[0]", "no tokens"),
    ] {
        let (status, r) = post(p, "/v1/embeddings", &body);
        assert_eq!(status, 400, "{body}: {r}");
        assert_eq!(r["error"]["param"], field, "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    let (_, r) = post(p, "/v1/embeddings", &json!({"input": long}));
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    let (status, r) = post(
        p,
        "/v1/embeddings",
        &json!({"input": "hi", "dimensions": 256}),
    );
    assert_eq!(status, 200, "{r}");

    // Ollama /api/embed: unit vectors; long inputs cut unless truncate: false.
    let (status, r) = post(
        p,
        "/api/embed",
        &json!({"model": "nomic-embed-text", "input": texts}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 21);
    assert_close(&vector(&r["embeddings"][0]), &floats[0], "ollama embed");
    assert_close(&vector(&r["embeddings"][1]), &floats[1], "ollama embed");
    let (_, r) = post(p, "/api/embed", &json!({"input": "Hello world"}));
    assert_close(&vector(&r["embeddings"][0]), &floats[0], "ollama embed one");
    let (status, r) = post(p, "/api/embed", &json!({"input": long}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 256);
    let (status, r) = post(p, "/api/embed", &json!({"input": long, "truncate": false}));
    assert_eq!(status, 400);
    assert!(
        r["error"].as_str().unwrap().contains("302 tokens long"),
        "{r}"
    );
    let (status, r) = post(
        p,
        "/api/embed",
        &json!({"input": "hi", "options": {"num_ctx": 2}}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prompt_eval_count"], 2);
    let (_, r) = post(p, "/api/embed", &json!({"input": ""}));
    assert_eq!(r["embeddings"], json!([]));
    let (status, r) = post(p, "/api/embed", &json!({"input": 3}));
    assert_eq!(status, 400);
    assert!(
        r["error"].as_str().unwrap().contains("expected a string"),
        "{r}"
    );

    // Ollama's older /api/embeddings: the raw (unnormalized) vector.
    let (status, r) = post(
        p,
        "/api/embeddings",
        &json!({"model": "x", "prompt": "Hello world"}),
    );
    assert_eq!(status, 200, "{r}");
    let mut raw = vector(&r["embedding"]);
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 0.1, "not normalized: {norm}");
    raw.iter_mut().for_each(|x| *x /= norm);
    let dot: f32 = raw.iter().zip(&floats[0]).map(|(a, b)| a * b).sum();
    assert!(dot > 0.99999, "{dot}");
    let (_, r) = post(p, "/api/embeddings", &json!({"prompt": ""}));
    assert_eq!(r["embedding"], json!([]));

    // The model is an embedding model: no text, and it says so.
    let (status, r) = post(
        p,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding model"),
        "{r}"
    );
    let (_, _, body) = request(p, "GET", "/api/v0/models", None, &[]);
    assert_eq!(json_of(&body)["data"][0]["type"], "embeddings");
    let (_, r) = post(p, "/api/show", &json!({"model": "x"}));
    assert_eq!(r["capabilities"], json!(["embedding"]));
}

/// Two slots serve two streams at once; `/slots` and `/metrics` show the
/// slots, the requests by route and status, the tokens and latencies.
#[test]
fn parallel_streams_slots_and_metrics() {
    let Some(model) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let s = start(&model, &["--parallel", "2", "--ctx-size", "256"]);
    let p = s.port;
    let (status, _, body) = request(p, "GET", "/slots", None, &[]);
    assert_eq!(status, 200, "{body}");
    let slots = json_of(&body);
    assert_eq!(slots.as_array().unwrap().len(), 2);
    assert_eq!(slots[0]["n_ctx"], 256);
    assert_eq!(slots[1]["is_processing"], false);

    // Two streamed completions at once, each seeing its own greedy answer:
    // the same as the one it gets alone. Long enough that the two overlap
    // even when the test threads start far apart on a loaded machine (with
    // 12 tokens each, one request sometimes finished before the other
    // arrived, under `make test`'s parallel load).
    const TOKENS: usize = 128;
    let body = |prompt: &str| {
        json!({"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": true,
               "stream": true, "cache_prompt": false})
        .to_string()
    };
    let text_of = |sse: &str| {
        sse_datas(sse)
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
            .collect::<String>()
    };
    let prompts = ["Once upon a time", "The quick brown fox"];
    let alone: Vec<String> = prompts
        .iter()
        .map(|q| text_of(&request(p, "POST", "/v1/completions", Some(&body(q)), &[]).2))
        .collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|q| {
                let b = body(q);
                scope
                    .spawn(move || text_of(&request(p, "POST", "/v1/completions", Some(&b), &[]).2))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    request(p, "GET", "/no/such/route", None, &[]);

    let (status, head, text) = request(p, "GET", "/metrics", None, &[]);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(
        value(
            r#"rusty_llm_http_requests_total{method="POST",route="/v1/completions",status="200"}"#
        ),
        4.0
    );
    assert_eq!(
        value(r#"rusty_llm_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        value("rusty_llm_generated_tokens_total"),
        (4 * TOKENS) as f64
    );
    assert_eq!(value("rusty_llm_time_to_first_token_seconds_count"), 4.0);
    assert_eq!(
        value("rusty_llm_inter_token_latency_seconds_count"),
        (4 * (TOKENS - 1)) as f64
    );
    assert_eq!(value("rusty_llm_busy_slots"), 0.0);
    assert_eq!(value("rusty_llm_queue_depth"), 0.0);
    assert_eq!(value("rusty_llm_kv_cache_capacity_tokens"), 512.0);
    assert!(value("rusty_llm_kv_cache_tokens") > 0.0);
    assert!(value("rusty_llm_prompt_tokens_total") > 0.0);
    assert!(
        value("rusty_llm_engine_steps_total") < (4 * TOKENS) as f64,
        "not batched:\n{text}"
    );
    let slots = json_of(&request(p, "GET", "/slots", None, &[]).2);
    assert!(slots[0]["tokens_cached"].as_u64().unwrap() > 0, "{slots}");
    assert!(slots[0]["request_id"].is_null());
}

/// Resident memory of a process in kB (Linux), for the soak test.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `body` to `path` and hangs up after at most `keep` bytes of the
/// answer (0: right after sending): a client that goes away mid-stream.
fn disconnect_after(port: u16, path: &str, body: &str, keep: usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut got = 0;
    let mut buf = [0u8; 256];
    while got < keep {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
}

/// One request of the soak mix, chosen by `r`; returns the status (None:
/// the client hung up on purpose) and whether a 4xx was expected.
fn soak_request(port: u16, r: u64) -> (Option<u16>, bool) {
    let max_tokens = 4 + r % 40;
    let stream = (r >> 8).is_multiple_of(2);
    let prompt = format!("Request {r}: tell me a story about the number {}", r % 97);
    let chat = json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                      "stream": stream, "temperature": 0.7, "seed": r % 1_000_000});
    let completion = json!({"prompt": prompt, "max_tokens": max_tokens, "stream": stream,
                            "cache_prompt": !r.is_multiple_of(3), "ignore_eos": true});
    let ok = |path: &str, body: &Value| {
        let (status, _, answer) = try_request(port, "POST", path, Some(&body.to_string()), &[])
            .unwrap_or((0, String::new(), String::new()));
        if status != 200 && status != 503 {
            eprintln!("soak: {path} {body} answered {status}: {answer}");
        }
        (Some(status), false)
    };
    let bad = |method: &str, path: &str, body: &str, extra: &[(&str, &str)]| {
        let (status, _, _) = try_request(port, method, path, Some(body), extra).unwrap_or((
            0,
            String::new(),
            String::new(),
        ));
        (Some(status), true)
    };
    match (r >> 16) % 20 {
        0 | 1 => ok("/v1/chat/completions", &chat),
        2 | 3 => ok("/v1/completions", &completion),
        4 => ok(
            "/generate",
            &json!({"prompt": prompt, "max_tokens": max_tokens}),
        ),
        5 | 6 => ok(
            "/api/generate",
            &json!({"model": "m", "prompt": prompt, "stream": stream,
                    "options": {"num_predict": max_tokens, "seed": r % 1_000_000}}),
        ),
        7 => ok(
            "/api/chat",
            &json!({"model": "m", "messages": [{"role": "user", "content": prompt}],
                    "stream": stream, "options": {"num_predict": max_tokens}}),
        ),
        8 | 9 => ok(
            "/v1/responses",
            &json!({"input": prompt, "max_output_tokens": max_tokens, "stream": stream}),
        ),
        10..=12 => {
            let mut body = completion.clone();
            body["stream"] = json!(true);
            body["max_tokens"] = json!(200);
            disconnect_after(
                port,
                "/v1/completions",
                &body.to_string(),
                (r % 600) as usize,
            );
            (None, false)
        }
        13 => {
            let mut body = chat.clone();
            body["stream"] = json!(r.is_multiple_of(2));
            disconnect_after(port, "/v1/chat/completions", &body.to_string(), 0);
            (None, false)
        }
        14 => bad(
            "POST",
            "/v1/chat/completions",
            r#"{"messages": "not a list"}"#,
            &[],
        ),
        15 => bad("POST", "/v1/completions", r#"{"prompt": "#, &[]),
        16 => bad(
            "POST",
            "/v1/completions",
            "{}",
            &[("Content-Type", "text/plain")],
        ),
        17 => bad(
            "POST",
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 100_000}).to_string(),
            &[],
        ),
        18 => bad(
            "POST",
            "/api/chat",
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "options": {"temperature": "hot"}})
            .to_string(),
            &[],
        ),
        _ => bad("GET", "/v1/chat/completions", "", &[]),
    }
}

/// A bounded soak: a fixed number of requests from 8 clients at once over
/// every generation route, streamed and not, clients that hang up mid-stream
/// or right away, malformed requests in between, into 2 slots and a queue
/// of 4 (so some are refused with 503). Afterwards every slot is free, the
/// queue empty, no 5xx but 503 was answered, the server still answers, and
/// its RSS is within 10% of what it was after a warm-up round of the same
/// mix. `RUSTY_LLM_SOAK_REQUESTS` (default 400) and `RUSTY_LLM_SOAK_MODEL`
/// (default the tiny llama) make it longer: `scripts/soak.sh`.
#[test]
fn soak_mixed_routes_disconnects_and_malformed_requests() {
    let model = match std::env::var("RUSTY_LLM_SOAK_MODEL") {
        Ok(m) => m,
        Err(_) => match tiny("tiny-llama-Q8_0") {
            Some(m) => m,
            None => return,
        },
    };
    let requests: u64 = std::env::var("RUSTY_LLM_SOAK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let s = start(
        &model,
        &["--parallel", "2", "--queue-size", "4", "--ctx-size", "512"],
    );
    let p = s.port;
    let clients = 8;
    let run = |first: u64, count: u64| -> std::collections::BTreeMap<(u16, bool), u64> {
        let tally = std::sync::Mutex::new(std::collections::BTreeMap::new());
        std::thread::scope(|scope| {
            for c in 0..clients {
                let tally = &tally;
                scope.spawn(move || {
                    for i in (first + c..first + count).step_by(clients as usize) {
                        // A fixed pseudo-random sequence (splitmix64).
                        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                        if let (Some(status), expect_4xx) = soak_request(p, z ^ (z >> 31)) {
                            *tally
                                .lock()
                                .unwrap()
                                .entry((status, expect_4xx))
                                .or_insert(0) += 1;
                        }
                    }
                });
            }
        });
        tally.into_inner().unwrap()
    };
    let started = Instant::now();
    let warm = run(0, requests / 4);
    let warm_rss = rss_kb(s.child.id());
    let tally = run(requests / 4, requests);
    eprintln!(
        "soak: {requests} requests in {:.1} s; (status, malformed) → count: warm-up {warm:?}, then {tally:?}",
        started.elapsed().as_secs_f64()
    );
    for (&(status, expect_4xx), &n) in warm.iter().chain(&tally) {
        let fine = match status {
            503 => true,
            400..=499 => expect_4xx,
            200 => !expect_4xx,
            _ => false,
        };
        assert!(
            fine,
            "{n} answers with status {status} (malformed: {expect_4xx})"
        );
    }
    assert!(
        tally.keys().any(|&(status, m)| status == 200 && !m),
        "nothing succeeded: {tally:?}"
    );

    // Everything drains: free slots, empty queue.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let slots = json_of(&request(p, "GET", "/slots", None, &[]).2);
        let (_, _, metrics) = request(p, "GET", "/metrics", None, &[]);
        let idle = slots
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["is_processing"] == false && s["request_id"].is_null());
        if idle && metrics.contains("\nrusty_llm_queue_depth 0\n") {
            break metrics;
        }
        assert!(Instant::now() < deadline, "not drained: {slots}\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics.contains("\nrusty_llm_busy_slots 0\n"), "{metrics}");
    for line in metrics.lines() {
        if line.starts_with("rusty_llm_http_requests_total{") && line.contains("status=\"5") {
            assert!(line.contains("status=\"503\""), "a 5xx answer: {line}");
        }
    }
    // Still answering.
    let (status, _, body) = request(p, "POST", "/generate", Some(&c_small()), &[]);
    assert_eq!(status, 200, "{body}");
    if let (Some(warm), Some(now)) = (warm_rss, rss_kb(s.child.id())) {
        eprintln!("soak: RSS after warm-up {warm} kB, at the end {now} kB");
        assert!(
            now as f64 <= warm as f64 * 1.10,
            "RSS grew from {warm} kB after warm-up to {now} kB"
        );
    }
}
