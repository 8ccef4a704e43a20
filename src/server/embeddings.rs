//! The embedding routes: OpenAI's `/v1/embeddings` (LM Studio's
//! `/api/v0/embeddings` takes and answers the same), Ollama's `/api/embed`
//! and its older `/api/embeddings`. Handlers tokenize and check the inputs
//! (a 400 names the input and both lengths when one is too long); the engine
//! thread computes the vectors, several inputs per batched pass.

use super::api::{JsonBody, OllamaJson, loaded, refused};
use super::ollama::OllamaOptions;
use super::{ApiError, AppState, Loaded, OllamaError, bad_field, error_json};
use crate::engine::{EmbedError, EmbedJob, EmbedOptions, Embedding};
use crate::tokenizer::TokenId;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// `input` as OpenAI takes it: text or token ids, one or a list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(
    untagged,
    expecting = "expected a string, a list of strings, a list of token ids or a list of lists of token ids"
)]
pub(crate) enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<TokenId>),
    TokenLists(Vec<Vec<TokenId>>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingRequest {
    input: EmbeddingInput,
    /// Any name maps to the loaded model.
    model: Option<String>,
    /// `float` (default) or `base64`: the little-endian f32 bytes.
    encoding_format: Option<String>,
    /// Accepted only as the model's own width: vectors are not shortened.
    #[schema(minimum = 1)]
    dimensions: Option<u64>,
    user: Option<String>,
}

/// An embedding as OpenAI answers it: numbers, or base64 of their bytes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: String,
    usage: EmbeddingUsage,
}

/// Embedding options for this server: its context, unit vectors, passes of
/// `--ubatch` tokens.
fn options(l: &Loaded, ctx_size: usize, truncate: bool, normalize: bool) -> EmbedOptions {
    EmbedOptions {
        ctx_size,
        truncate,
        normalize,
        batch_tokens: l.ubatch,
    }
}

/// `dimensions` is accepted only as the model's own width: shortening a
/// vector is right only for models trained for it (Matryoshka), which the
/// file does not say.
fn check_dimensions(l: &Loaded, dimensions: Option<u64>) -> Result<(), ApiError> {
    let n_embd = l.runner.model().config().n_embd;
    match dimensions {
        Some(d) if d != n_embd as u64 => Err(bad_field(
            "dimensions",
            format!(
                "this model's embeddings have {n_embd} dimensions; it cannot give {d} \
                 (leave dimensions out)"
            ),
        )
        .code("unsupported_value")),
        _ => Ok(()),
    }
}

/// The 400 for inputs the model cannot take, naming the input at fault
/// (`input[2]`, or `field` itself for a single one).
fn refused_input(e: EmbedError, field: &str, single: bool) -> ApiError {
    let at = |index: usize| {
        if single {
            field.to_string()
        } else {
            format!("{field}[{index}]")
        }
    };
    match e {
        EmbedError::InputTooLong {
            index,
            tokens,
            ctx_size,
        } => {
            let field = at(index);
            error_json(
                StatusCode::BAD_REQUEST,
                format!(
                    "{field} is {tokens} tokens long, more than the context of {ctx_size} tokens"
                ),
            )
            .param(field)
            .code("context_length_exceeded")
        }
        EmbedError::EmptyInput { index } => bad_field(&at(index), "has no tokens to embed"),
        EmbedError::TokenOutOfRange {
            index,
            token,
            n_vocab,
        } => bad_field(
            &at(index),
            format!("token id {token} is outside the vocabulary of {n_vocab}"),
        ),
        EmbedError::Model(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Tokenizes and checks `texts` as inputs of the request field `field`.
fn tokenize(
    l: &Loaded,
    texts: &[String],
    options: &EmbedOptions,
    field: &str,
    single: bool,
) -> Result<Vec<Vec<TokenId>>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            l.runner
                .tokenize_for_embedding(i, text, options)
                .map_err(|e| refused_input(e, field, single))
        })
        .collect()
}

