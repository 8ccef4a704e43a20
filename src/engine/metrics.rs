//! What the [`super::Scheduler`] counts while it runs, as Prometheus metrics
//! (`prometheus-client` types: atomics, cheap to update from the engine
//! thread and to read from a `/metrics` handler).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The scheduler's counters, gauges and latency histograms.
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    /// Prompt tokens of admitted requests (cached ones included).
    pub prompt_tokens: Counter,
    /// Prompt tokens whose KV entries came from a slot's cache.
    pub prefix_cache_hit_tokens: Counter,
    /// Tokens sampled.
    pub generated_tokens: Counter,
    /// Forward passes (engine steps) and the tokens they ran.
    pub steps: Counter,
    pub step_tokens: Counter,
    /// From a request's arrival to its first sampled token.
    pub time_to_first_token: Histogram,
    /// Between two sampled tokens of one request.
    pub inter_token_latency: Histogram,
    /// Requests waiting for a slot.
    pub queue_depth: Gauge,
    /// Slots running a request.
    pub busy_slots: Gauge,
    /// Positions held in the slots' KV caches, and their capacity.
    pub kv_cache_tokens: Gauge,
    pub kv_cache_capacity_tokens: Gauge,
    /// `kv_cache_tokens / kv_cache_capacity_tokens`.
    pub kv_cache_usage: Gauge<f64, AtomicU64>,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            prompt_tokens: Counter::default(),
            prefix_cache_hit_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            steps: Counter::default(),
            step_tokens: Counter::default(),
            // 5 ms … ~82 s.
            time_to_first_token: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            // 1 ms … ~16 s.
            inter_token_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            queue_depth: Gauge::default(),
            busy_slots: Gauge::default(),
            kv_cache_tokens: Gauge::default(),
            kv_cache_capacity_tokens: Gauge::default(),
            kv_cache_usage: Gauge::default(),
        }
    }
}

impl SchedulerMetrics {
    /// Adds every metric to `registry` (names prefixed by the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "prompt_tokens",
            "Prompt tokens of admitted requests",
            self.prompt_tokens.clone(),
        );
        registry.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens reused from a slot's KV cache",
            self.prefix_cache_hit_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            self.generated_tokens.clone(),
        );
        registry.register("engine_steps", "Forward passes run", self.steps.clone());
        registry.register(
            "engine_step_tokens",
            "Tokens run through the model by all forward passes",
            self.step_tokens.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "From a request's arrival to its first generated token",
            Unit::Seconds,
            self.time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "inter_token_latency",
            "Time between two generated tokens of one request",
            Unit::Seconds,
            self.inter_token_latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a free slot",
            self.queue_depth.clone(),
        );
        registry.register(
            "busy_slots",
            "Slots running a request",
            self.busy_slots.clone(),
        );
        registry.register(
            "kv_cache_tokens",
            "Positions held in the slots' KV caches",
            self.kv_cache_tokens.clone(),
        );
        registry.register(
            "kv_cache_capacity_tokens",
            "Positions the slots' KV caches can hold",
            self.kv_cache_capacity_tokens.clone(),
        );
        registry.register(
            "kv_cache_usage_ratio",
            "Share of the KV cache positions in use",
            self.kv_cache_usage.clone(),
        );
    }
}
