//! Ollama's API: `/api/generate`, `/api/chat` (streamed as JSON lines by
//! default, as Ollama does), `/api/tags`, `/api/ps`, `/api/show`.

use super::api::{
    ChatMessage, SamplingFields, StopField, body, chat_tokens, collect, loaded, messages, submit,
};
use super::engine::Event;
use super::{ApiError, AppState, Loaded};
use crate::engine::{Generation, StopReason};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type AppResult = Result<Response, ApiError>;

/// Ollama's `options` object (the fields we honour).
#[derive(Debug, Default, Deserialize)]
struct OllamaOptions {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    num_predict: Option<i64>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<usize>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
}

impl OllamaOptions {
    fn sampling(self) -> SamplingFields {
        SamplingFields {
            n_predict: self.num_predict,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            stop: self.stop.map(StopField::Many),
            ..SamplingFields::default()
        }
    }
}

fn default_stream() -> bool {
    true
}

/// RFC 3339 UTC time, as Ollama writes `created_at`.
fn created_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The timing and count fields of Ollama's final object (durations in ns).
fn final_fields(g: &Generation) -> Value {
    let ns = |ms: f64| (ms * 1e6) as u64;
    json!({
        "done": true,
        "done_reason": if g.stop_reason == StopReason::MaxTokens { "length" } else { "stop" },
        "total_duration": ns(g.total_ms),
        "load_duration": 0,
        "prompt_eval_count": g.prompt_tokens,
        "prompt_eval_duration": ns(g.prefill_ms),
        "eval_count": g.generated_tokens,
        "eval_duration": ns(g.decode_ms),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// One JSON object per line: `piece(text)` objects, then `done(generation)`.
fn ndjson(
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    guard: super::api::CancelOnDrop,
    piece: impl Fn(&str) -> Value + Send + 'static,
    done: impl Fn(&Generation) -> Value + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |event| {
        let _alive = &guard;
        let value = match event {
            Event::Text(t) => piece(&t),
            Event::Done(g) => done(&g),
            Event::Error(e) => json!({ "error": e }),
        };
        Ok::<_, std::convert::Infallible>(format!("{value}\n"))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct GenerateRequest {
    #[serde(default)]
    model: Option<String>,
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    /// Plain completion without the chat template.
    #[serde(default)]
    raw: bool,
    #[serde(default = "default_stream")]
    stream: bool,
    #[serde(default)]
    options: Option<OllamaOptions>,
}

/// `POST /api/generate`: a prompt, through the chat template unless `raw`
/// (Ollama applies the model's template to `prompt` and `system`).
pub(crate) async fn generate(
    State(state): State<Arc<AppState>>,
    req: Result<Json<GenerateRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let tokens = if req.raw || !l.runner.has_model_template() {
        l.runner.tokenize_prompt(&req.prompt)
    } else {
        let mut m = Vec::new();
        if let Some(s) = &req.system {
            m.push(crate::chat::Message::new("system", s));
        }
        m.push(crate::chat::Message::new("user", &req.prompt));
        chat_tokens(l, &m)?
    };
    let options = req
        .options
        .unwrap_or_default()
        .sampling()
        .options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    if req.stream {
        let m2 = model.clone();
        return Ok(ndjson(
            rx,
            guard,
            move |t| json!({ "model": model, "created_at": created_at(), "response": t, "done": false }),
            move |g| {
                merge(
                    json!({ "model": m2, "created_at": created_at(), "response": "" }),
                    final_fields(g),
                )
            },
        ));
    }
    let (text, g) = collect(rx).await?;
    drop(guard);
    Ok(Json(merge(
        json!({ "model": model, "created_at": created_at(), "response": text }),
        final_fields(&g),
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default = "default_stream")]
    stream: bool,
    #[serde(default)]
    options: Option<OllamaOptions>,
}

/// `POST /api/chat`.
pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    req: Result<Json<ChatRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let tokens = chat_tokens(l, &messages(req.messages)?)?;
    let options = req
        .options
        .unwrap_or_default()
        .sampling()
        .options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    if req.stream {
        let m2 = model.clone();
        return Ok(ndjson(
            rx,
            guard,
            move |t| {
                json!({ "model": model, "created_at": created_at(),
                        "message": { "role": "assistant", "content": t }, "done": false })
            },
            move |g| {
                merge(
                    json!({ "model": m2, "created_at": created_at(),
                            "message": { "role": "assistant", "content": "" } }),
                    final_fields(g),
                )
            },
        ));
    }
    let (text, g) = collect(rx).await?;
    drop(guard);
    Ok(Json(merge(
        json!({ "model": model, "created_at": created_at(),
                "message": { "role": "assistant", "content": text } }),
        final_fields(&g),
    ))
    .into_response())
}

/// The model as Ollama lists it.
fn model_entry(l: &Loaded) -> Value {
    let file = l.runner.model().file();
    let config = l.runner.model().config();
    let file_type = file
        .metadata()
        .u32("general.file_type")
        .ok()
        .flatten()
        .map_or("unknown".to_string(), |t| t.to_string());
    let modified = file
        .path()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map_or_else(created_at, |t| t.to_rfc3339());
    json!({
        "name": l.model_id,
        "model": l.model_id,
        "modified_at": modified,
        "size": file.file_size(),
        "digest": "",
        "details": {
            "format": "gguf",
            "family": config.arch,
            "families": [config.arch],
            "parameter_size": "",
            "quantization_level": file_type,
        },
    })
}

/// `GET /api/tags`: the models this server has (the loaded one).
pub(crate) async fn tags(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    Ok(Json(json!({ "models": [model_entry(l)] })).into_response())
}

/// `GET /api/ps`: the models in memory.
pub(crate) async fn ps(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let entry = merge(
        model_entry(l),
        json!({ "size_vram": 0, "expires_at": "9999-12-31T23:59:59Z" }),
    );
    Ok(Json(json!({ "models": [entry] })).into_response())
}

/// `POST /api/show`: details of a model.
pub(crate) async fn show(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let c = l.runner.model().config();
    let arch = c.arch.to_string();
    let template = l
        .runner
        .model()
        .file()
        .metadata()
        .str("tokenizer.chat_template")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_string();
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": template,
        "details": model_entry(l)["details"],
        "model_info": {
            "general.architecture": arch,
            format!("{arch}.block_count"): c.n_layers,
            format!("{arch}.context_length"): c.context_length,
            format!("{arch}.embedding_length"): c.n_embd,
            format!("{arch}.attention.head_count"): c.n_head,
            format!("{arch}.attention.head_count_kv"): c.n_head_kv,
        },
        "capabilities": ["completion"],
    }))
    .into_response())
}
