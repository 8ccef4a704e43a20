//! The HTTP server: OpenAI-compatible and native routes over one loaded
//! model (axum + tokio).
//!
//! Requests are parsed and validated into typed values here; generation runs
//! on the engine's [`Scheduler`] (continuous batching over `--parallel`
//! slots, fed by a bounded queue) and streams back over a channel; embedding
//! requests share that queue and run between two steps. The model loads in
//! the background: `/ready` and the model routes answer 503 until it is in
//! memory. `/metrics` (Prometheus) and `/slots` show what it does.

mod api;
mod embeddings;
mod limit;
mod lmstudio;
mod metrics;
mod ollama;
pub mod openapi;
mod responses;

use crate::engine::{LoadOptions, Runner, Scheduler, SchedulerOptions, SessionOptions};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    pub model_path: PathBuf,
    pub load: LoadOptions,
    /// Per slot: KV cache size and prompt chunk; `ctx_size` 0 means the
    /// runner's default.
    pub session: SessionOptions,
    /// Sequence slots: requests generated at once.
    pub parallel: usize,
    /// Requests waiting for a free slot beyond this get 503 + Retry-After.
    pub queue_size: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// When set, every route but the health checks needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Open connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (the first
    /// one, and each next one on a kept-alive connection) before it is closed.
    pub read_timeout: Duration,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Reuse the previous request's prompt prefix unless a request says
    /// otherwise (see `engine::Request::cache_prompt`).
    pub cache_prompt: bool,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: cannot use {cert} and {key}: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The model once loaded, with its engine.
pub(crate) struct Loaded {
    pub runner: Arc<Runner>,
    pub engine: Scheduler,
    pub model_id: String,
    /// Positions per request (each slot's KV cache).
    pub ctx_size: usize,
    /// Tokens per batched pass (`--ubatch`), for embedding requests.
    pub ubatch: usize,
    /// The default for requests that do not set `cache_prompt`.
    pub cache_prompt: bool,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub loaded: OnceLock<Result<Loaded, String>>,
    pub api_key: Option<String>,
    pub started: std::time::SystemTime,
    pub model_path: PathBuf,
    /// SHA-256 of the model file for Ollama's `digest`: hashing hundreds of
    /// megabytes takes a while, so it is done once, on first request.
    pub digest: tokio::sync::OnceCell<String>,
    pub metrics: metrics::HttpMetrics,
}

/// Builds the router over `state`.
pub(crate) fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(api::root))
        .route("/health", get(api::health))
        .route("/healthz", get(api::health))
        .route("/ready", get(api::ready))
        .route("/api/version", get(api::version))
        .route("/v1/models", get(api::models))
        .route("/v1/models/{id}", get(api::model))
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/generate", post(api::generate))
        .route("/tokenize", post(api::tokenize))
        .route("/metrics", get(metrics::metrics))
        .route("/slots", get(metrics::slots))
        .route("/detokenize", post(api::detokenize))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/swagger.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/docs/swagger-ui-bundle.js", get(openapi::swagger_js))
        .route("/docs/swagger-ui.css", get(openapi::swagger_css))
        .route("/v1/responses", post(responses::responses))
        .route("/api/v0/models", get(lmstudio::models))
        .route("/api/v0/models/{id}", get(lmstudio::model))
        .route("/api/v0/chat/completions", post(lmstudio::chat_completions))
        .route("/api/v0/completions", post(lmstudio::completions))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/v1/embeddings", post(embeddings::openai))
        .route("/api/embed", post(embeddings::ollama_embed))
        .route("/api/embeddings", post(embeddings::ollama_embeddings))
        .route("/api/v0/embeddings", post(embeddings::openai))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .route_layer(axum::middleware::from_fn(metrics::tag_route))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            api::require_api_key,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        // Outermost, so errors from every layer above and preflights get it.
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(state)
}

/// Serves until SIGINT/SIGTERM, then stops accepting, lets in-flight
/// responses finish (for up to 10 s), and returns.
pub fn serve(options: ServerOptions) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener =
            std::net::TcpListener::bind(options.addr).map_err(|source| ServerError::Bind {
                addr: options.addr,
                source,
            })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tls = match &options.tls {
            None => None,
            Some(files) => Some(tls_config(files).await?),
        };
        let state = Arc::new(AppState {
            loaded: OnceLock::new(),
            api_key: options.api_key.clone(),
            started: std::time::SystemTime::now(),
            model_path: options.model_path.clone(),
            digest: tokio::sync::OnceCell::new(),
            metrics: metrics::HttpMetrics::default(),
        });
        eprintln!(
            "rusty-llm: listening on {}://{addr} (loading {} …)",
            if tls.is_some() { "https" } else { "http" },
            options.model_path.display()
        );
        spawn_model_load(Arc::clone(&state), options.clone());

        let handle = axum_server::Handle::new();
        let on_signal = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let service = limit::ConnectionLimit::new(
            router(state, options.max_body_bytes),
            options.max_connections,
        );
        let timeout = options.read_timeout;
        match tls {
            None => {
                let mut server = axum_server::from_tcp(listener)?
                    .handle(handle)
                    .first_request_timeout(timeout);
                server
                    .http_builder()
                    .http1()
                    .header_read_timeout(Some(timeout));
                server.serve(service).await?;
            }
            Some(config) => {
                let mut server = axum_server::from_tcp_rustls(listener, config)?
                    .handle(handle)
                    .first_request_timeout(timeout);
                server
                    .http_builder()
                    .http1()
                    .header_read_timeout(Some(timeout));
                server.serve(service).await?;
            }
        }
        eprintln!("rusty-llm: shut down");
        Ok(())
    })
}

