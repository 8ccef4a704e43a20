//! LM Studio's REST API (`/api/v0/…`): OpenAI's bodies plus `stats`,
//! `model_info` and `runtime`, and a richer model list.

use super::api::{
    ChatRequest, CompletionRequest, Flavor, JsonBody, chat, complete, loaded, to_value,
};
use super::{ApiError, AppState, Loaded};
use crate::engine::{Generation, StopReason};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

type AppResult = Result<Response, ApiError>;

/// The quantization as llama.cpp names the file type (`Q4_K_M`).
pub(super) fn quantization(l: &Loaded) -> String {
    crate::inspect::file_type_label(l.runner.model().file()).unwrap_or_else(|| "unknown".into())
}

/// A model as LM Studio's `/api/v0/models` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LmStudioModel {
    id: String,
    object: &'static str,
    /// `llm` (or `embeddings` for an embedding model).
    #[serde(rename = "type")]
    kind: &'static str,
    publisher: &'static str,
    arch: String,
    compatibility_type: &'static str,
    /// llama.cpp's file-type name, e.g. `Q4_K_M`.
    quantization: String,
    /// Always `loaded`: the server has its one model in memory.
    state: &'static str,
    /// The context the model was trained for.
    max_context_length: usize,
    /// The context this server gives each request.
    loaded_context_length: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LmStudioModelList {
    object: &'static str,
    data: Vec<LmStudioModel>,
}

fn model_entry(l: &Loaded) -> LmStudioModel {
    let config = l.runner.model().config();
    LmStudioModel {
        id: l.model_id.clone(),
        object: "model",
        kind: if config.output_head {
            "llm"
        } else {
            "embeddings"
        },
        publisher: "local",
        arch: config.arch.to_string(),
        compatibility_type: "gguf",
        quantization: quantization(l),
        state: "loaded",
        max_context_length: config.context_length,
        loaded_context_length: l.ctx_size,
    }
}

/// `GET /api/v0/models`.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> AppResult {
    let l = loaded(&state)?;
    let list = LmStudioModelList {
        object: "list",
        data: vec![model_entry(l)],
    };
    Ok(axum::Json(list).into_response())
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

/// What LM Studio adds to a finished answer (the non-streamed body, or the
/// last chunk of a stream).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct LmStudioExtras {
    stats: Stats,
    model_info: ModelInfo,
    runtime: Runtime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Stats {
    tokens_per_second: f64,
    /// Seconds.
    time_to_first_token: f64,
    /// Seconds of decoding.
    generation_time: f64,
    /// `eosFound`, `stopStringFound`, `maxPredictedTokensReached` or `userStopped`.
    stop_reason: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelInfo {
    arch: String,
    quant: String,
    format: &'static str,
    context_length: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Runtime {
    name: &'static str,
    version: &'static str,
    supported_formats: Vec<&'static str>,
}

/// The model parts of [`LmStudioExtras`], taken before generation so
/// streams can carry them without borrowing the state.
pub(crate) struct Extras {
    model_info: ModelInfo,
}

impl Extras {
    pub(super) fn new(l: &Loaded) -> Self {
        Self {
            model_info: ModelInfo {
                arch: l.runner.model().config().arch.to_string(),
                quant: quantization(l),
                format: "gguf",
                context_length: l.ctx_size,
            },
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
        let extras = LmStudioExtras {
            stats: Stats {
                tokens_per_second: g.decode_tokens_per_s(),
                time_to_first_token: g.time_to_first_token_ms / 1e3,
                generation_time: g.decode_ms / 1e3,
                stop_reason,
            },
            model_info: self.model_info.clone(),
            runtime: Runtime {
                name: "rusty-llm",
                version: env!("CARGO_PKG_VERSION"),
                supported_formats: vec!["gguf"],
            },
        };
        if let (Some(body), Value::Object(extras)) = (body.as_object_mut(), to_value(extras)) {
            body.extend(extras);
        }
    }
}
