//! Route handlers: request bodies validated into typed values, generation
//! submitted to the engine, answers in the shapes OpenAI's and llama-server's
//! clients expect.

use super::engine::{Event, Job, SubmitError};
use super::{ApiError, AppState, Loaded, error_json};
use crate::chat::Message;
use crate::engine::{Generation, GenerationOptions, SamplerConfig, StopReason};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc;

type AppResult = Result<Response, ApiError>;

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:04x}",
        unix_now(),
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// The loaded model, or the 503 that says why not.
pub(super) fn loaded(state: &AppState) -> Result<&Loaded, ApiError> {
    match state.loaded.get() {
        Some(Ok(l)) => Ok(l),
        Some(Err(e)) => Err(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the model failed to load: {e}"),
        )),
        None => Err(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading",
        )),
    }
}

/// A JSON body, with rejections turned into our 400 JSON errors.
pub(super) fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed.map(|Json(v)| v).map_err(|e| {
        error_json(
            e.status(),
            format!("invalid request body: {}", e.body_text()),
        )
    })
}

/// `Authorization: Bearer KEY` on every route but the health checks.
pub(crate) async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let open = matches!(request.uri().path(), "/health" | "/healthz" | "/ready");
    // Note: /docs and /openapi.json stay behind the key too; they describe the API.
    if let (Some(key), false) = (&state.api_key, open) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return error_json(StatusCode::UNAUTHORIZED, "missing or wrong API key")
                .with_header(header::WWW_AUTHENTICATE, "Bearer")
                .into_response();
        }
    }
    next.run(request).await
}

pub(crate) async fn not_found(request: Request) -> Response {
    error_json(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

pub(crate) async fn root(State(state): State<Arc<AppState>>) -> Response {
    let model = state
        .loaded
        .get()
        .and_then(|l| l.as_ref().ok())
        .map(|l| l.model_id.clone());
    Json(json!({
        "name": "rusty-llm",
        "version": env!("CARGO_PKG_VERSION"),
        "model": model,
        "routes": ["/health", "/ready", "/v1/models", "/v1/chat/completions", "/v1/completions",
                   "/generate", "/tokenize", "/detokenize"],
    }))
    .into_response()
}

pub(crate) async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match loaded(&state) {
        Ok(l) => Json(json!({ "status": "ready", "model": l.model_id })).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn version() -> Response {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") })).into_response()
}

fn model_object(state: &AppState, l: &Loaded) -> Value {
    let created = state
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({ "id": l.model_id, "object": "model", "created": created, "owned_by": "rusty-llm" })
}

pub(crate) async fn models(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    Ok(Json(json!({ "object": "list", "data": [model_object(&state, l)] })).into_response())
}

/// Any id answers with the loaded model: clients often hard-code a name.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(_id): Path<String>,
) -> AppResult {
    let l = loaded(&state)?;
    Ok(Json(model_object(&state, l)).into_response())
}

pub(crate) async fn embeddings_unavailable() -> Response {
    error_json(
        StatusCode::NOT_IMPLEMENTED,
        "embeddings are not available in this build yet",
    )
    .into_response()
}

/// `stop` as OpenAI sends it: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StopField {
    One(String),
    Many(Vec<String>),
}

/// Sampling and length fields shared by the generation routes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SamplingFields {
    pub(super) max_tokens: Option<usize>,
    pub(super) max_completion_tokens: Option<usize>,
    /// llama-server's name for max_tokens.
    pub(super) n_predict: Option<i64>,
    pub(super) temperature: Option<f32>,
    pub(super) top_p: Option<f32>,
    pub(super) top_k: Option<usize>,
    pub(super) min_p: Option<f32>,
    pub(super) presence_penalty: Option<f32>,
    pub(super) frequency_penalty: Option<f32>,
    pub(super) repeat_penalty: Option<f32>,
    pub(super) repeat_last_n: Option<usize>,
    pub(super) seed: Option<u64>,
    pub(super) stop: Option<StopField>,
    #[serde(default)]
    pub(super) ignore_eos: bool,
}