/// Loads the model on its own thread so /health answers at once and /ready
/// says when it is in memory.
fn spawn_model_load(state: Arc<AppState>, opts: ServerOptions) {
    std::thread::spawn(move || {
        let result = Runner::load(&opts.model_path, &opts.load)
            .map(|runner| {
                let runner = Arc::new(runner);
                let mut session = opts.session;
                if session.ctx_size == 0 {
                    session.ctx_size = runner.default_ctx_size();
                }
                let model_id = opts
                    .model_path
                    .file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().into_owned());
                let parallel = opts.parallel.max(1);
                eprintln!(
                    "rusty-llm: ready: model {model_id} ({}), chat-template={}, simd={}, kernels={}, \
                     {parallel} slots × ctx={} tokens each (--ctx-size is per slot), queue={}",
                    runner.model().config().arch,
                    runner.chat_template().name(),
                    runner.model().kernels().simd.name(),
                    runner.model().kernels().order.name(),
                    session.ctx_size,
                    opts.queue_size,
                );
                let scheduler = SchedulerOptions {
                    parallel,
                    session,
                    queue_size: opts.queue_size,
                };
                Loaded {
                    engine: Scheduler::start(Arc::clone(&runner), scheduler),
                    ctx_size: session.ctx_size,
                    ubatch: session.ubatch,
                    cache_prompt: opts.cache_prompt,
                    runner,
                    model_id,
                }
            })
            .map_err(|e| {
                eprintln!("rusty-llm: cannot load the model: {e}");
                e.to_string()
            });
        let _ = state.loaded.set(result);
    });
}

/// The rustls configuration from PEM files, with the ring provider.
async fn tls_config(files: &TlsFiles) -> Result<RustlsConfig, ServerError> {
    // One provider for the process; a second install (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|source| ServerError::Tls {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// An error answered as JSON. OpenAI's routes get
/// `{"error": {"message", "type", "param", "code"}}`; Ollama's get
/// `{"error": "…"}` through [`OllamaError`].
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// The request field at fault, when one is.
    param: Option<String>,
    /// A stable machine-readable reason (OpenAI's `code`).
    code: Option<&'static str>,
    headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl ApiError {
    pub(crate) fn with_header(mut self, name: axum::http::HeaderName, value: &'static str) -> Self {
        self.headers
            .push((name, axum::http::HeaderValue::from_static(value)));
        self
    }

    pub(crate) fn param(mut self, field: impl Into<String>) -> Self {
        self.param = Some(field.into());
        self
    }

    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn with_body(self, body: serde_json::Value) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut r = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 | 503 => "server_busy_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind,
                param: self.param.clone(),
                code: self.code,
            },
        };
        let body = serde_json::to_value(body).unwrap_or_default();
        self.with_body(body)
    }
}

/// An error as OpenAI's routes answer it (and /openapi.json describes it).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `server_busy_error` or `server_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request field at fault, when one is (always present, maybe null).
    #[schema(required = true)]
    param: Option<String>,
    /// A stable reason such as `invalid_value` or `context_length_exceeded`.
    #[schema(required = true)]
    code: Option<&'static str>,
}

/// An error as Ollama's routes answer it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OllamaErrorBody {
    error: String,
}

/// An [`ApiError`] in Ollama's shape, `{"error": "message"}`.
#[derive(Debug)]
pub(crate) struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl axum::response::IntoResponse for OllamaError {
    fn into_response(self) -> axum::response::Response {
        let body = OllamaErrorBody {
            error: self.0.message.clone(),
        };
        let body = serde_json::to_value(body).unwrap_or_default();
        self.0.with_body(body)
    }
}

pub(crate) fn error_json(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        param: None,
        code: None,
        headers: Vec::new(),
    }
}

/// A 400 naming the field at fault.
pub(crate) fn bad_field(field: &str, message: impl std::fmt::Display) -> ApiError {
    error_json(StatusCode::BAD_REQUEST, format!("{field}: {message}"))
        .param(field)
        .code("invalid_value")
}
