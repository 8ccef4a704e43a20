//! Ollama's API: `/api/generate`, `/api/chat` (streamed as JSON lines by
//! default, as Ollama does), `/api/tags`, `/api/ps`, `/api/show`. Errors take
//! Ollama's shape, `{"error": "…"}`.

use super::api::{
    ChatMessage, OllamaJson, SamplingFields, StopField, chat_tokens, collect, loaded, messages,
    submit,
};
use super::{AppState, Loaded, OllamaError, bad_field, error_json};
use crate::engine::{Event, Generation, GenerationOptions, Handle, StopReason};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type AppResult = Result<Response, OllamaError>;

/// Ollama's `options` object: the fields that mean something here. Others
/// Ollama knows (num_gpu, num_thread, mirostat, …) are ignored, as Ollama
/// ignores those that do not apply to a runner.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct OllamaOptions {
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
    /// Generation options for `prompt_len` prompt tokens, in the server's
    /// context of `ctx_size` or a smaller `num_ctx`.
    fn generation(
        self,
        prompt_len: usize,
        ctx_size: usize,
        n_vocab: usize,
    ) -> Result<GenerationOptions, OllamaError> {
        let ctx = match self.num_ctx {
            Some(0) => return Err(bad_field("options.num_ctx", "must be at least 1").into()),
            Some(n) if n > ctx_size => {
                return Err(bad_field(
                    "options.num_ctx",
                    format!(
                        "{n} is more than the {ctx_size} positions this server was started with \
                         (restart it with --ctx-size {n})"
                    ),
                )
                .into());
            }
            Some(n) => n,
            None => ctx_size,
        };
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
        return Ok(Json(
            json!({ "model": model, "created_at": created_at(), "response": "",
                               "done": true, "done_reason": "load" }),
        )
        .into_response());
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
            move |t| json!({ "model": model, "created_at": created_at(), "response": t, "done": false }),
            move |g| {
                merge(
                    json!({ "model": m2, "created_at": created_at(), "response": "" }),
                    final_fields(g),
                )
            },
        ));
    }
    let g = collect(handle).await?;
    Ok(Json(merge(
        json!({ "model": model, "created_at": created_at(), "response": g.text }),
        final_fields(&g),
    ))
    .into_response())
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
    let g = collect(handle).await?;
    Ok(Json(merge(
        json!({ "model": model, "created_at": created_at(),
                "message": { "role": "assistant", "content": g.text } }),
        final_fields(&g),
    ))
    .into_response())
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

/// The model as Ollama lists it.
fn model_entry(l: &Loaded, digest: &str) -> Value {
    let file = l.runner.model().file();
    let config = l.runner.model().config();
    let modified = file
        .path()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map_or_else(created_at, |t| t.to_rfc3339());
    let parameters: u64 = file.tensors().iter().map(|t| t.elements()).sum();
    json!({
        "name": l.model_id,
        "model": l.model_id,
        "modified_at": modified,
        "size": file.file_size(),
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": config.arch,
            "families": [config.arch],
            "parameter_size": parameter_size(parameters),
            "quantization_level": super::lmstudio::quantization(l),
        },
    })
}

/// `GET /api/tags`: the models this server has (the loaded one).
pub(crate) async fn tags(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let digest = digest(&state).await?;
    Ok(Json(json!({ "models": [model_entry(l, &digest)] })).into_response())
}

/// `GET /api/ps`: the models in memory.
pub(crate) async fn ps(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let digest = digest(&state).await?;
    let entry = merge(
        model_entry(l, &digest),
        json!({ "size_vram": 0, "expires_at": "9999-12-31T23:59:59Z", "context_length": l.ctx_size }),
    );
    Ok(Json(json!({ "models": [entry] })).into_response())
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
    let parameters: u64 = l
        .runner
        .model()
        .file()
        .tensors()
        .iter()
        .map(|t| t.elements())
        .sum();
    // /api/show needs no digest: skip the hash here.
    let entry = model_entry(l, "");
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": template,
        "details": entry["details"],
        "modified_at": entry["modified_at"],
        "model_info": {
            "general.architecture": arch,
            "general.parameter_count": parameters,
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

/// Ollama's embedding routes, until the embeddings issue lands.
pub(crate) async fn embeddings_unavailable() -> Response {
    OllamaError(
        error_json(
            StatusCode::NOT_IMPLEMENTED,
            "embeddings are not available in this build yet",
        )
        .code("not_implemented"),
    )
    .into_response()
}