/// Runs checked inputs on the engine thread.
async fn embed(
    l: &Loaded,
    inputs: Vec<Vec<TokenId>>,
    options: EmbedOptions,
) -> Result<Vec<Embedding>, ApiError> {
    let (reply, answer) = oneshot::channel();
    l.engine
        .submit_embed(EmbedJob {
            inputs,
            options,
            reply,
        })
        .map_err(refused)?;
    match answer.await {
        Ok(Ok(embeddings)) => Ok(embeddings),
        Ok(Err(e)) => Err(error_json(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(_) => Err(error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the inference engine stopped before answering",
        )),
    }
}

/// `POST /v1/embeddings` and LM Studio's `POST /api/v0/embeddings`.
pub(crate) async fn openai(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let l = loaded(&state)?;
    let _requested = (req.model, req.user);
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_field(
                "encoding_format",
                format!("{other:?} is not one of \"float\", \"base64\""),
            ));
        }
    };
    check_dimensions(l, req.dimensions)?;
    let options = options(l, l.ctx_size, false, true);
    let (inputs, single) = match req.input {
        EmbeddingInput::Text(text) => (tokenize(l, &[text], &options, "input", true)?, true),
        EmbeddingInput::Texts(texts) => (tokenize(l, &texts, &options, "input", false)?, false),
        EmbeddingInput::Tokens(tokens) => (vec![tokens], true),
        EmbeddingInput::TokenLists(lists) => (lists, false),
    };
    if inputs.is_empty() {
        return Err(bad_field("input", "the list is empty"));
    }
    l.runner
        .check_embedding_inputs(&inputs, &options)
        .map_err(|e| refused_input(e, "input", single))?;
    let embeddings = embed(l, inputs, options).await?;
    let prompt_tokens = embeddings.iter().map(|e| e.n_tokens).sum();
    let data = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Float(e.vector)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: l.model_id.clone(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
    .into_response())
}

/// Ollama's `input`: one text or a list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
pub(crate) enum OllamaInput {
    Text(String),
    Texts(Vec<String>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct EmbedRequest {
    /// Any name maps to the loaded model.
    model: Option<String>,
    input: Option<OllamaInput>,
    /// Cut inputs longer than the context (the default, as in Ollama);
    /// `false` makes them an error.
    truncate: Option<bool>,
    options: Option<OllamaOptions>,
    #[schema(value_type = Object)]
    keep_alive: Option<serde_json::Value>,
    /// Accepted only as the model's own width: vectors are not shortened.
    #[schema(minimum = 1)]
    dimensions: Option<u64>,
}

/// Ollama's durations are nanoseconds.
fn nanos(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

/// `POST /api/embed` (Ollama): unit vectors under `embeddings`.
pub(crate) async fn ollama_embed(
    State(state): State<Arc<AppState>>,
    OllamaJson(req): OllamaJson<EmbedRequest>,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let l = loaded(&state)?;
    let _requested = (req.model, req.keep_alive);
    check_dimensions(l, req.dimensions)?;
    let ctx_size = req.options.unwrap_or_default().context(l.ctx_size)?;
    let options = options(l, ctx_size, req.truncate.unwrap_or(true), true);
    // Ollama answers an empty input (or an empty string) with no vectors.
    let (texts, single) = match req.input {
        None => (Vec::new(), true),
        Some(OllamaInput::Text(t)) if t.is_empty() => (Vec::new(), true),
        Some(OllamaInput::Text(t)) => (vec![t], true),
        Some(OllamaInput::Texts(ts)) => (ts, false),
    };
    let inputs = tokenize(l, &texts, &options, "input", single)?;
    let embeddings = if inputs.is_empty() {
        Vec::new()
    } else {
        embed(l, inputs, options).await?
    };
    let prompt_eval_count: usize = embeddings.iter().map(|e| e.n_tokens).sum();
    let vectors: Vec<Vec<f32>> = embeddings.into_iter().map(|e| e.vector).collect();
    Ok(Json(EmbedResponse {
        model: l.model_id.clone(),
        embeddings: vectors,
        total_duration: nanos(started),
        load_duration: 0,
        prompt_eval_count,
    })
    .into_response())
}

/// `/api/embed`'s answer (durations in ns).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmbedResponse {
    model: String,
    /// One unit vector per input.
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
}

/// `/api/embeddings`' answer: one raw vector (empty for an empty prompt).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingsResponse {
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingsRequest {
    /// Any name maps to the loaded model.
    model: Option<String>,
    prompt: Option<String>,
    options: Option<OllamaOptions>,
    #[schema(value_type = Object)]
    keep_alive: Option<serde_json::Value>,
}

/// `POST /api/embeddings` (Ollama's older route): one vector under
/// `embedding`, not normalized (as Ollama answers it); an input longer than
/// the context is an error.
pub(crate) async fn ollama_embeddings(
    State(state): State<Arc<AppState>>,
    OllamaJson(req): OllamaJson<EmbeddingsRequest>,
) -> Result<Response, OllamaError> {
    let l = loaded(&state)?;
    let _requested = (req.model, req.keep_alive);
    let ctx_size = req.options.unwrap_or_default().context(l.ctx_size)?;
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        // Ollama: an empty prompt only loads the model.
        return Ok(Json(EmbeddingsResponse { embedding: vec![] }).into_response());
    }
    let options = options(l, ctx_size, false, false);
    let inputs = tokenize(l, &[prompt], &options, "prompt", true)?;
    let mut embeddings = embed(l, inputs, options).await?;
    let vector = embeddings.pop().map(|e| e.vector).unwrap_or_default();
    Ok(Json(EmbeddingsResponse { embedding: vector }).into_response())
}
