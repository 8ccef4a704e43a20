//! The HTTP server: OpenAI-compatible and native routes over one loaded
//! model (axum + tokio).
//!
//! Requests are parsed and validated into typed values here; generation runs
//! on the engine thread (`engine`), fed by a bounded queue, and streams back
//! over a channel. The model loads in the background: `/ready` and the model
//! routes answer 503 until it is in memory.

mod api;
mod engine;
mod ollama;
pub mod openapi;

use crate::engine::{LoadOptions, Runner, SessionOptions};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use engine::EngineHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use thiserror::Error;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    pub model_path: PathBuf,
    pub load: LoadOptions,
    /// KV cache size and batch; `ctx_size` 0 means the runner's default.
    pub session: SessionOptions,
    /// Requests waiting for the engine beyond this get 503 + Retry-After.
    pub queue_size: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// When set, every route but the health checks needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The model once loaded, with its engine.
pub(crate) struct Loaded {
    pub runner: Arc<Runner>,
    pub engine: EngineHandle,
    pub model_id: String,
    /// Positions per request (the engine session's KV cache).
    pub ctx_size: usize,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub loaded: OnceLock<Result<Loaded, String>>,
    pub api_key: Option<String>,
    pub started: std::time::SystemTime,
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
        .route("/detokenize", post(api::detokenize))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/swagger.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/docs/swagger-ui-bundle.js", get(openapi::swagger_js))
        .route("/docs/swagger-ui.css", get(openapi::swagger_css))
        .route("/v1/responses", post(api::responses))
        .route("/api/v0/models", get(api::lmstudio_models))
        .route("/api/v0/models/{id}", get(api::lmstudio_model_route))
        .route("/api/v0/chat/completions", post(api::chat_completions))
        .route("/api/v0/completions", post(api::completions))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/v1/embeddings", post(api::embeddings_unavailable))
        .route("/api/embed", post(api::embeddings_unavailable))
        .route("/api/embeddings", post(api::embeddings_unavailable))
        .route("/api/v0/embeddings", post(api::embeddings_unavailable))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            api::require_api_key,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(state)
}

/// Serves until SIGINT/SIGTERM, then stops accepting, lets in-flight
/// responses finish, and returns.
pub fn serve(options: ServerOptions) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: options.addr,
                source,
            })?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            loaded: OnceLock::new(),
            api_key: options.api_key.clone(),
            started: std::time::SystemTime::now(),
        });
        eprintln!(
            "rusty-llm: listening on http://{addr} (loading {} …)",
            options.model_path.display()
        );
        // Load in the background so /health answers at once and /ready says when.
        let loading = Arc::clone(&state);
        let opts = options.clone();
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
                    eprintln!(
                        "rusty-llm: ready: model {model_id} ({}), chat-template={}, simd={}, ctx={} per request",
                        runner.model().config().arch,
                        runner.chat_template().name(),
                        runner.model().kernels().simd.name(),
                        session.ctx_size
                    );
                    Loaded {
                        engine: EngineHandle::start(Arc::clone(&runner), session, opts.queue_size),
                        ctx_size: session.ctx_size,
                        runner,
                        model_id,
                    }
                })
                .map_err(|e| {
                    eprintln!("rusty-llm: cannot load the model: {e}");
                    e.to_string()
                });
            let _ = loading.loaded.set(result);
        });
        axum::serve(listener, router(state, options.max_body_bytes))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        eprintln!("rusty-llm: shut down");
        Ok(())
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

/// An error answered as JSON in OpenAI's shape
/// (`{"error": {"message", "type", "code"}}`).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl ApiError {
    pub(crate) fn with_header(mut self, name: axum::http::HeaderName, value: &'static str) -> Self {
        self.headers
            .push((name, axum::http::HeaderValue::from_static(value)));
        self
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let kind = match self.status.as_u16() {
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({
                "error": { "message": self.message, "type": kind, "code": self.status.as_u16() }
            })),
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

pub(crate) fn error_json(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        headers: Vec::new(),
    }
}
