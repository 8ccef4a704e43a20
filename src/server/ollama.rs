//! Ollama's API: `/api/generate`, `/api/chat` (streamed as JSON lines by
//! default, as Ollama does), `/api/tags`, `/api/ps`, `/api/show`. Errors take
//! Ollama's shape, `{"error": "…"}`.

use super::api::{
    ChatMessage, OllamaJson, SamplingFields, StopField, chat_tokens, collect, loaded, messages,
    submit, to_value,
};
use super::{AppState, Loaded, OllamaError, bad_field, error_json};
use crate::engine::{Event, Generation, GenerationOptions, Handle, StopReason};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

type AppResult = Result<Response, OllamaError>;

/// Ollama's `options` object: the fields that mean something here. Others
/// Ollama knows (num_gpu, num_thread, mirostat, …) are ignored, as Ollama
/// ignores those that do not apply to a runner.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct OllamaOptions {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    /// Negative: until the context is full.
    num_predict: Option<i64>,
    repeat_penalty: Option<f32>,
    /// -1: the whole context; 0: off.
    #[schema(minimum = -1)]
    repeat_last_n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    /// Negative: a random seed.
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    /// Positions for this request; at most the server's context.
    #[schema(minimum = 1)]
    num_ctx: Option<usize>,
}

impl OllamaOptions {
    /// The request's context: `num_ctx` when given, at most the server's.
    pub(super) fn context(&self, ctx_size: usize) -> Result<usize, OllamaError> {
        match self.num_ctx {
            Some(0) => Err(bad_field("options.num_ctx", "must be at least 1").into()),
            Some(n) if n > ctx_size => Err(bad_field(
                "options.num_ctx",
                format!(
                    "{n} is more than the {ctx_size} positions this server was started with \
                     (restart it with --ctx-size {n})"
                ),
            )
            .into()),
            Some(n) => Ok(n),
            None => Ok(ctx_size),
        }
    }

    /// Generation options for `prompt_len` prompt tokens, in the server's
    /// context of `ctx_size` or a smaller `num_ctx`.
    fn generation(
        self,
        prompt_len: usize,
        ctx_size: usize,
        n_vocab: usize,
    ) -> Result<GenerationOptions, OllamaError> {
        let ctx = self.context(ctx_size)?;
        let repeat_last_n = match self.repeat_last_n {
            Some(-1) => Some(ctx),
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                bad_field("options.repeat_last_n", format!("{n}: expected -1 or >= 0"))
            })?),
            None => None,
        };
        let sampling = SamplingFields {
            n_predict: self.num_predict,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            seed: self.seed.and_then(|s| u64::try_from(s).ok()),
            stop: self.stop.map(StopField::Many),
            ..SamplingFields::default()
        };
        Ok(sampling.options(prompt_len, ctx, n_vocab)?)
    }
}

fn default_stream() -> bool {
    true
}

/// RFC 3339 UTC time, as Ollama writes `created_at`.
fn created_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The fields only Ollama's last object of an answer has (durations in ns);
/// all absent on the objects before it.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct Final {
    /// `stop`, `length`, or `load` (an empty prompt only loads the model).
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_duration: Option<u64>,
}

impl Final {
    fn of(g: &Generation) -> Self {
        let ns = |ms: f64| Some((ms * 1e6) as u64);
        Self {
            done_reason: Some(if g.stop_reason == StopReason::MaxTokens {
                "length"
            } else {
                "stop"
            }),
            total_duration: ns(g.total_ms),
            load_duration: Some(0),
            prompt_eval_count: Some(g.prompt_tokens),
            prompt_eval_duration: ns(g.prefill_ms),
            eval_count: Some(g.generated_tokens),
            eval_duration: ns(g.decode_ms),
        }
    }
}

/// An `/api/generate` answer, or one line of its stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OllamaGenerateResponse)]
pub(crate) struct GenerateResponse {
    model: String,
    created_at: String,
    response: String,
    done: bool,
    #[serde(flatten)]
    end: Final,
}

