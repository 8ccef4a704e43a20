//! OpenAI's Responses API, `POST /v1/responses`: text in (a string or
//! message items, plus `instructions`), one assistant message out. Streaming
//! sends the typed event sequence the SDKs' stream helpers fold into a
//! response: created, in_progress, output_item.added, content_part.added,
//! output_text.delta…, output_text.done, content_part.done,
//! output_item.done, completed — each with a `sequence_number`.

use super::api::{
    ChatMessage, JsonBody, SamplingFields, chat_tokens, collect, loaded, messages, next_id, submit,
    unix_now,
};
use super::{ApiError, AppState, bad_field};
use crate::chat::Message;
use crate::engine::{Event, Generation, StopReason};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
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
    fn item(&self, text: &str, done: bool) -> Value {
        let content = if done {
            json!([self.part(text)])
        } else {
            json!([])
        };
        json!({ "id": self.item_id, "type": "message", "role": "assistant",
                "status": if done { "completed" } else { "in_progress" }, "content": content })
    }

    fn part(&self, text: &str) -> Value {
        json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
    }

    /// The response object: in progress (no output yet) or finished by `g`.
    fn response(&self, g: Option<&Generation>) -> Value {
        let (status, output, usage, incomplete) = match g {
            None => ("in_progress", json!([]), Value::Null, Value::Null),
            Some(g) => {
                let incomplete = if g.stop_reason == StopReason::MaxTokens {
                    json!({ "reason": "max_output_tokens" })
                } else {
                    Value::Null
                };
                let usage = json!({
                    "input_tokens": g.prompt_tokens,
                    "input_tokens_details": { "cached_tokens": g.cached_tokens },
                    "output_tokens": g.generated_tokens,
                    "output_tokens_details": { "reasoning_tokens": 0 },
                    "total_tokens": g.prompt_tokens + g.generated_tokens,
                });
                // OpenAI marks a response cut by max_output_tokens "incomplete".
                let status = if incomplete.is_null() {
                    "completed"
                } else {
                    "incomplete"
                };
                (status, json!([self.item(&g.text, true)]), usage, incomplete)
            }
        };
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.model, "output": output, "usage": usage,
            "error": null, "incomplete_details": incomplete,
            "instructions": self.instructions, "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature, "top_p": self.top_p,
            "parallel_tool_calls": false, "tool_choice": "auto", "tools": [],
            "text": { "format": { "type": "text" } }, "metadata": {},
        })
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
        r["output_text"] = json!(g.text);
        return Ok(axum::Json(r).into_response());
    }

    use futures_util::StreamExt;
    let mut sequence = 0u64;
    // Each event names its type twice (SSE `event:` and the JSON `type`), as OpenAI sends it.
    let mut event = move |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        Ok::<_, Infallible>(SseEvent::default().event(kind).data(data.to_string()))
    };
    let at = |v: Value, shape: &ResponseShape| {
        let mut v = v;
        v["item_id"] = json!(shape.item_id);
        v["output_index"] = json!(0);
        v["content_index"] = json!(0);
        v
    };
    let opening = vec![
        event(
            "response.created",
            json!({ "response": shape.response(None) }),
        ),
        event(
            "response.in_progress",
            json!({ "response": shape.response(None) }),
        ),
        event(
            "response.output_item.added",
            json!({ "output_index": 0, "item": shape.item("", false) }),
        ),
        event(
            "response.content_part.added",
            at(json!({ "part": shape.part("") }), &shape),
        ),
    ];
    let body = super::api::events(handle).flat_map(move |e| {
        let events = match e {
            Event::Piece { text, .. } if text.is_empty() => vec![],
            Event::Piece { text, .. } => vec![event(
                "response.output_text.delta",
                at(json!({ "delta": text, "logprobs": [] }), &shape),
            )],
            Event::Done(g) => vec![
                event(
                    "response.output_text.done",
                    at(json!({ "text": g.text, "logprobs": [] }), &shape),
                ),
                event(
                    "response.content_part.done",
                    at(json!({ "part": shape.part(&g.text) }), &shape),
                ),
                event(
                    "response.output_item.done",
                    json!({ "output_index": 0, "item": shape.item(&g.text, true) }),
                ),
                event(
                    "response.completed",
                    json!({ "response": shape.response(Some(&g)) }),
                ),
            ],
            Event::Error(e) => vec![event(
                "error",
                json!({ "code": "server_error", "message": e.to_string(), "param": null }),
            )],
        };
        stream::iter(events)
    });
    Ok(Sse::new(stream::iter(opening).chain(body)).into_response())
}
