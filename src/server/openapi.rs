//! `/openapi.json` (also `/swagger.json`) describing the routes, and `/docs`:
//! Swagger UI served from the binary (assets/swagger-ui, vendored from npm's
//! swagger-ui-dist) so it works offline.

use super::{api, ollama, responses};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::{PartialSchema, ToSchema};

const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

/// Request bodies' schemas, generated from the types the handlers parse
/// (utoipa), with the types they refer to collected as components.
struct Schemas {
    components: Map<String, Value>,
}

impl Schemas {
    /// A required JSON request body of type `T`.
    fn body<T: ToSchema>(&mut self) -> Value {
        let mut refs = Vec::new();
        T::schemas(&mut refs);
        for (name, schema) in refs {
            self.components.insert(name, to_json(&schema));
        }
        let schema = to_json(&<T as PartialSchema>::schema());
        json!({ "required": true, "content": { "application/json": { "schema": schema } } })
    }
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

    /// The answers of a route: 200, or an error body of type `E`.
    fn responses<E: ToSchema>(&mut self) -> Value {
        let error = json!({ "description": "an error",
                            "content": { "application/json": { "schema": self.reference::<E>() } } });
        json!({ "200": { "description": "OK" }, "4XX": error, "5XX": error })
    }

    /// A 200 body of type `T` (or server-sent events when `stream` is set).
    fn success<T: ToSchema>(&mut self, streams: bool) -> Value {
        let mut content = json!({ "application/json": { "schema": self.reference::<T>() } });
        if streams {
            content["text/event-stream"] = json!({});
        }
        json!({ "description": "OK", "content": content })
    }
}

fn to_json(schema: &impl serde::Serialize) -> Value {
    // Serializing utoipa's schema types cannot fail (plain maps and strings).
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// The OpenAPI 3.1 document of this server: every route, with request
/// schemas from the request types.
pub fn document() -> Value {
    let mut schemas = Schemas {
        components: Map::new(),
    };
    let get = |summary: &str| json!({ "get": { "summary": summary } });
    let post =
        |summary: &str, body: Value| json!({ "post": { "summary": summary, "requestBody": body } });
    let chat = schemas.body::<api::ChatRequest>();
    let completion = schemas.body::<api::CompletionRequest>();
    let mut paths = json!({
        "/": get("server name, version, model and main routes"),
        "/health": get("liveness"),
        "/healthz": get("liveness"),
        "/ready": get("200 once the model is loaded, else 503"),
        "/api/version": get("server version"),
        "/v1/models": get("the loaded model, OpenAI shape"),
        "/v1/chat/completions": post("chat completion (OpenAI); stream: server-sent events", chat.clone()),
        "/v1/completions": post("text completion (OpenAI)", completion.clone()),
        "/v1/responses": post("Responses API (OpenAI): input string or messages, instructions",
            schemas.body::<responses::ResponsesRequest>()),
        "/generate": post("native: prompt or messages (exactly one); text, token counts and timings",
            schemas.body::<api::GenerateRequest>()),
        "/tokenize": post("text to token ids (llama-server shape)", schemas.body::<api::TokenizeRequest>()),
        "/detokenize": post("token ids to text (llama-server shape)", schemas.body::<api::DetokenizeRequest>()),
        "/metrics": get("Prometheus metrics (text format 0.0.4): requests by route and status, tokens, time to first token and inter-token latency histograms, queue depth, busy slots, KV cache use, prefix-cache hits"),
        "/slots": get("each sequence slot (llama-server style): id, n_ctx, is_processing, state, tokens_cached, request_id"),
        "/api/chat": post("chat (Ollama); streams JSON lines unless stream: false",
            schemas.body::<ollama::ChatRequest>()),
        "/api/generate": post("generate (Ollama); streams JSON lines unless stream: false",
            schemas.body::<ollama::GenerateRequest>()),
        "/api/tags": get("models (Ollama)"),
        "/api/ps": get("loaded models (Ollama)"),
        "/api/show": post("model details (Ollama)", schemas.body::<ollama::ShowRequest>()),
        "/api/v0/models": get("models (LM Studio)"),
        "/api/v0/chat/completions": post("chat completion (LM Studio): OpenAI's body plus stats, model_info, runtime", chat),
        "/api/v0/completions": post("text completion (LM Studio)", completion),
    });
    // Errors take the shape of the route's family.
    let openai_answers = schemas.responses::<super::ErrorBody>();
    let ollama_answers = schemas.responses::<super::OllamaErrorBody>();
    // Bodies with a type of their own (LM Studio's add fields to OpenAI's).
    let chat_body = schemas.success::<api::ChatCompletion>(true);
    let completion_body = schemas.success::<api::TextCompletion>(true);
    let models_body = schemas.success::<api::ModelList>(false);
    for (path, item) in paths.as_object_mut().into_iter().flatten() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let mut answers = if api::is_ollama_path(path) {
                ollama_answers.clone()
            } else {
                openai_answers.clone()
            };
            match path.as_str() {
                "/v1/chat/completions" | "/api/v0/chat/completions" => {
                    answers["200"] = chat_body.clone();
                }
                "/v1/completions" | "/api/v0/completions" => {
                    answers["200"] = completion_body.clone();
                }
                "/v1/models" => answers["200"] = models_body.clone(),
                _ => {}
            }
            operation["responses"] = answers;
        }
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