/// An `/api/chat` answer, or one line of its stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OllamaChatResponse)]
pub(crate) struct ChatResponse {
    model: String,
    created_at: String,
    message: OllamaMessage,
    done: bool,
    #[serde(flatten)]
    end: Final,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OllamaMessage {
    /// Always `assistant`.
    role: &'static str,
    content: String,
}

impl GenerateResponse {
    /// An answer or stream line; with `end` it is the last (`done: true`).
    fn json(model: &str, response: impl Into<String>, end: Option<Final>) -> Value {
        to_value(Self {
            model: model.to_string(),
            created_at: created_at(),
            response: response.into(),
            done: end.is_some(),
            end: end.unwrap_or_default(),
        })
    }
}

impl ChatResponse {
    /// An answer or stream line; with `end` it is the last (`done: true`).
    fn json(model: &str, content: impl Into<String>, end: Option<Final>) -> Value {
        to_value(Self {
            model: model.to_string(),
            created_at: created_at(),
            message: OllamaMessage {
                role: "assistant",
                content: content.into(),
            },
            done: end.is_some(),
            end: end.unwrap_or_default(),
        })
    }
}

/// One JSON object per line: `piece(text)` objects, then `done(generation)`.
fn ndjson(
    handle: Handle,
    piece: impl Fn(&str) -> Value + Send + 'static,
    done: impl Fn(&Generation) -> Value + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let lines = super::api::events(handle).map(move |event| {
        let value = match event {
            Event::Piece { text, .. } if text.is_empty() => return None,
            Event::Piece { text, .. } => piece(&text),
            Event::Done(g) => done(&g),
            Event::Error(e) => json!({ "error": e.to_string() }),
        };
        Some(Ok::<_, std::convert::Infallible>(format!("{value}\n")))
    });
    let lines = lines.filter_map(std::future::ready);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaGenerateRequest)]
pub(crate) struct GenerateRequest {
    #[serde(default)]
    model: Option<String>,
    /// Empty or absent: only load the model (Ollama answers `done_reason: "load"`).
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    /// Plain completion of `prompt`, without the chat template.
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
    OllamaJson(req): OllamaJson<GenerateRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    if req.prompt.is_empty() {
        let load = Final {
            done_reason: Some("load"),
            ..Final::default()
        };
        return Ok(Json(GenerateResponse::json(&model, "", Some(load))).into_response());
    }
    // A model without a template completes the prompt as is, dropping
    // `system`, as Ollama's default template for such models does.
    let tokens = if req.raw || !l.runner.has_model_template() {
        if req.system.is_some() && req.raw {
            return Err(bad_field("system", "cannot be used with raw: true").into());
        }
        l.runner.tokenize_prompt(&req.prompt)
    } else {
        let mut m = Vec::new();
        if let Some(s) = &req.system {
            m.push(crate::chat::Message::new("system", s));
        }
        m.push(crate::chat::Message::new("user", &req.prompt));
        chat_tokens(l, &m)?
    };
    let n_vocab = l.runner.tokenizer().vocab().len();
    let options = req
        .options
        .unwrap_or_default()
        .generation(tokens.len(), l.ctx_size, n_vocab)?;
    let handle = submit(l, tokens, options, None)?;
    if req.stream {
        let m2 = model.clone();
        return Ok(ndjson(
            handle,
            move |t| GenerateResponse::json(&model, t, None),
            move |g| GenerateResponse::json(&m2, "", Some(Final::of(g))),
        ));
    }
    let g = collect(handle).await?;
    let end = Final::of(&g);
    Ok(Json(GenerateResponse::json(&model, g.text, Some(end))).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaChatRequest)]
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
    OllamaJson(req): OllamaJson<ChatRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    let tokens = chat_tokens(l, &messages(req.messages)?)?;
    let n_vocab = l.runner.tokenizer().vocab().len();
    let options = req
        .options
        .unwrap_or_default()
        .generation(tokens.len(), l.ctx_size, n_vocab)?;
    let handle = submit(l, tokens, options, None)?;
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let model = l.model_id.clone();
    if req.stream {
        let m2 = model.clone();
        return Ok(ndjson(
            handle,
            move |t| ChatResponse::json(&model, t, None),
            move |g| ChatResponse::json(&m2, "", Some(Final::of(g))),
        ));
    }
    let g = collect(handle).await?;
    let end = Final::of(&g);
    Ok(Json(ChatResponse::json(&model, g.text, Some(end))).into_response())
}

/// Parameters in Ollama's style: `268.10M`, `7.2B`.
fn parameter_size(count: u64) -> String {
    let n = count as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else {
        format!("{:.2}M", n / 1e6)
    }
}

/// The hex SHA-256 of the model file, computed on first use (it reads the
/// whole file once; Ollama's clients show it as the model's digest).
async fn digest(state: &AppState) -> Result<String, OllamaError> {
    let path = state.model_path.clone();
    state
        .digest
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        })
        .await
        .cloned()
        .map_err(|e| {
            error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot hash the model file: {e}"),
            )
            .into()
        })
}

fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A model as Ollama lists it (`/api/tags`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OllamaModel {
    name: String,
    model: String,
    /// RFC 3339 time of the model file's last change.
    modified_at: String,
    /// File size in bytes.
    size: u64,
    /// SHA-256 of the file, hex.
    digest: String,
    details: OllamaDetails,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OllamaDetails {
    parent_model: &'static str,
    /// Always `gguf`.
    format: &'static str,
    family: String,
    families: Vec<String>,
    /// `268.10M`, `7.2B`.
    parameter_size: String,
    /// llama.cpp's file-type name, e.g. `Q4_K_M`.
    quantization_level: String,
}

/// `GET /api/tags`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TagsResponse {
    models: Vec<OllamaModel>,
}

/// A model in memory (`/api/ps`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunningModel {
    #[serde(flatten)]
    model: OllamaModel,
    /// Always 0: weights are in RAM.
    size_vram: u64,
    /// Never: the model stays loaded while the server runs.
    expires_at: &'static str,
    /// Positions per request this server was started with.
    context_length: usize,
}

/// `GET /api/ps`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PsResponse {
    models: Vec<RunningModel>,
}

/// `POST /api/show`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ShowResponse {
    /// Empty: models here come from GGUF files, not Modelfiles.
    modelfile: &'static str,
    parameters: &'static str,
    /// The model's Jinja chat template (empty without one).
    template: String,
    details: OllamaDetails,
    modified_at: String,
    /// GGUF metadata keys, as Ollama shows them.
    #[schema(value_type = Object)]
    model_info: serde_json::Map<String, Value>,
    capabilities: Vec<&'static str>,
}

/// Parameters in the file (every tensor's elements).
fn parameter_count(l: &Loaded) -> u64 {
    let file = l.runner.model().file();
    file.tensors().iter().map(|t| t.elements()).sum()
}

fn model_details(l: &Loaded) -> OllamaDetails {
    let arch = l.runner.model().config().arch.to_string();
    OllamaDetails {
        parent_model: "",
        format: "gguf",
        family: arch.clone(),
        families: vec![arch],
        parameter_size: parameter_size(parameter_count(l)),
        quantization_level: super::lmstudio::quantization(l),
    }
}

/// RFC 3339 time of the model file's last change (now, if unknown).
fn modified_at(l: &Loaded) -> String {
    l.runner
        .model()
        .file()
        .path()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map_or_else(created_at, |t| t.to_rfc3339())
}

/// The model as Ollama lists it.
fn model_entry(l: &Loaded, digest: String) -> OllamaModel {
    OllamaModel {
        name: l.model_id.clone(),
        model: l.model_id.clone(),
        modified_at: modified_at(l),
        size: l.runner.model().file().file_size(),
        digest,
        details: model_details(l),
    }
}

/// `GET /api/tags`: the models this server has (the loaded one).
pub(crate) async fn tags(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let models = vec![model_entry(l, digest(&state).await?)];
    Ok(Json(TagsResponse { models }).into_response())
}

/// `GET /api/ps`: the models in memory.
pub(crate) async fn ps(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let running = RunningModel {
        model: model_entry(l, digest(&state).await?),
        size_vram: 0,
        expires_at: "9999-12-31T23:59:59Z",
        context_length: l.ctx_size,
    };
    Ok(Json(PsResponse {
        models: vec![running],
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ShowRequest {
    /// Any name maps to the loaded model.
    #[serde(default, alias = "name")]
    model: Option<String>,
}

/// `POST /api/show`: details of a model.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    OllamaJson(req): OllamaJson<ShowRequest>,
) -> AppResult {
    let l = loaded(&state)?;
    let _requested = req.model;
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
    let model_info = json!({
        "general.architecture": arch,
        "general.parameter_count": parameter_count(l),
        format!("{arch}.block_count"): c.n_layers,
        format!("{arch}.context_length"): c.context_length,
        format!("{arch}.embedding_length"): c.n_embd,
        format!("{arch}.attention.head_count"): c.n_head,
        format!("{arch}.attention.head_count_kv"): c.n_head_kv,
    });
    Ok(Json(ShowResponse {
        modelfile: "",
        parameters: "",
        template,
        details: model_details(l),
        modified_at: modified_at(l),
        model_info: model_info.as_object().cloned().unwrap_or_default(),
        // Ollama's convention: chat models complete, embedding models embed
        // (both embed here; see /api/embed).
        capabilities: vec![if c.output_head {
            "completion"
        } else {
            "embedding"
        }],
    })
    .into_response())
}
