//! Route handlers: request bodies validated into typed values, generation
//! submitted to the engine, answers in the shapes OpenAI's and llama-server's
//! clients expect. Shared pieces (the JSON extractor, sampling fields, the
//! engine round trip) are used by the Ollama, LM Studio and Responses routes.

use super::{ApiError, AppState, Loaded, OllamaError, bad_field, error_json};
use crate::chat::Message;
use crate::engine::{
    Event, GenerateError, Generation, GenerationOptions, Handle, Request as EngineRequest,
    SamplerConfig, SamplingError, StopReason, SubmitError, TokenLogprob,
};
use crate::tokenizer::{TokenId, Tokenizer};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type AppResult = Result<Response, ApiError>;

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn next_id(prefix: &str) -> String {
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
        )
        .with_header(header::RETRY_AFTER, "1")),
    }
}

/// A JSON request body: `Content-Type: application/json` (else 415), within
/// the body limit (else 413), well-formed (else 400) and of the right shape
/// (else 400 naming the field, e.g. `messages[0].content`).
pub(crate) struct JsonBody<T>(pub T);

/// [`JsonBody`] whose errors take Ollama's shape.
pub(crate) struct OllamaJson<T>(pub T);

async fn parse_json<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<T, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        let got = if content_type.is_empty() {
            "none".to_string()
        } else {
            format!("{content_type:?}")
        };
        return Err(error_json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json (got {got})"),
        )
        .code("unsupported_media_type"));
    }
    let bytes = Bytes::from_request(request, state).await.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server accepts (--max-body-bytes)".to_string()
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        error_json(status, message)
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            error_json(StatusCode::BAD_REQUEST, format!("malformed JSON: {inner}"))
                .code("invalid_json")
        } else if path == "." {
            // serde loses the path inside `#[serde(flatten)]` fields: check the
            // shared sampling fields on their own to name the one at fault.
            match serde_path_to_error::deserialize::<_, SamplingFields>(
                &mut serde_json::Deserializer::from_slice(&bytes),
            ) {
                Err(e) if e.path().to_string() != "." => {
                    bad_field(&e.path().to_string(), e.into_inner())
                }
                _ => error_json(StatusCode::BAD_REQUEST, format!("invalid request: {inner}"))
                    .code("invalid_value"),
            }
        } else {
            bad_field(&path, inner)
        }
    })?;
    de.end().map_err(|e| {
        error_json(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")).code("invalid_json")
    })?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(request, state).await.map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OllamaJson<T> {
    type Rejection = OllamaError;

    async fn from_request(request: Request, state: &S) -> Result<Self, OllamaError> {
        Ok(Self(parse_json(request, state).await?))
    }
}

/// Ollama's own routes (`/api/…` but not LM Studio's `/api/v0/…`) answer
/// errors in Ollama's shape.
pub(super) fn is_ollama_path(path: &str) -> bool {
    path.starts_with("/api/") && !path.starts_with("/api/v0/")
}

fn error_for_path(path: &str, e: ApiError) -> Response {
    if is_ollama_path(path) {
        OllamaError(e).into_response()
    } else {
        e.into_response()
    }
}

/// `Authorization: Bearer KEY` on every route but the health checks.
pub(crate) async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let open = matches!(path, "/health" | "/healthz" | "/ready");
    // Note: /docs and /openapi.json stay behind the key too; they describe the API.
    if let (Some(key), false) = (&state.api_key, open) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            let e = error_json(StatusCode::UNAUTHORIZED, "missing or wrong API key")
                .code("invalid_api_key")
                .with_header(header::WWW_AUTHENTICATE, "Bearer");
            return error_for_path(path, e);
        }
    }
    next.run(request).await
}

pub(crate) async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    let e = error_json(
        StatusCode::NOT_FOUND,
        format!("no route {} {path}", request.method()),
    )
    .code("not_found");
    error_for_path(path, e)
}

pub(crate) async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path();
    let e = error_json(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {path}", request.method()),
    )
    .code("method_not_allowed");
    error_for_path(path, e)
}

/// `GET /`: what this server is and where to start.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ServerInfo {
    name: &'static str,
    version: &'static str,
    /// The loaded model's id; null while it loads.
    #[schema(required = true)]
    model: Option<String>,
    /// Every route this server answers (as `/openapi.json` describes them).
    routes: Vec<String>,
}