impl SamplingFields {
    /// Generation options for a prompt of `prompt_len` tokens in a context of
    /// `ctx_size`: without a length, generate until the context is full.
    pub(super) fn options(
        &self,
        prompt_len: usize,
        ctx_size: usize,
    ) -> Result<GenerationOptions, ApiError> {
        let d = SamplerConfig::default();
        let sampler = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            min_p: self.min_p.unwrap_or(d.min_p),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(d.repeat_last_n),
            logit_bias: Vec::new(),
            seed: self.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
        };
        sampler
            .validate()
            .map_err(|e| error_json(StatusCode::BAD_REQUEST, e.to_string()))?;
        let remaining = ctx_size.saturating_sub(prompt_len);
        let requested = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(self.n_predict.filter(|&n| n >= 0).map(|n| n as usize));
        if prompt_len >= ctx_size {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                format!("the prompt has {prompt_len} tokens but the context holds {ctx_size}"),
            ));
        }
        let max_tokens = match requested {
            Some(n) if n > remaining => {
                return Err(error_json(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{prompt_len} prompt tokens + max_tokens {n} exceed the context of {ctx_size} tokens"
                    ),
                ));
            }
            Some(n) => n,
            None => remaining,
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        Ok(GenerationOptions {
            max_tokens,
            sampler,
            stop,
            ignore_eos: self.ignore_eos,
            context_shift: false,
        })
    }
}

/// Message content: a string, or OpenAI's list of parts (text parts joined).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

impl ChatMessage {
    fn into_message(self) -> Result<Message, ApiError> {
        let content = match self.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match p.kind.as_str() {
                        "text" | "input_text" => text.push_str(&p.text),
                        // Models here read text only: an image becomes a visible
                        // placeholder rather than silently vanishing.
                        other => text.push_str(&format!(
                            "[{}: not shown to this model]",
                            other.trim_end_matches("_url")
                        )),
                    }
                }
                text
            }
        };
        Ok(Message::new(self.role, content))
    }
}

pub(super) fn messages(list: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if list.is_empty() {
        return Err(error_json(
            StatusCode::BAD_REQUEST,
            "messages must not be empty",
        ));
    }
    list.into_iter().map(ChatMessage::into_message).collect()
}

/// The prompt tokens of a conversation through the model's chat template
/// (a template error is the client's: 400).
pub(super) fn chat_tokens(l: &Loaded, messages: &[Message]) -> Result<Vec<u32>, ApiError> {
    l.runner
        .tokenize_chat(messages)
        .map_err(|e| error_json(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Sets the job's cancel flag when dropped (the client went away).
pub(super) struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Submits a job; returns its event stream and the cancel guard.
pub(super) fn submit(
    l: &Loaded,
    tokens: Vec<u32>,
    options: GenerationOptions,
) -> Result<(mpsc::UnboundedReceiver<Event>, CancelOnDrop), ApiError> {
    let (events, rx) = mpsc::unbounded_channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    let job = Job {
        tokens,
        options,
        events,
        cancelled: Arc::clone(&cancelled),
    };
    match l.engine.submit(job) {
        Ok(()) => Ok((rx, CancelOnDrop(cancelled))),
        Err(SubmitError::Busy) => Err(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; retry shortly",
        )
        .with_header(header::RETRY_AFTER, "1")),
        Err(SubmitError::Stopped) => Err(error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the inference engine has stopped",
        )),
    }
}

/// Waits for the whole generation.
pub(super) async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<(String, Generation), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done(g) => return Ok((text, g)),
            Event::Error(e) => return Err(error_json(StatusCode::BAD_REQUEST, e)),
        }
    }
    Err(error_json(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the generation ended without a result",
    ))
}

fn finish_reason(g: &Generation) -> &'static str {
    match g.stop_reason {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.generated_tokens,
        "total_tokens": g.prompt_tokens + g.generated_tokens,
        "prompt_tokens_details": { "cached_tokens": g.cached_tokens },
    })
}

/// An SSE stream of `chunk(text)` objects, a final `done(generation)` object
/// and `[DONE]`, as OpenAI streams.
fn sse_stream(
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    chunk: impl Fn(&str) -> Value + Send + 'static,
    done: impl Fn(&Generation) -> Value + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    use futures_util::StreamExt;
    // The worker drops its sender after `Done`, which ends this stream; the
    // guard lives as long as the stream, so a dropped stream (a client that
    // went away) cancels the job.
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |event| {
        let _alive = &guard;
        Ok(match event {
            Event::Text(t) => SseEvent::default().data(chunk(&t).to_string()),
            Event::Done(g) => SseEvent::default().data(done(&g).to_string()),
            Event::Error(e) => {
                SseEvent::default().data(json!({ "error": { "message": e } }).to_string())
            }
        })
    });
    let tail = stream::once(async { Ok(SseEvent::default().data("[DONE]")) });
    Sse::new(events.chain(tail))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: SamplingFields,
}

pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    req: Result<Json<ChatRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(error_json(
            StatusCode::BAD_REQUEST,
            "n: only one choice per request is supported",
        ));
    }
    let messages = messages(req.messages)?;
    let tokens = chat_tokens(l, &messages)?;
    let options = req.sampling.options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    let id = next_id("chatcmpl");
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    let created = unix_now();
    if req.stream {
        let (id2, model2) = (id.clone(), model.clone());
        let chunk = move |t: &str| {
            json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{ "index": 0, "delta": { "role": "assistant", "content": t }, "finish_reason": null }] })
        };
        let done = move |g: &Generation| {
            json!({ "id": id2, "object": "chat.completion.chunk", "created": created, "model": model2,
                    "choices": [{ "index": 0, "delta": {}, "finish_reason": finish_reason(g) }],
                    "usage": usage(g) })
        };
        return Ok(sse_stream(rx, guard, chunk, done).into_response());
    }
    let (text, g) = collect(rx).await?;
    drop(guard);
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text },
                      "finish_reason": finish_reason(&g) }],
        "usage": usage(&g),
    }))
    .into_response())
}

/// A prompt as OpenAI's completions route takes it: a string (or a list
/// holding one string).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    #[serde(default)]
    model: Option<String>,
    prompt: PromptField,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: SamplingFields,
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    req: Result<Json<CompletionRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                format!(
                    "prompt: {} prompts given; this server completes one per request",
                    v.len()
                ),
            ));
        }
    };
    let tokens = l.runner.tokenize_prompt(&prompt);
    let options = req.sampling.options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    let id = next_id("cmpl");
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    let created = unix_now();
    if req.stream {
        let (id2, model2) = (id.clone(), model.clone());
        let chunk = move |t: &str| {
            json!({ "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{ "index": 0, "text": t, "finish_reason": null }] })
        };
        let done = move |g: &Generation| {
            json!({ "id": id2, "object": "text_completion", "created": created, "model": model2,
                    "choices": [{ "index": 0, "text": "", "finish_reason": finish_reason(g) }],
                    "usage": usage(g) })
        };
        return Ok(sse_stream(rx, guard, chunk, done).into_response());
    }
    let (text, g) = collect(rx).await?;
    drop(guard);
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{ "index": 0, "text": text, "finish_reason": finish_reason(&g) }],
        "usage": usage(&g),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct GenerateRequest {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(flatten)]
    sampling: SamplingFields,
}

