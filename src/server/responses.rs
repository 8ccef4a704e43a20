//! OpenAI's Responses API, `POST /v1/responses`: text in (a string or
//! message items, plus `instructions`), one assistant message out. Streaming
//! sends the typed event sequence the SDKs' stream helpers fold into a
//! response: created, in_progress, output_item.added, content_part.added,
//! output_text.delta…, output_text.done, content_part.done,
//! output_item.done, completed — each with a `sequence_number`.

use super::api::{
    ChatMessage, JsonBody, SamplingFields, chat_tokens, collect, loaded, messages, next_id, submit,
    to_value, unix_now,
};
use super::{ApiError, AppState, bad_field};
use crate::chat::Message;
use crate::engine::{Event, Generation, StopReason};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

/// The Responses API's `input`: a string or a list of message items.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum ResponsesInput {
    Text(String),
    Items(Vec<ChatMessage>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    input: ResponsesInput,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: SamplingFields,
}

/// A response object (`object: "response"`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResponseObject {
    id: String,
    object: &'static str,
    created_at: u64,
    /// `in_progress`, `completed`, or `incomplete` (cut by `max_output_tokens`).
    status: &'static str,
    model: String,
    output: Vec<OutputMessage>,
    /// Null until the response is finished.
    #[schema(required = true)]
    usage: Option<ResponseUsage>,
    /// Always null: failures answer with an error status instead.
    #[schema(required = true, value_type = Option<Object>)]
    error: Option<Value>,
    #[schema(required = true)]
    incomplete_details: Option<IncompleteDetails>,
    #[schema(required = true)]
    instructions: Option<String>,
    #[schema(required = true)]
    max_output_tokens: Option<usize>,
    #[schema(required = true)]
    temperature: Option<f32>,
    #[schema(required = true)]
    top_p: Option<f32>,
    parallel_tool_calls: bool,
    tool_choice: &'static str,
    #[schema(value_type = Vec<Object>)]
    tools: Vec<Value>,
    text: TextConfig,
    #[schema(value_type = Object)]
    metadata: serde_json::Map<String, Value>,
    /// Non-streamed answers: the output's text in one string.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_text: Option<String>,
}

/// The assistant message item of a response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct OutputMessage {
    id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    status: &'static str,
    content: Vec<OutputText>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    #[schema(value_type = Vec<Object>)]
    annotations: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    logprobs: Vec<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResponseUsage {
    input_tokens: usize,
    input_tokens_details: InputTokensDetails,
    output_tokens: usize,
    output_tokens_details: OutputTokensDetails,
    total_tokens: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InputTokensDetails {
    /// Prompt tokens whose KV entries were reused from an earlier request.
    cached_tokens: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OutputTokensDetails {
    reasoning_tokens: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IncompleteDetails {
    /// `max_output_tokens`.
    reason: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TextConfig {
    /// `{"type": "text"}`.
    #[schema(value_type = Object)]
    format: Value,
}

/// One server-sent event of a streamed response; its `type` is also the
/// SSE event name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub(crate) enum ResponseEvent {
    #[serde(rename = "response.created")]
    Created { response: ResponseObject },
    #[serde(rename = "response.in_progress")]
    InProgress { response: ResponseObject },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: u32,
        item: OutputMessage,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        #[serde(flatten)]
        at: PartPosition,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        #[serde(flatten)]
        at: PartPosition,
        delta: String,
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        #[serde(flatten)]
        at: PartPosition,
        text: String,
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        #[serde(flatten)]
        at: PartPosition,
        part: OutputText,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: u32,
        item: OutputMessage,
    },
    #[serde(rename = "response.completed")]
    Completed { response: ResponseObject },
    #[serde(rename = "error")]
    Error {
        code: &'static str,
        message: String,
        #[schema(required = true)]
        param: Option<String>,
    },
}

impl ResponseEvent {
    /// The event's `type`, which is also its SSE event name.
    fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "response.created",
            Self::InProgress { .. } => "response.in_progress",
            Self::OutputItemAdded { .. } => "response.output_item.added",
            Self::ContentPartAdded { .. } => "response.content_part.added",
            Self::OutputTextDelta { .. } => "response.output_text.delta",
            Self::OutputTextDone { .. } => "response.output_text.done",
            Self::ContentPartDone { .. } => "response.content_part.done",
            Self::OutputItemDone { .. } => "response.output_item.done",
            Self::Completed { .. } => "response.completed",
            Self::Error { .. } => "error",
        }
    }
}

/// Where a content part sits: this server answers one message with one
/// text part, so both indexes are 0.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct PartPosition {
    item_id: String,
    output_index: u32,
    content_index: u32,
}

/// An event with its place in the stream, as it goes over the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SequencedEvent {
    #[serde(flatten)]
    event: ResponseEvent,
    sequence_number: u64,
}

/// The fixed parts of the response object, shared by every event.
struct ResponseShape {
    id: String,
    item_id: String,
    model: String,
    created_at: u64,
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
}

impl ResponseShape {
    /// The message item with `text` so far.
    fn item(&self, text: &str, done: bool) -> OutputMessage {
        OutputMessage {
            id: self.item_id.clone(),
            kind: "message",
            role: "assistant",
            status: if done { "completed" } else { "in_progress" },
            content: if done { vec![self.part(text)] } else { vec![] },
        }
    }

    fn part(&self, text: &str) -> OutputText {
        OutputText {
            kind: "output_text",
            text: text.to_string(),
            annotations: vec![],
            logprobs: vec![],
        }
    }

