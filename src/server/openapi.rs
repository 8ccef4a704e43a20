//! `/openapi.json` (also `/swagger.json`) describing the routes, and `/docs`:
//! Swagger UI served from the binary (assets/swagger-ui, vendored from npm's
//! swagger-ui-dist) so it works offline.

use super::{api, embeddings, lmstudio, metrics, ollama, responses};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::{PartialSchema, ToSchema};

const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

/// Schemas generated from the request and answer types (utoipa), with the
/// types they refer to collected as components.
struct Schemas {
    components: Map<String, Value>,
}

impl Schemas {
    /// A `$ref` to type `T`, registered with what it refers to.
    fn reference<T: ToSchema>(&mut self) -> Value {
        let mut refs = Vec::new();
        T::schemas(&mut refs);
        for (name, schema) in refs {
            self.components.insert(name, to_json(&schema));
        }
        let name = T::name().into_owned();
        self.components
            .insert(name.clone(), to_json(&<T as PartialSchema>::schema()));
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// A required JSON request body of type `T`.
    fn body<T: ToSchema>(&mut self) -> Value {
        json!({ "required": true,
                "content": { "application/json": { "schema": self.reference::<T>() } } })
    }

    /// A 200 answer of JSON type `T`.
    fn json<T: ToSchema>(&mut self) -> Value {
        json!({ "description": "OK",
                "content": { "application/json": { "schema": self.reference::<T>() } } })
    }

    /// A 200 answer of JSON type `T`, or with `stream: true` server-sent
    /// events whose `data` is an `Item` in JSON (or, with `done`, the
    /// `[DONE]` that ends OpenAI's streams). The event schema is what OpenAPI
    /// 3.2 calls `itemSchema`; tools for 3.1 (schemathesis) read `schema`
    /// that way for event streams.
    fn json_or_sse<T: ToSchema, Item: ToSchema>(&mut self, note: &str, done: bool) -> Value {
        let mut answer = self.json::<T>();
        let mut data = json!({ "type": "string", "contentMediaType": "application/json",
                               "contentSchema": self.reference::<Item>() });
        if done {
            data = json!({ "anyOf": [{ "const": "[DONE]" }, data] });
        }
        answer["content"]["text/event-stream"] = json!({ "schema": {
            "type": "object",
            "description": note,
            "required": ["data"],
            "properties": { "event": { "type": "string" }, "data": data },
        } });
        answer
    }

    /// A 200 answer of JSON type `T`, or with `stream: true` (Ollama's
    /// default) JSON lines of type `T`, the last with `done: true`. OpenAPI
    /// 3.1 cannot type the lines, so their schema rides along as
    /// `x-item-schema`.
    fn json_or_lines<T: ToSchema>(&mut self) -> Value {
        let mut answer = self.json::<T>();
        answer["content"]["application/x-ndjson"] = json!({
            "schema": { "type": "string",
                        "description": "one JSON object per line; the last has `done: true`" },
            "x-item-schema": self.reference::<T>(),
        });
        answer
    }

    /// This document's own answer.
    fn document() -> Value {
        json!({ "description": "OK",
                "content": { "application/json": { "schema": { "type": "object" } } } })
    }

    /// A 200 answer that is a file of type `media`.
    fn file(media: &str) -> Value {
        json!({ "description": "OK", "content": { media: { "schema": { "type": "string" } } } })
    }
}

fn to_json(schema: &impl serde::Serialize) -> Value {
    // Serializing utoipa's schema types cannot fail (plain maps and strings).
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// One documented route.
struct Route {
    path: &'static str,
    post: bool,
    summary: &'static str,
    request: Option<Value>,
    ok: Value,
}

fn get(path: &'static str, summary: &'static str, ok: Value) -> Route {
    Route {
        path,
        post: false,
        summary,
        request: None,
        ok,
    }
}

fn post(path: &'static str, summary: &'static str, request: Value, ok: Value) -> Route {
    Route {
        path,
        post: true,
        summary,
        request: Some(request),
        ok,
    }
}

const OPENAI_SSE: &str = "one event per chunk, then a last event whose data is `[DONE]`";

/// Every route this server answers.
fn routes(s: &mut Schemas) -> Vec<Route> {
    let chat = s.body::<api::ChatRequest>();
    let completion = s.body::<api::CompletionRequest>();
    let chat_answer =
        s.json_or_sse::<api::ChatCompletion, api::ChatCompletionChunk>(OPENAI_SSE, true);
    let completion_answer =
        s.json_or_sse::<api::TextCompletion, api::TextCompletionChunk>(OPENAI_SSE, true);
    // LM Studio's answers are OpenAI's plus its extras (also on the last chunk).
    let extras = s.reference::<lmstudio::LmStudioExtras>();
    let with_extras = |mut answer: Value| {
        let plain = answer["content"]["application/json"]["schema"].take();
        answer["content"]["application/json"]["schema"] = json!({ "allOf": [plain, extras] });
        answer
    };
    let lm_chat_answer = with_extras(chat_answer.clone());
    let lm_completion_answer = with_extras(completion_answer.clone());
    vec![
        get(
            "/",
            "server name, version, model and routes",
            s.json::<api::ServerInfo>(),
        ),
        get("/health", "liveness", s.json::<api::Health>()),
        get("/healthz", "liveness", s.json::<api::Health>()),
        get(
            "/ready",
            "200 once the model is loaded, else 503",
            s.json::<api::Ready>(),
        ),
        get(
            "/api/version",
            "server version (Ollama)",
            s.json::<api::Version>(),
        ),
        get(
            "/v1/models",
            "the loaded model (OpenAI)",
            s.json::<api::ModelList>(),
        ),
        get(
            "/v1/models/{id}",
            "any id answers with the loaded model (OpenAI)",
            s.json::<api::ModelObject>(),
        ),
        post(
            "/v1/chat/completions",
            "chat completion (OpenAI); stream: server-sent events",
            chat.clone(),
            chat_answer,
        ),
        post(
            "/v1/completions",
            "text completion (OpenAI); stream: server-sent events",
            completion.clone(),
            completion_answer,
        ),
        post(
            "/v1/responses",
            "Responses API (OpenAI): input string or messages, instructions; \
              stream: typed server-sent events",
            s.body::<responses::ResponsesRequest>(),
            s.json_or_sse::<responses::ResponseObject, responses::SequencedEvent>(
                "events named after their data's `type`",
                false,
            ),
        ),
        post(
            "/generate",
            "native: prompt or messages (exactly one); text, token counts and timings",
            s.body::<api::GenerateRequest>(),
            s.json::<api::GenerateResponse>(),
        ),
        post(
            "/tokenize",
            "text to token ids (llama-server shape)",
            s.body::<api::TokenizeRequest>(),
            s.json::<api::TokenizeResponse>(),
        ),
        post(
            "/detokenize",
            "token ids to text (llama-server shape)",
            s.body::<api::DetokenizeRequest>(),
            s.json::<api::DetokenizeResponse>(),
        ),
        post(
            "/api/chat",
            "chat (Ollama); streams JSON lines unless stream: false",
            s.body::<ollama::ChatRequest>(),
            s.json_or_lines::<ollama::ChatResponse>(),
        ),
        post(
            "/api/generate",
            "generate (Ollama); streams JSON lines unless stream: false",
            s.body::<ollama::GenerateRequest>(),
            s.json_or_lines::<ollama::GenerateResponse>(),
        ),
        get(
            "/api/tags",
            "models (Ollama)",
            s.json::<ollama::TagsResponse>(),
        ),
        get(
            "/api/ps",
            "loaded models (Ollama)",
            s.json::<ollama::PsResponse>(),
        ),
        post(
            "/api/show",
            "model details (Ollama)",
            s.body::<ollama::ShowRequest>(),
            s.json::<ollama::ShowResponse>(),
        ),
        get(
            "/api/v0/models",
            "models (LM Studio)",
            s.json::<lmstudio::LmStudioModelList>(),
        ),
        get(
            "/api/v0/models/{id}",
            "any id answers with the loaded model (LM Studio)",
            s.json::<lmstudio::LmStudioModel>(),
        ),
        post(
            "/api/v0/chat/completions",
            "chat completion (LM Studio): OpenAI's body plus stats, model_info, runtime",
            chat,
            lm_chat_answer,
        ),
        post(
            "/api/v0/completions",
            "text completion (LM Studio): OpenAI's body plus stats",
            completion,
            lm_completion_answer,
        ),
        post(
            "/v1/embeddings",
            "embeddings (OpenAI): input text(s) or token ids; float or base64",
            s.body::<embeddings::EmbeddingRequest>(),
            s.json::<embeddings::EmbeddingList>(),
        ),
        post(
            "/api/v0/embeddings",
            "embeddings (LM Studio): OpenAI's body",
            s.body::<embeddings::EmbeddingRequest>(),
            s.json::<embeddings::EmbeddingList>(),
        ),
        post(
            "/api/embed",
            "embeddings (Ollama): input string or list, unit vectors under embeddings",
            s.body::<embeddings::EmbedRequest>(),
            s.json::<embeddings::EmbedResponse>(),
        ),
        post(
            "/api/embeddings",
            "embedding (Ollama's older route): prompt, one raw vector under embedding",
            s.body::<embeddings::EmbeddingsRequest>(),
            s.json::<embeddings::EmbeddingsResponse>(),
        ),
        get(
            "/metrics",
            "Prometheus metrics (text format 0.0.4): requests by route and status, \
             tokens, time to first token and inter-token latency histograms, queue depth, busy \
             slots, KV cache use, prefix-cache hits",
            Schemas::file("text/plain"),
        ),
        get(
            "/slots",
            "each sequence slot (llama-server style)",
            s.json::<Vec<metrics::SlotEntry>>(),
        ),
        get("/openapi.json", "this document", Schemas::document()),
        get("/swagger.json", "this document", Schemas::document()),
        get(
            "/docs",
            "Swagger UI for this document, served from the binary",
            Schemas::file("text/html"),
        ),
        get(
            "/docs/swagger-ui-bundle.js",
            "Swagger UI's script",
            Schemas::file("application/javascript"),
        ),
        get(
            "/docs/swagger-ui.css",
            "Swagger UI's style sheet",
            Schemas::file("text/css"),
        ),
    ]
}

/// The paths of every route, as `GET /` lists them.
pub(crate) fn paths() -> Vec<String> {
    let mut schemas = Schemas {
        components: Map::new(),
    };
    routes(&mut schemas)
        .iter()
        .map(|r| r.path.to_string())
        .collect()
}

/// The OpenAPI 3.1 document of this server: every route, with request and
/// answer schemas generated from the types the handlers parse and answer.
pub fn document() -> Value {
    let mut schemas = Schemas {
        components: Map::new(),
    };
    // Errors take the shape of the route's family.
    let openai_error = schemas.reference::<super::ErrorBody>();
    let ollama_error = schemas.reference::<super::OllamaErrorBody>();
    let mut paths = Map::new();
    for route in routes(&mut schemas) {
        let error = if api::is_ollama_path(route.path) {
            &ollama_error
        } else {
            &openai_error
        };
        let error = json!({ "description": "an error",
                            "content": { "application/json": { "schema": error } } });
        let mut operation = json!({
            "summary": route.summary,
            "responses": { "200": route.ok, "4XX": error, "5XX": error },
        });
        if let Some(body) = route.request {
            operation["requestBody"] = body;
        }
        if route.path.contains("{id}") {
            operation["parameters"] = json!([{ "name": "id", "in": "path", "required": true,
                                               "schema": { "type": "string" } }]);
        }
        let method = if route.post { "post" } else { "get" };
        paths.insert(route.path.to_string(), json!({ method: operation }));
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "rusty-llm", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Local LLM inference over HTTP: OpenAI-, Ollama- and LM Studio-compatible routes." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas.components,
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
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