pub(crate) async fn root(State(state): State<Arc<AppState>>) -> Response {
    let model = state
        .loaded
        .get()
        .and_then(|l| l.as_ref().ok())
        .map(|l| l.model_id.clone());
    axum::Json(ServerInfo {
        name: "rusty-llm",
        version: env!("CARGO_PKG_VERSION"),
        model,
        routes: super::openapi::paths(),
    })
    .into_response()
}

/// `GET /health`, `/healthz`: the process answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

pub(crate) async fn health() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// `GET /ready` once the model is loaded (503 with an error body before).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    status: &'static str,
    model: String,
}

pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match loaded(&state) {
        Ok(l) => axum::Json(Ready {
            status: "ready",
            model: l.model_id.clone(),
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/version` (Ollama's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Version {
    version: &'static str,
}

pub(crate) async fn version() -> Response {
    axum::Json(Version {
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

/// A model as OpenAI's `/v1/models` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

fn model_object(state: &AppState, l: &Loaded) -> ModelObject {
    let created = state
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ModelObject {
        id: l.model_id.clone(),
        object: "model",
        created,
        owned_by: "rusty-llm",
    }
}

pub(crate) async fn models(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let list = ModelList {
        object: "list",
        data: vec![model_object(&state, l)],
    };
    Ok(axum::Json(list).into_response())
}

/// Any id answers with the loaded model: clients often hard-code a name.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(_id): Path<String>,
) -> AppResult {
    let l = loaded(&state)?;
    Ok(axum::Json(model_object(&state, l)).into_response())
}

/// `stop` as OpenAI sends it: one string or a list.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum StopField {
    One(String),
    Many(Vec<String>),
}

/// Sampling and length fields shared by the generation routes, as the
/// client sent them (typed by serde, range-checked by [`SamplingFields::options`]).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct SamplingFields {
    /// The Responses API's name for max_tokens.
    #[schema(minimum = 1)]
    pub(super) max_output_tokens: Option<usize>,
    #[schema(minimum = 1)]
    pub(super) max_tokens: Option<usize>,
    #[schema(minimum = 1)]
    pub(super) max_completion_tokens: Option<usize>,
    /// llama-server's and Ollama's name for max_tokens; negative: no limit.
    pub(super) n_predict: Option<i64>,
    pub(super) temperature: Option<f32>,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub(super) top_p: Option<f32>,
    pub(super) top_k: Option<usize>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub(super) min_p: Option<f32>,
    pub(super) presence_penalty: Option<f32>,
    pub(super) frequency_penalty: Option<f32>,
    pub(super) repeat_penalty: Option<f32>,
    pub(super) repeat_last_n: Option<usize>,
    pub(super) seed: Option<u64>,
    pub(super) stop: Option<StopField>,
    /// OpenAI's map from token id (as a string) to a bias in [-100, 100].
    pub(super) logit_bias: Option<HashMap<String, f32>>,
    #[serde(default)]
    pub(super) ignore_eos: bool,
    /// llama-server's switch for reusing the previous request's prompt prefix.
    pub(super) cache_prompt: Option<bool>,
}

/// The name a request field has in OpenAI's API for a sampler setting.
fn sampler_field(e: &SamplingError) -> Option<&'static str> {
    match e {
        SamplingError::InvalidParameter { name, .. } => Some(name),
        _ => None,
    }
}

impl SamplingFields {
    /// Generation options for a prompt of `prompt_len` tokens in a context of
    /// `ctx_size` over a vocabulary of `n_vocab`: without a length, generate
    /// until the context is full.
    pub(super) fn options(
        &self,
        prompt_len: usize,
        ctx_size: usize,
        n_vocab: usize,
    ) -> Result<GenerationOptions, ApiError> {
        let d = SamplerConfig::default();
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let token = key
                .parse::<TokenId>()
                .ok()
                .filter(|&t| (t as usize) < n_vocab)
                .ok_or_else(|| {
                    bad_field(
                        "logit_bias",
                        format!("{key:?} is not a token id below the vocabulary size {n_vocab}"),
                    )
                })?;
            if !(-100.0..=100.0).contains(&bias) {
                return Err(bad_field(
                    "logit_bias",
                    format!("the bias {bias} for token {token} is outside [-100, 100]"),
                ));
            }
            logit_bias.push((token, bias));
        }
        // The map's order is arbitrary; the sampler's stages should not be.
        logit_bias.sort_by_key(|&(t, _)| t);
        let sampler = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            min_p: self.min_p.unwrap_or(d.min_p),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(d.repeat_last_n),
            logit_bias,
            seed: self.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
        };
        sampler.validate().map_err(|e| match sampler_field(&e) {
            Some(field) => bad_field(field, &e),
            None => error_json(StatusCode::BAD_REQUEST, e.to_string()),
        })?;
        // The first length given, under the name the client used.
        let (field, requested) = [
            ("max_output_tokens", self.max_output_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
            ("max_tokens", self.max_tokens),
        ]
        .into_iter()
        .find(|(_, n)| n.is_some())
        .unwrap_or(match self.n_predict {
            // Negative: no limit.
            Some(n) => ("n_predict", usize::try_from(n).ok()),
            None => ("max_tokens", None),
        });
        if requested == Some(0) {
            return Err(bad_field(field, "must be at least 1"));
        }
        if prompt_len >= ctx_size {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                format!(
                    "the prompt has {prompt_len} tokens but the context holds {ctx_size} \
                     (and at least one token must be generated)"
                ),
            )
            .code("context_length_exceeded"));
        }
        let remaining = ctx_size - prompt_len;
        let max_tokens = match requested {
            Some(n) if n > remaining => {
                return Err(error_json(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{prompt_len} prompt tokens + {field} {n} = {} exceed the context of {ctx_size} tokens",
                        prompt_len + n
                    ),
                )
                .param(field)
                .code("context_length_exceeded"));
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
            top_logprobs: None,
        })
    }
}

/// Message content: a string, or OpenAI's list of parts (text parts joined).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ChatMessage {
    /// The Responses API's item type (`message`); absent in chat requests.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

impl ChatMessage {
    pub(super) fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    fn into_message(self) -> Message {
        let content = match self.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match p.kind.as_str() {
                        "text" | "input_text" | "output_text" => text.push_str(&p.text),
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
        // OpenAI's newer name for the system role; chat templates know "system".
        let role = if self.role == "developer" {
            "system".to_string()
        } else {
            self.role
        };
        Message::new(role, content)
    }
}

pub(super) fn messages(list: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if list.is_empty() {
        return Err(bad_field("messages", "must not be empty"));
    }
    Ok(list.into_iter().map(ChatMessage::into_message).collect())
}

/// The prompt tokens of a conversation through the model's chat template
/// (a template error is the client's: 400).
pub(super) fn chat_tokens(l: &Loaded, messages: &[Message]) -> Result<Vec<u32>, ApiError> {
    l.runner
        .tokenize_chat(messages)
        .map_err(|e| bad_field("messages", e))
}

/// OpenAI's `response_format`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// OpenAI's `json_schema` format; its `name` and `strict` are accepted
/// and mean nothing here.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct JsonSchemaFormat {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
}

/// What a chat request asks of the answer's form — tools it may call, a
/// JSON answer — as the prompt carries it until sampling can enforce it
/// (no grammar-constrained sampling yet, and tool calls are not parsed out
/// of the answer). Tools go to the model's template when it renders them
/// (`tools_for_template`); otherwise they, and the wanted format, become a
/// system instruction, as llama.cpp's generic tool format does.
#[derive(Debug, Default)]
pub(super) struct AnswerForm {
    tools_for_template: Option<Value>,
    instruction: Option<String>,
}

impl AnswerForm {
    /// The form asked for; `renders_tools`: the model's template renders a
    /// `tools` list itself.
    fn new(
        tools: Option<Vec<Value>>,
        tool_choice: Option<&Value>,
        format: Option<&ResponseFormat>,
        renders_tools: bool,
    ) -> Result<Self, ApiError> {
        let mut form = Self::default();
        let mut notes = Vec::new();
        // `tool_choice: "none"` means the model must not call any.
        let tools = tools
            .filter(|t| !t.is_empty())
            .filter(|_| tool_choice.and_then(Value::as_str) != Some("none"));
        if let Some(tools) = tools {
            if let Some(i) = tools.iter().position(|t| !t.is_object()) {
                return Err(bad_field(&format!("tools[{i}]"), "must be an object"));
            }
            if renders_tools {
                form.tools_for_template = Some(Value::Array(tools));
            } else {
                notes.push(format!(
                    "You can call these tools. To call one, answer with only a JSON object \
                     {{\"name\": <tool name>, \"arguments\": {{…}}}}.\nTools: {}",
                    Value::Array(tools)
                ));
            }
        }
        match format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => notes.push("Answer with one JSON object.".into()),
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let mut note = String::from("Answer with one JSON object");
                if let Some(d) = &json_schema.description {
                    note.push_str(&format!(" ({d})"));
                }
                if let Some(schema) = &json_schema.schema {
                    note.push_str(&format!(" that matches this JSON schema: {schema}"));
                }
                note.push('.');
                notes.push(note);
            }
        }
        form.instruction = (!notes.is_empty()).then(|| notes.join("\n\n"));
        Ok(form)
    }

    /// The prompt tokens of `messages` asking for this form: the instruction
    /// joins the leading system message (or becomes one).
    fn tokens(self, l: &Loaded, mut messages: Vec<Message>) -> Result<Vec<u32>, ApiError> {
        if let Some(note) = self.instruction {
            match messages.first_mut() {
                Some(m) if m.role == "system" => {
                    m.content.push_str("\n\n");
                    m.content.push_str(&note);
                }
                _ => messages.insert(0, Message::new("system", note)),
            }
        }
        l.runner
            .tokenize_chat_with_tools(&messages, self.tools_for_template.as_ref())
            .map_err(|e| bad_field("messages", e))
    }
}

/// Submits a generation to the engine; dropping the handle (or the stream
/// made of it) cancels it.
pub(super) fn submit(
    l: &Loaded,
    tokens: Vec<u32>,
    options: GenerationOptions,
    cache_prompt: Option<bool>,
) -> Result<Handle, ApiError> {
    let request = EngineRequest {
        tokens,
        options,
        cache_prompt: cache_prompt.unwrap_or(l.cache_prompt),
    };
    l.engine.submit(request).map_err(refused)
}

/// The answer when the engine does not take a job: 503 + Retry-After when
/// its queue is full.
pub(super) fn refused(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "every slot is busy and the queue is full; retry shortly",
        )
        .code("server_busy")
        .with_header(header::RETRY_AFTER, "1"),
        SubmitError::Stopped => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the inference engine has stopped",
        ),
    }
}

/// A request's events as a stream that owns its handle: a dropped stream (a
/// client that went away) cancels the request.
pub(super) fn events(handle: Handle) -> impl Stream<Item = Event> + Send + 'static {
    stream::unfold(handle, |mut handle| async move {
        let event = handle.next().await?;
        Some((event, handle))
    })
}

/// A failed generation as an answer: the request's fault (400) unless the
/// engine failed.
pub(super) fn generation_error(e: GenerateError) -> ApiError {
    let status = match e {
        GenerateError::Stopped | GenerateError::BatchFailed(_) | GenerateError::Model(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error_json(status, e.to_string())
}

/// Waits for the whole generation (its `text` is what streaming would show).
pub(super) async fn collect(mut handle: Handle) -> Result<Generation, ApiError> {
    while let Some(event) = handle.next().await {
        match event {
            Event::Piece { .. } => {}
            Event::Done(g) => return Ok(g),
            Event::Error(e) => return Err(generation_error(e)),
        }
    }
    Err(generation_error(GenerateError::Stopped))
}

pub(super) fn finish_reason(g: &Generation) -> &'static str {
    match g.stop_reason {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// Token counts of one request, as OpenAI reports them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
    prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PromptTokensDetails {
    /// Prompt tokens whose KV entries were reused from the previous request.
    cached_tokens: usize,
}

impl Usage {
    fn of(g: &Generation) -> Self {
        Self {
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.generated_tokens,
            total_tokens: g.prompt_tokens + g.generated_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: g.cached_tokens,
            },
        }
    }
}

/// A response body as a JSON value (for the fields LM Studio adds, and
/// for the stream helpers, which take values).
pub(super) fn to_value(body: impl Serialize) -> Value {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// A non-streamed chat completion (OpenAI's `chat.completion`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChatCompletion {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    #[schema(required = true)]
    system_fingerprint: Option<String>,
    choices: Vec<ChatChoice>,
    usage: Usage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChatChoice {
    index: u32,
    message: AssistantMessage,
    /// With `logprobs: true`: `{"content": [{id, token, logprob, bytes, top_logprobs}]}`.
    #[schema(required = true)]
    logprobs: Option<Value>,
    /// `stop` or `length`.
    finish_reason: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AssistantMessage {
    role: &'static str,
    content: String,
    #[schema(required = true)]
    refusal: Option<String>,
}

/// A non-streamed text completion (OpenAI's `text_completion`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TextCompletion {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<TextChoice>,
    usage: Usage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TextChoice {
    index: u32,
    text: String,
    /// With `logprobs: N`: parallel lists `tokens`, `token_logprobs`,
    /// `top_logprobs`, `text_offset`.
    #[schema(required = true)]
    logprobs: Option<Value>,
    /// `stop` or `length`; null on streamed chunks before the last.
    #[schema(required = true)]
    finish_reason: Option<&'static str>,
}

/// One server-sent event of a streamed chat completion
/// (`chat.completion.chunk`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChatCompletionChunk {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    #[schema(required = true)]
    system_fingerprint: Option<String>,
    choices: Vec<ChatChunkChoice>,
    /// Only with `stream_options.include_usage`: null on every chunk but the
    /// last, which has the usage and no choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChatChunkChoice {
    index: u32,
    delta: ChatDelta,
    #[schema(required = true)]
    logprobs: Option<Value>,
    /// `stop` or `length` on the last chunk, null before.
    #[schema(required = true)]
    finish_reason: Option<&'static str>,
}

/// New text of a streamed chat answer.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct ChatDelta {
    /// `assistant`, on the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

/// One server-sent event of a streamed text completion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TextCompletionChunk {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<TextChoice>,
    /// As in [`ChatCompletionChunk`].
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// What every chunk of one stream repeats.
#[derive(Debug, Clone)]
struct StreamHead {
    id: String,
    created: u64,
    model: String,
    /// The client asked for `stream_options.include_usage`.
    include_usage: bool,
}

impl StreamHead {
    fn chat(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Value {
        to_value(ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }

    fn text(&self, choices: Vec<TextChoice>, usage: Option<Usage>) -> Value {
        to_value(TextCompletionChunk {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }
}

/// A token as OpenAI's logprobs show it: its text (special tokens by name)
/// and its UTF-8 bytes (a byte-fallback token is a lone byte).
fn token_text(tokenizer: &Tokenizer, token: TokenId) -> (String, Vec<u8>) {
    let bytes = tokenizer.token_bytes(token, true);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat's `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs}]}`,
/// each entry with the token's `id` too (as llama-server adds; `logit_bias`
/// is keyed by id).
pub(super) fn chat_logprobs(tokenizer: &Tokenizer, entries: &[TokenLogprob]) -> Value {
    let entry = |token: TokenId, logprob: f32| {
        let (text, bytes) = token_text(tokenizer, token);
        json!({ "id": token, "token": text, "logprob": logprob, "bytes": bytes })
    };
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = entry(e.token, e.logprob);
            v["top_logprobs"] = e.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
            v
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// The legacy completions `logprobs` object: parallel lists of tokens,
/// their log-probabilities, the top alternatives and text offsets.
fn completion_logprobs(tokenizer: &Tokenizer, entries: &[TokenLogprob], offset: usize) -> Value {
    let mut offset = offset;
    let (mut tokens, mut logprobs, mut tops, mut offsets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in entries {
        let (text, _) = token_text(tokenizer, e.token);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        logprobs.push(e.logprob);
        let top: serde_json::Map<String, Value> = e
            .top
            .iter()
            .map(|&(t, lp)| (token_text(tokenizer, t).0, json!(lp)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({ "tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets })
}

/// One streamed chunk's pieces for [`sse_stream`].
pub(super) struct StreamShape<C, D> {
    /// A chunk for new text and the log-probabilities behind it.
    pub chunk: C,
    /// The chunks that end the stream (finish reason, then usage).
    pub done: D,
}

/// Server-sent events: `chunk` objects as text arrives, the `done` objects,
/// then `data: [DONE]`, as OpenAI streams.
pub(super) fn sse_stream<C, D>(
    handle: Handle,
    shape: StreamShape<C, D>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    C: FnMut(&str, &[TokenLogprob]) -> Value + Send + 'static,
    D: Fn(&Generation) -> Vec<Value> + Send + 'static,
{
    use futures_util::StreamExt;
    let StreamShape { mut chunk, done } = shape;
    // The engine drops its sender after `Done`, which ends this stream.
    let events = events(handle).flat_map(move |event| {
        let datas: Vec<String> = match event {
            Event::Piece { text, logprobs } => vec![chunk(&text, &logprobs).to_string()],
            Event::Done(g) => done(&g).iter().map(Value::to_string).collect(),
            Event::Error(e) => {
                vec![
                    json!({ "error": { "message": e.to_string(), "type": "server_error" } })
                        .to_string(),
                ]
            }
        };
        stream::iter(datas.into_iter().map(|d| Ok(SseEvent::default().data(d))))
    });
    let tail = stream::once(async { Ok(SseEvent::default().data("[DONE]")) });
    Sse::new(events.chain(tail))
}

/// `stream_options` (OpenAI): `include_usage` adds a last chunk with usage
/// and no choices.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// What differs between OpenAI's routes and LM Studio's copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    OpenAi,
    /// Adds `stats`, `model_info` and `runtime` (LM Studio's `/api/v0`).
    LmStudio,
}

impl Flavor {
    /// What LM Studio adds to a finished answer, if this flavor adds it.
    fn extras(self, l: &Loaded) -> Option<super::lmstudio::Extras> {
        (self == Self::LmStudio).then(|| super::lmstudio::Extras::new(l))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Report the sampled tokens' log-probabilities.
    #[serde(default)]
    logprobs: bool,
    /// With `logprobs`, this many alternatives per position (0–20).
    #[serde(default)]
    #[schema(maximum = 20)]
    top_logprobs: Option<usize>,
    /// Tool definitions (OpenAI's shape): rendered by the model's template
    /// when it renders tools, else described in a system instruction. Not
    /// enforced, and calls are not parsed out of the answer yet.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<Value>>,
    /// `none` leaves the tools out; other choices are accepted as is.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    /// A JSON answer, asked for in a system instruction (not enforced yet).
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    sampling: SamplingFields,
}

/// Most alternatives per position OpenAI's chat route allows.
const MAX_TOP_LOGPROBS: usize = 20;

pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> AppResult {
    chat(&state, req, Flavor::OpenAi).await
}

pub(super) async fn chat(state: &AppState, req: ChatRequest, flavor: Flavor) -> AppResult {
    let l = loaded(state)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad_field("n", "only one choice per request is supported"));
    }
    let top_logprobs = match (req.logprobs, req.top_logprobs) {
        (_, Some(n)) if n > MAX_TOP_LOGPROBS => {
            return Err(bad_field(
                "top_logprobs",
                format!("{n} is more than {MAX_TOP_LOGPROBS}"),
            ));
        }
        (false, Some(_)) => {
            return Err(bad_field("top_logprobs", "needs \"logprobs\": true"));
        }
        (true, n) => Some(n.unwrap_or(0)),
        (false, None) => None,
    };
    let form = AnswerForm::new(
        req.tools,
        req.tool_choice.as_ref(),
        req.response_format.as_ref(),
        l.runner.chat_template().renders_tools(),
    )?;
    let tokens = form.tokens(l, messages(req.messages)?)?;
    let n_vocab = l.runner.tokenizer().vocab().len();
    let mut options = req.sampling.options(tokens.len(), l.ctx_size, n_vocab)?;
    options.top_logprobs = top_logprobs;
    let handle = submit(l, tokens, options, req.sampling.cache_prompt)?;
    let id = next_id("chatcmpl");
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    let created = unix_now();
    let runner = Arc::clone(&l.runner);
    if req.stream {
        let head = StreamHead {
            id,
            created,
            model,
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        };
        let head2 = head.clone();
        let mut first = true;
        let chunk = move |t: &str, lps: &[TokenLogprob]| {
            let delta = ChatDelta {
                role: std::mem::take(&mut first).then_some("assistant"),
                content: Some(t.to_string()),
            };
            let logprobs = top_logprobs.map(|_| chat_logprobs(runner.tokenizer(), lps));
            let choice = ChatChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason: None,
            };
            head.chat(vec![choice], None)
        };
        let extras = flavor.extras(l);
        let done = move |g: &Generation| {
            let last = ChatChunkChoice {
                index: 0,
                delta: ChatDelta::default(),
                logprobs: None,
                finish_reason: Some(finish_reason(g)),
            };
            let finish = head2.chat(vec![last], None);
            let usage = head2.chat(vec![], Some(Usage::of(g)));
            final_chunks(finish, usage, extras.as_ref(), head2.include_usage, g)
        };
        return Ok(sse_stream(handle, StreamShape { chunk, done }).into_response());
    }
    let g = collect(handle).await?;
    let logprobs = top_logprobs.map(|_| chat_logprobs(runner.tokenizer(), &g.logprobs));
    let mut body = to_value(ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        system_fingerprint: None,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: g.text.clone(),
                refusal: None,
            },
            logprobs,
            finish_reason: finish_reason(&g),
        }],
        usage: Usage::of(&g),
    });
    if let Some(x) = flavor.extras(l) {
        x.apply(&mut body, &g);
    }
    Ok(axum::Json(body).into_response())
}

/// A prompt as OpenAI's completions route takes it: a string (or a list
/// holding one string).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

/// Most alternatives per position OpenAI's completions route allows.
const MAX_COMPLETION_LOGPROBS: usize = 5;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct CompletionRequest {
    #[serde(default)]
    model: Option<String>,
    prompt: PromptField,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Log-probabilities of the sampled tokens with this many alternatives (0–5).
    #[serde(default)]
    #[schema(maximum = 5)]
    logprobs: Option<usize>,
    /// Prepend the prompt to the returned text.
    #[serde(default)]
    echo: bool,
    #[serde(flatten)]
    sampling: SamplingFields,
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> AppResult {
    complete(&state, req, Flavor::OpenAi).await
}

pub(super) async fn complete(
    state: &AppState,
    req: CompletionRequest,
    flavor: Flavor,
) -> AppResult {
    let l = loaded(state)?;
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(bad_field(
                "prompt",
                format!(
                    "{} prompts given; this server completes one per request",
                    v.len()
                ),
            ));
        }
    };
    if let Some(n) = req.logprobs.filter(|&n| n > MAX_COMPLETION_LOGPROBS) {
        return Err(bad_field(
            "logprobs",
            format!("{n} is more than {MAX_COMPLETION_LOGPROBS}"),
        ));
    }
    if prompt.is_empty() {
        return Err(bad_field("prompt", "must not be empty"));
    }
    let tokens = l.runner.tokenize_prompt(&prompt);
    let n_vocab = l.runner.tokenizer().vocab().len();
    let mut options = req.sampling.options(tokens.len(), l.ctx_size, n_vocab)?;
    options.top_logprobs = req.logprobs;
    let handle = submit(l, tokens, options, req.sampling.cache_prompt)?;
    let id = next_id("cmpl");
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    let created = unix_now();
    let runner = Arc::clone(&l.runner);
    let echo = if req.echo { prompt } else { String::new() };
    if req.stream {
        let head = StreamHead {
            id,
            created,
            model,
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        };
        let head2 = head.clone();
        let with_logprobs = req.logprobs.is_some();
        let mut offset = echo.len();
        let mut pending_echo = echo;
        let chunk = move |t: &str, lps: &[TokenLogprob]| {
            let logprobs =
                with_logprobs.then(|| completion_logprobs(runner.tokenizer(), lps, offset));
            offset += t.len();
            let choice = TextChoice {
                index: 0,
                text: std::mem::take(&mut pending_echo) + t,
                logprobs,
                finish_reason: None,
            };
            head.text(vec![choice], None)
        };
        let extras = flavor.extras(l);
        let done = move |g: &Generation| {
            let last = TextChoice {
                index: 0,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(finish_reason(g)),
            };
            let finish = head2.text(vec![last], None);
            let usage = head2.text(vec![], Some(Usage::of(g)));
            final_chunks(finish, usage, extras.as_ref(), head2.include_usage, g)
        };
        return Ok(sse_stream(handle, StreamShape { chunk, done }).into_response());
    }
    let g = collect(handle).await?;
    let logprobs = req
        .logprobs
        .map(|_| completion_logprobs(runner.tokenizer(), &g.logprobs, echo.len()));
    let mut body = to_value(TextCompletion {
        id,
        object: "text_completion",
        created,
        model,
        choices: vec![TextChoice {
            index: 0,
            text: echo + &g.text,
            logprobs,
            finish_reason: Some(finish_reason(&g)),
        }],
        usage: Usage::of(&g),
    });
    if let Some(x) = flavor.extras(l) {
        x.apply(&mut body, &g);
    }
    Ok(axum::Json(body).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    JsonBody(req): JsonBody<GenerateRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    let tokens = match (req.prompt, req.messages) {
        (Some(p), None) if !p.is_empty() => l.runner.tokenize_prompt(&p),
        (Some(_), None) => return Err(bad_field("prompt", "must not be empty")),
        (None, Some(m)) => chat_tokens(l, &messages(m)?)?,
        _ => {
            return Err(error_json(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"prompt\" and \"messages\"",
            ));
        }
    };
    let n_vocab = l.runner.tokenizer().vocab().len();
    let options = req.sampling.options(tokens.len(), l.ctx_size, n_vocab)?;
    let handle = submit(l, tokens, options, req.sampling.cache_prompt)?;
    let g = collect(handle).await?;
    Ok(axum::Json(GenerateResponse {
        text: g.text,
        prompt_tokens: g.prompt_tokens,
        cached_tokens: g.cached_tokens,
        generated_tokens: g.generated_tokens,
        stop_reason: g.stop_reason,
        prefill_ms: g.prefill_ms,
        decode_ms: g.decode_ms,
        total_ms: g.total_ms,
    })
    .into_response())
}

/// The native route's answer: the text, token counts and timings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GenerateResponse {
    text: String,
    prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from an earlier request.
    cached_tokens: usize,
    generated_tokens: usize,
    #[schema(value_type = String)]
    stop_reason: StopReason,
    prefill_ms: f64,
    decode_ms: f64,
    total_ms: f64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    let tokens = l
        .runner
        .tokenizer()
        .encode(&req.content, req.add_special, req.parse_special);
    Ok(axum::Json(TokenizeResponse { tokens }).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenizeResponse {
    tokens: Vec<u32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// llama-server's `/detokenize`: `{"tokens": […]}` → `{"content": …}`.
pub(crate) async fn detokenize(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    let n_vocab = l.runner.tokenizer().vocab().len();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(bad_field(
            "tokens",
            format!("token {bad} is outside the vocabulary of {n_vocab}"),
        ));
    }
    let content = l.runner.tokenizer().decode(&req.tokens, false);
    Ok(axum::Json(DetokenizeResponse { content }).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DetokenizeResponse {
    content: String,
}

/// The closing chunks of an OpenAI stream: `finish` (the finish reason,
/// plus LM Studio's extras), then, when the client asked for usage, the
/// chunk with the usage and no choices.
fn final_chunks(
    mut finish: Value,
    usage: Value,
    extras: Option<&super::lmstudio::Extras>,
    include_usage: bool,
    g: &Generation,
) -> Vec<Value> {
    if let Some(x) = extras {
        x.apply(&mut finish, g);
    }
    if include_usage {
        vec![finish, usage]
    } else {
        vec![finish]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(json: &str) -> ResponseFormat {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn answer_form_goes_to_the_template_or_an_instruction() {
        let tools = || Some(vec![json!({"type": "function", "function": {"name": "f"}})]);
        // A template that renders tools gets them; nothing else is added.
        let form = AnswerForm::new(tools(), None, None, true).unwrap();
        assert_eq!(form.tools_for_template, Some(json!(tools().unwrap())));
        assert_eq!(form.instruction, None);
        // Otherwise they are described, key order kept, with the call format.
        let form = AnswerForm::new(tools(), Some(&json!("auto")), None, false).unwrap();
        let note = form.instruction.unwrap();
        assert!(note.starts_with("You can call these tools."), "{note}");
        assert!(
            note.ends_with(r#"Tools: [{"type":"function","function":{"name":"f"}}]"#),
            "{note}"
        );
        // tool_choice "none" leaves them out.
        let form = AnswerForm::new(tools(), Some(&json!("none")), None, false).unwrap();
        assert_eq!((form.tools_for_template, form.instruction), (None, None));
        // Response formats.
        let json_object = format(r#"{"type": "json_object"}"#);
        let form = AnswerForm::new(None, None, Some(&json_object), false).unwrap();
        assert_eq!(
            form.instruction.as_deref(),
            Some("Answer with one JSON object.")
        );
        let schema = format(
            r#"{"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}"#,
        );
        let form = AnswerForm::new(None, None, Some(&schema), false).unwrap();
        assert_eq!(
            form.instruction.as_deref(),
            Some(
                r#"Answer with one JSON object that matches this JSON schema: {"type":"object"}."#
            )
        );
        let text = format(r#"{"type": "text"}"#);
        let form = AnswerForm::new(None, None, Some(&text), false).unwrap();
        assert_eq!(form.instruction, None);
        // A tool that is not an object is the client's error, naming it.
        let bad = AnswerForm::new(Some(vec![json!("f")]), None, None, false).unwrap_err();
        assert_eq!(bad.param.as_deref(), Some("tools[0]"));
    }
}
