//! `GET /metrics` (Prometheus text format) and `GET /slots` (llama-server
//! style): requests by route and status counted here, the engine's
//! counters, gauges and latency histograms from its [`SchedulerMetrics`].
//!
//! [`SchedulerMetrics`]: crate::engine::SchedulerMetrics

use super::AppState;
use super::api::loaded;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::sync::Arc;

/// Prefix of every metric name.
const PREFIX: &str = "rusty_llm";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's pattern (`/v1/models/{id}`), `unmatched` for a 404.
    route: String,
    status: u16,
}

/// What the HTTP layer counts.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
}

/// Inside the router (after routing): carries the matched route pattern
/// over to the response, where [`count_requests`] reads it.
pub(crate) async fn tag_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Counts every answered request by method, route and status.
pub(crate) async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// `GET /metrics`: Prometheus text format (0.0.4).
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register(
        "http_requests",
        "HTTP requests answered, by method, route and status",
        state.metrics.requests.clone(),
    );
    if let Some(Ok(l)) = state.loaded.get() {
        l.engine.metrics().register(&mut registry);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// One slot as `GET /slots` lists it: llama-server's `id`, `n_ctx`,
/// `is_processing`, plus ours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SlotEntry {
    id: usize,
    n_ctx: usize,
    is_processing: bool,
    /// `idle`, `prefill` or `generate`.
    #[schema(value_type = String)]
    state: crate::engine::SlotState,
    /// Tokens whose KV entries the slot holds (reusable by a request that
    /// starts with them).
    tokens_cached: usize,
    #[schema(required = true)]
    request_id: Option<u64>,
    prompt_tokens: usize,
    generated_tokens: usize,
}

/// `GET /slots`: each slot's state, cached tokens and current request.
pub(crate) async fn slots(State(state): State<Arc<AppState>>) -> Response {
    let l = match loaded(&state) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let slots: Vec<SlotEntry> = l
        .engine
        .slots()
        .into_iter()
        .map(|s| SlotEntry {
            id: s.id,
            n_ctx: s.n_ctx,
            is_processing: s.state != crate::engine::SlotState::Idle,
            state: s.state,
            tokens_cached: s.tokens_cached,
            request_id: s.request_id,
            prompt_tokens: s.prompt_tokens,
            generated_tokens: s.generated_tokens,
        })
        .collect();
    axum::Json(slots).into_response()
}
