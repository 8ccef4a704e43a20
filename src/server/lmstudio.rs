//! LM Studio's REST API (`/api/v0/…`): OpenAI's bodies plus `stats`,
//! `model_info` and `runtime`, and a richer model list.

use super::api::{ChatRequest, CompletionRequest, Flavor, JsonBody, chat, complete, loaded};
use super::{ApiError, AppState, Loaded};
use crate::engine::{Generation, StopReason};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

type AppResult = Result<Response, ApiError>;

/// The quantization as llama.cpp names the file type (`Q4_K_M`).
pub(super) fn quantization(l: &Loaded) -> String {
    crate::inspect::file_type_label(l.runner.model().file()).unwrap_or_else(|| "unknown".into())
}

/// The model as LM Studio's `/api/v0/models` lists it.
fn model_entry(l: &Loaded) -> Value {
    json!({
        "id": l.model_id,
        "object": "model",
        "type": if l.runner.model().config().output_head { "llm" } else { "embeddings" },
        "publisher": "local",
        "arch": l.runner.model().config().arch,
        "compatibility_type": "gguf",
        "quantization": quantization(l),
        "state": "loaded",
        "max_context_length": l.runner.model().config().context_length,
        "loaded_context_length": l.ctx_size,
    })
}

/// `GET /api/v0/models`.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    Ok(axum::Json(json!({ "object": "list", "data": [model_entry(l)] })).into_response())
}

/// `GET /api/v0/models/{id}`: any id answers with the loaded model.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(_id): Path<String>,
) -> AppResult {
    let l = loaded(&state)?;
    Ok(axum::Json(model_entry(l)).into_response())
}

/// `POST /api/v0/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> AppResult {
    chat(&state, req, Flavor::LmStudio).await
}

/// `POST /api/v0/completions`.
pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> AppResult {
    complete(&state, req, Flavor::LmStudio).await
}

/// What LM Studio adds to a finished answer; the model parts are taken
/// before generation so streams can carry them without borrowing the state.
pub(crate) struct Extras {
    model_info: Value,
}

impl Extras {
    pub(super) fn new(l: &Loaded) -> Self {
        Self {
            model_info: json!({
                "arch": l.runner.model().config().arch,
                "quant": quantization(l),
                "format": "gguf",
                "context_length": l.ctx_size,
            }),
        }
    }

    /// Adds `stats` (from `g`), `model_info` and `runtime` to `body`.
    pub(super) fn apply(&self, body: &mut Value, g: &Generation) {
        let stop_reason = match g.stop_reason {
            StopReason::EndOfGeneration => "eosFound",
            StopReason::StopString => "stopStringFound",
            StopReason::MaxTokens => "maxPredictedTokensReached",
            StopReason::Cancelled => "userStopped",
        };
        body["stats"] = json!({
            "tokens_per_second": g.decode_tokens_per_s(),
            "time_to_first_token": g.time_to_first_token_ms / 1e3,
            "generation_time": g.decode_ms / 1e3,
            "stop_reason": stop_reason,
        });
        body["model_info"] = self.model_info.clone();
        body["runtime"] = json!({
            "name": "rusty-llm",
            "version": env!("CARGO_PKG_VERSION"),
            "supported_formats": ["gguf"],
        });
    }
}