    fn at(&self) -> PartPosition {
        PartPosition {
            item_id: self.item_id.clone(),
            output_index: 0,
            content_index: 0,
        }
    }

    /// The response object: in progress (no output yet) or finished by `g`.
    fn response(&self, g: Option<&Generation>) -> ResponseObject {
        let mut r = ResponseObject {
            id: self.id.clone(),
            object: "response",
            created_at: self.created_at,
            status: "in_progress",
            model: self.model.clone(),
            output: vec![],
            usage: None,
            error: None,
            incomplete_details: None,
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            parallel_tool_calls: false,
            tool_choice: "auto",
            tools: vec![],
            text: TextConfig {
                format: json!({ "type": "text" }),
            },
            metadata: serde_json::Map::new(),
            output_text: None,
        };
        if let Some(g) = g {
            // OpenAI marks a response cut by max_output_tokens "incomplete".
            let cut = g.stop_reason == StopReason::MaxTokens;
            r.status = if cut { "incomplete" } else { "completed" };
            r.incomplete_details = cut.then_some(IncompleteDetails {
                reason: "max_output_tokens",
            });
            r.output = vec![self.item(&g.text, true)];
            r.usage = Some(ResponseUsage {
                input_tokens: g.prompt_tokens,
                input_tokens_details: InputTokensDetails {
                    cached_tokens: g.cached_tokens,
                },
                output_tokens: g.generated_tokens,
                output_tokens_details: OutputTokensDetails {
                    reasoning_tokens: 0,
                },
                total_tokens: g.prompt_tokens + g.generated_tokens,
            });
        }
        r
    }
}

/// `POST /v1/responses`.
pub(crate) async fn responses(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let l = loaded(&state)?;
    let mut list = Vec::new();
    if let Some(i) = &req.instructions {
        list.push(Message::new("system", i));
    }
    match req.input {
        ResponsesInput::Text(t) if t.is_empty() => {
            return Err(bad_field("input", "must not be empty"));
        }
        ResponsesInput::Text(t) => list.push(Message::new("user", t)),
        ResponsesInput::Items(items) => {
            if let Some((i, kind)) = items
                .iter()
                .enumerate()
                .find_map(|(i, m)| m.kind().filter(|&k| k != "message").map(|k| (i, k)))
            {
                return Err(bad_field(
                    &format!("input[{i}].type"),
                    format!("{kind:?} items are not supported; only messages"),
                ));
            }
            list.extend(messages(items).map_err(|_| bad_field("input", "must not be empty"))?);
        }
    }
    let tokens = chat_tokens(l, &list)?;
    let n_vocab = l.runner.tokenizer().vocab().len();
    let options = req.sampling.options(tokens.len(), l.ctx_size, n_vocab)?;
    let handle = submit(l, tokens, options, req.sampling.cache_prompt)?;
    // Any requested id maps to the loaded model; answers name the one that served.
    let _requested = req.model;
    let shape = ResponseShape {
        id: next_id("resp"),
        item_id: next_id("msg"),
        model: l.model_id.clone(),
        created_at: unix_now(),
        instructions: req.instructions,
        max_output_tokens: req.sampling.max_output_tokens,
        temperature: req.sampling.temperature,
        top_p: req.sampling.top_p,
    };
    if !req.stream {
        let g = collect(handle).await?;
        let mut r = shape.response(Some(&g));
        r.output_text = Some(g.text);
        return Ok(axum::Json(r).into_response());
    }

    use futures_util::StreamExt;
    let mut sequence_number = 0u64;
    // Each event names its type twice (SSE `event:` and the JSON `type`), as OpenAI sends it.
    let mut send = move |event: ResponseEvent| {
        let name = event.name();
        let data = to_value(SequencedEvent {
            event,
            sequence_number,
        });
        sequence_number += 1;
        Ok::<_, Infallible>(SseEvent::default().event(name).data(data.to_string()))
    };
    let opening = vec![
        send(ResponseEvent::Created {
            response: shape.response(None),
        }),
        send(ResponseEvent::InProgress {
            response: shape.response(None),
        }),
        send(ResponseEvent::OutputItemAdded {
            output_index: 0,
            item: shape.item("", false),
        }),
        send(ResponseEvent::ContentPartAdded {
            at: shape.at(),
            part: shape.part(""),
        }),
    ];
    let body = super::api::events(handle).flat_map(move |e| {
        let events = match e {
            Event::Piece { text, .. } if text.is_empty() => vec![],
            Event::Piece { text, .. } => vec![ResponseEvent::OutputTextDelta {
                at: shape.at(),
                delta: text,
                logprobs: vec![],
            }],
            Event::Done(g) => vec![
                ResponseEvent::OutputTextDone {
                    at: shape.at(),
                    text: g.text.clone(),
                    logprobs: vec![],
                },
                ResponseEvent::ContentPartDone {
                    at: shape.at(),
                    part: shape.part(&g.text),
                },
                ResponseEvent::OutputItemDone {
                    output_index: 0,
                    item: shape.item(&g.text, true),
                },
                ResponseEvent::Completed {
                    response: shape.response(Some(&g)),
                },
            ],
            Event::Error(e) => vec![ResponseEvent::Error {
                code: "server_error",
                message: e.to_string(),
                param: None,
            }],
        };
        stream::iter(events.into_iter().map(&mut send).collect::<Vec<_>>())
    });
    Ok(Sse::new(stream::iter(opening).chain(body)).into_response())
}