/// The native route: a prompt (plain completion) or messages (chat
/// template), answered with the text and timings.
pub(crate) async fn generate(
    State(state): State<Arc<AppState>>,
    req: Result<Json<GenerateRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let tokens = match (req.prompt, req.messages) {
        (Some(p), None) => l.runner.tokenize_prompt(&p),
        (None, Some(m)) => chat_tokens(l, &messages(m)?)?,
        _ => {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"prompt\" and \"messages\"",
            ));
        }
    };
    let options = req.sampling.options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    let (text, g) = collect(rx).await?;
    drop(guard);
    Ok(Json(json!({
        "text": text,
        "prompt_tokens": g.prompt_tokens,
        "cached_tokens": g.cached_tokens,
        "generated_tokens": g.generated_tokens,
        "stop_reason": g.stop_reason,
        "prefill_ms": g.prefill_ms,
        "decode_ms": g.decode_ms,
        "total_ms": g.total_ms,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    parse_special: bool,
}

/// llama-server's `/tokenize`: `{"content": …}` → `{"tokens": […]}`.
pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    req: Result<Json<TokenizeRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let tokens = l
        .runner
        .tokenizer()
        .encode(&req.content, req.add_special, req.parse_special);
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// llama-server's `/detokenize`: `{"tokens": […]}` → `{"content": …}`.
pub(crate) async fn detokenize(
    State(state): State<Arc<AppState>>,
    req: Result<Json<DetokenizeRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let req = body(req)?;
    let n_vocab = l.runner.tokenizer().vocab().len();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(error_json(
            StatusCode::BAD_REQUEST,
            format!("token {bad} is outside the vocabulary of {n_vocab}"),
        ));
    }
    let content = l.runner.tokenizer().decode(&req.tokens, false);
    Ok(Json(json!({ "content": content })).into_response())
}

/// The model as LM Studio's `/api/v0/models` lists it.
fn lmstudio_model(l: &Loaded) -> Value {
    let file = l.runner.model().file();
    let quantization = file
        .tensor_info("blk.0.ffn_down.weight")
        .map_or("unknown".to_string(), |t| t.ggml_type.name().to_string());
    json!({
        "id": l.model_id,
        "object": "model",
        "type": "llm",
        "publisher": "local",
        "arch": l.runner.model().config().arch,
        "compatibility_type": "gguf",
        "quantization": quantization,
        "state": "loaded",
        "max_context_length": l.runner.model().config().context_length,
    })
}

/// `GET /api/v0/models` (LM Studio).
pub(crate) async fn lmstudio_models(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    Ok(Json(json!({ "object": "list", "data": [lmstudio_model(l)] })).into_response())
}

/// `GET /api/v0/models/{id}` (LM Studio).
pub(crate) async fn lmstudio_model_route(
    State(state): State<Arc<AppState>>,
    Path(_id): Path<String>,
) -> AppResult {
    let l = loaded(&state)?;
    Ok(Json(lmstudio_model(l)).into_response())
}

/// The Responses API's `input`: a string or a list of messages.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ResponsesInput {
    Text(String),
    Messages(Vec<ChatMessage>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    input: ResponsesInput,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: SamplingFields,
}

/// `POST /v1/responses`: OpenAI's Responses API (text in, text out).
pub(crate) async fn responses(
    State(state): State<Arc<AppState>>,
    req: Result<Json<ResponsesRequest>, JsonRejection>,
) -> AppResult {
    let l = loaded(&state)?;
    let mut req = body(req)?;
    let mut list = Vec::new();
    if let Some(i) = &req.instructions {
        list.push(Message::new("system", i));
    }
    match req.input {
        ResponsesInput::Text(t) => list.push(Message::new("user", t)),
        ResponsesInput::Messages(m) => list.extend(messages(m)?),
    }
    let tokens = chat_tokens(l, &list)?;
    req.sampling.max_tokens = req.max_output_tokens.or(req.sampling.max_tokens);
    let options = req.sampling.options(tokens.len(), l.ctx_size)?;
    let (rx, guard) = submit(l, tokens, options)?;
    let id = next_id("resp");
    let item_id = next_id("msg");
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    let created = unix_now();
    let response = move |text: &str, g: Option<&Generation>| {
        json!({
            "id": id, "object": "response", "created_at": created, "model": model,
            "status": if g.is_some() { "completed" } else { "in_progress" },
            "output": [{ "type": "message", "id": item_id, "status": "completed", "role": "assistant",
                         "content": [{ "type": "output_text", "text": text, "annotations": [] }] }],
            "usage": g.map(|g| json!({ "input_tokens": g.prompt_tokens, "output_tokens": g.generated_tokens,
                                       "total_tokens": g.prompt_tokens + g.generated_tokens })),
        })
    };
    if req.stream {
        use futures_util::StreamExt;
        // Typed server-sent events: created, output_text.delta…, completed.
        let created_event = SseEvent::default().event("response.created").data(
            json!({ "type": "response.created", "response": response("", None) }).to_string(),
        );
        let mut text = String::new();
        let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |event| {
            let _alive = &guard;
            Ok::<_, Infallible>(match event {
                Event::Text(t) => {
                    text.push_str(&t);
                    SseEvent::default().event("response.output_text.delta").data(
                        json!({ "type": "response.output_text.delta", "delta": t, "output_index": 0, "content_index": 0 })
                            .to_string(),
                    )
                }
                Event::Done(g) => SseEvent::default().event("response.completed").data(
                    json!({ "type": "response.completed", "response": response(&text, Some(&g)) })
                        .to_string(),
                ),
                Event::Error(e) => SseEvent::default()
                    .event("error")
                    .data(json!({ "type": "error", "message": e }).to_string()),
            })
        });
        let all = stream::once(async move { Ok(created_event) }).chain(events);
        return Ok(Sse::new(all).into_response());
    }
    let (text, g) = collect(rx).await?;
    drop(guard);
    let mut r = response(&text, Some(&g));
    r["output_text"] = json!(text);
    Ok(Json(r).into_response())
}
