//! `/openapi.json` (also `/swagger.json`) describing the routes, and `/docs`:
//! Swagger UI served from the binary (assets/swagger-ui, vendored from npm's
//! swagger-ui-dist) so it works offline.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn ok(description: &str) -> Value {
    json!({ "200": { "description": description } })
}

/// The sampling fields every generation route accepts.
fn sampling_properties() -> Value {
    json!({
        "max_tokens": { "type": "integer", "description": "most tokens to generate (default: until the context is full)" },
        "temperature": { "type": "number", "description": "0 = greedy" },
        "top_p": { "type": "number" }, "top_k": { "type": "integer" }, "min_p": { "type": "number" },
        "presence_penalty": { "type": "number" }, "frequency_penalty": { "type": "number" },
        "repeat_penalty": { "type": "number" }, "repeat_last_n": { "type": "integer" },
        "seed": { "type": "integer" },
        "stop": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] },
        "logit_bias": { "type": "object", "additionalProperties": { "type": "number", "minimum": -100, "maximum": 100 },
                        "description": "token id (as a string) to a bias added to its logit" },
        "stream": { "type": "boolean" },
        "ignore_eos": { "type": "boolean" },
        "cache_prompt": { "type": "boolean", "description": "reuse the previous request's prompt prefix (default: the server's setting)" }
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The OpenAPI 3 document of this server.
pub fn document() -> Value {
    let message = json!({
        "type": "object", "required": ["role", "content"],
        "properties": { "role": { "type": "string" }, "content": { "type": "string" } }
    });
    let messages = json!({ "type": "array", "items": message, "minItems": 1 });
    let stream_options =
        json!({ "type": "object", "properties": { "include_usage": { "type": "boolean" } } });
    let chat = json!({ "type": "object", "required": ["messages"],
        "properties": with(sampling_properties(), json!({ "model": { "type": "string" }, "messages": messages,
            "n": { "type": "integer", "enum": [1] }, "stream_options": stream_options,
            "logprobs": { "type": "boolean" }, "top_logprobs": { "type": "integer", "minimum": 0, "maximum": 20 } })) });
    let completion = json!({ "type": "object", "required": ["prompt"],
        "properties": with(sampling_properties(), json!({ "model": { "type": "string" }, "prompt": { "type": "string", "minLength": 1 },
            "stream_options": stream_options, "echo": { "type": "boolean" },
            "logprobs": { "type": "integer", "minimum": 0, "maximum": 5 } })) });
    let ollama_options = json!({ "type": "object", "properties": {
        "num_predict": { "type": "integer" }, "temperature": { "type": "number" }, "top_p": { "type": "number" },
        "top_k": { "type": "integer" }, "min_p": { "type": "number" }, "repeat_penalty": { "type": "number" },
        "repeat_last_n": { "type": "integer", "minimum": -1 }, "seed": { "type": "integer" },
        "stop": { "type": "array", "items": { "type": "string" } }, "num_ctx": { "type": "integer", "minimum": 1 } } });
    let ollama_chat = json!({ "type": "object", "required": ["messages"], "properties": {
        "model": { "type": "string" }, "messages": messages, "stream": { "type": "boolean" }, "options": ollama_options } });
    let ollama_generate = json!({ "type": "object", "properties": {
        "model": { "type": "string" }, "prompt": { "type": "string" }, "system": { "type": "string" },
        "raw": { "type": "boolean" }, "stream": { "type": "boolean" }, "options": ollama_options } });
    let generate = json!({ "type": "object",
        "description": "exactly one of prompt and messages",
        "properties": with(sampling_properties(), json!({ "prompt": { "type": "string", "minLength": 1 }, "messages": messages })) });
    let get = |summary: &str| json!({ "get": { "summary": summary, "responses": ok("OK") } });
    let post = |summary: &str, schema: Value| json!({ "post": { "summary": summary, "requestBody": json_body(schema), "responses": ok("OK") } });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "rusty-llm", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Local LLM inference over HTTP: OpenAI-, Ollama- and LM Studio-compatible routes." },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "bearer": [] }],
        "paths": {
            "/health": get("liveness"),
            "/ready": get("200 once the model is loaded, else 503"),
            "/v1/models": get("the loaded model, OpenAI shape"),
            "/v1/chat/completions": post("chat completion (OpenAI); stream: server-sent events", chat.clone()),
            "/v1/completions": post("text completion (OpenAI)", completion.clone()),
            "/v1/responses": post("Responses API (OpenAI): input string or messages, instructions",
                json!({ "type": "object", "required": ["input"], "properties": with(sampling_properties(),
                    json!({ "input": { "oneOf": [{ "type": "string", "minLength": 1 }, messages] },
                            "instructions": { "type": "string" }, "max_output_tokens": { "type": "integer", "minimum": 1 } })) })),
            "/generate": post("native: prompt or messages; text, token counts and timings", generate),
            "/tokenize": post("text to token ids (llama-server shape)", json!({ "type": "object", "required": ["content"],
                "properties": { "content": { "type": "string" }, "add_special": { "type": "boolean" }, "parse_special": { "type": "boolean" } } })),
            "/detokenize": post("token ids to text (llama-server shape)", json!({ "type": "object", "required": ["tokens"],
                "properties": { "tokens": { "type": "array", "items": { "type": "integer" } } } })),
            "/api/chat": post("chat (Ollama); streams JSON lines unless stream: false", ollama_chat),
            "/api/generate": post("generate (Ollama); streams JSON lines unless stream: false", ollama_generate),
            "/api/tags": get("models (Ollama)"),
            "/api/ps": get("loaded models (Ollama)"),
            "/api/show": post("model details (Ollama)", json!({ "type": "object", "properties": { "model": { "type": "string" } } })),
            "/api/v0/models": get("models (LM Studio)"),
            "/api/v0/chat/completions": post("chat completion (LM Studio): OpenAI's body plus stats, model_info, runtime", chat),
            "/api/v0/completions": post("text completion (LM Studio)", completion),
            "/api/version": get("server version"),
            "/healthz": get("liveness"),
            "/": get("server name, version, model and main routes")
        }
    })
}

pub(crate) async fn openapi_json() -> Response {
    axum::Json(document()).into_response()
}

pub(crate) async fn docs() -> Response {
    Html(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>rusty-llm API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });</script>
</body></html>"##,
    )
    .into_response()
}

pub(crate) async fn swagger_js() -> Response {
    (
        [(header::CONTENT_TYPE, "application/javascript")],
        SWAGGER_JS,
    )
        .into_response()
}

pub(crate) async fn swagger_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], SWAGGER_CSS).into_response()
}
