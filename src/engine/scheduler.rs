//! [`Scheduler`]: many generations at once on one loaded model (continuous
//! batching).
//!
//! One engine thread owns every forward pass (the worker pool is driven by
//! one thread at a time). It holds `parallel` slots, each a KV cache of
//! `ctx_size` positions and the tokens in it. Requests wait in a bounded
//! queue until a slot is free; between two steps the thread admits them,
//! drops the ones whose client went away, and then runs one step: one
//! [`Model::forward_batch`] over the next token of every generating sequence
//! and the next prompt chunk of sequences still prefilling. Prompts are cut
//! into chunks of `ubatch` tokens counted from the sequence's own start (at
//! most `ubatch` prompt tokens per step), so streams keep flowing while a long
//! prompt is read, and every sequence's kernels are those its own chunk or
//! single token picks: each sequence's output is the one it would have
//! alone ([`Session`](super::Session) cuts its prompt the same way).
//!
//! A request whose prompt starts with the tokens a free slot still holds (a
//! chat that continues, a shared system prompt) reuses those KV entries and
//! prefills only the rest.
//!
//! Embedding requests ([`EmbedJob`]) share the queue but need no slot: the
//! thread runs them between two steps.

use super::embed::{EmbedOptions, Embedding};
use super::generate::check_request;
use super::generate::{Decoding, GenerateError, Generation, GenerationOptions, Next, Piece};
use super::logprobs::TokenLogprob;
use super::metrics::SchedulerMetrics;
use super::runner::Runner;
use super::session::{SessionOptions, reusable_prefix};
use crate::model::{ForwardScratch, KvCache, Logits, ModelError, Segment};
use crate::tokenizer::TokenId;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc;

/// Sizes of a [`Scheduler`].
#[derive(Debug, Clone, Copy)]
pub struct SchedulerOptions {
    /// Sequence slots: requests generated at once.
    pub parallel: usize,
    /// Per slot: positions of its KV cache (`ctx_size`), prompt tokens per
    /// chunk (`ubatch`) and the cache type.
    pub session: SessionOptions,
    /// Requests that may wait for a free slot; more are refused
    /// ([`SubmitError::Busy`]).
    pub queue_size: usize,
}

/// One generation to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub tokens: Vec<TokenId>,
    pub options: GenerationOptions,
    /// Reuse the KV entries of a prompt prefix a slot still holds. Off, the
    /// prompt is prefilled from scratch, so the answer does not depend on
    /// earlier requests: a prompt prefilled in other chunks rounds
    /// differently, which can flip a near-tie greedy pick (llama-server's
    /// `cache_prompt`).
    pub cache_prompt: bool,
}

/// What a request reports while it runs.
#[derive(Debug)]
pub enum Event {
    /// A piece of generated text (possibly empty) and, when asked for, the
    /// log-probabilities of the tokens behind it.
    Piece {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The generation finished; no event follows.
    Done(Generation),
    /// It failed (a request the slot cannot hold, a model error); no event
    /// follows.
    Error(GenerateError),
}

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: try again later.
    #[error("every slot is busy and the queue is full")]
    Busy,
    /// The engine thread has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// A submitted request: its events, in order. Dropping it cancels the
/// request (its slot is freed before the next step).
#[derive(Debug)]
pub struct Handle {
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
    cancelled: Arc<AtomicBool>,
}

impl Handle {
    /// The request's number (shown by [`Scheduler::slots`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event; `None` once the last one was taken (or the engine
    /// stopped).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// [`Handle::next`] for threads outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// Waits for the whole generation, calling `on_piece` with each piece of
    /// text as it comes (blocking; not from inside an async runtime).
    pub fn wait(mut self, mut on_piece: impl FnMut(&str)) -> Result<Generation, GenerateError> {
        while let Some(event) = self.blocking_next() {
            match event {
                Event::Piece { text, .. } => on_piece(&text),
                Event::Done(g) => return Ok(g),
                Event::Error(e) => return Err(e),
            }
        }
        Err(GenerateError::Stopped)
    }

    /// Stops the request before its next step.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// What a slot is doing, as [`Scheduler::slots`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    Idle,
    /// Reading its prompt.
    Prefill,
    /// Generating.
    Generate,
}

/// One slot, as [`Scheduler::slots`] reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub id: usize,
    pub state: SlotState,
    /// Positions of its KV cache.
    pub n_ctx: usize,
    /// Tokens whose KV entries it holds (kept after a request for the next
    /// one to reuse).
    pub tokens_cached: usize,
    /// The request it runs.
    pub request_id: Option<u64>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

/// A generation waiting for a slot.
struct Queued {
    id: u64,
    request: Request,
    events: mpsc::UnboundedSender<Event>,
    cancelled: Arc<AtomicBool>,
    arrived: Instant,
}

/// Texts to embed (tokenized and checked by the caller), run between two
/// steps; the vectors, or why not, come back on `reply`.
pub struct EmbedJob {
    pub inputs: Vec<Vec<TokenId>>,
    pub options: EmbedOptions,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Embedding>, String>>,
}

/// Work for the engine thread: generations wait for a slot; embeddings need
/// none and run in `Engine::admit`, between two steps.
enum Job {
    Generate(Queued),
    Embed(EmbedJob),
}

impl Job {
    fn cancelled(&self) -> bool {
        match self {
            Job::Generate(q) => q.cancelled.load(Ordering::Relaxed) || q.events.is_closed(),
            Job::Embed(e) => e.reply.is_closed(),
        }
    }
}

/// State shared by the [`Scheduler`] handle and its engine thread.
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    /// Signalled when a job arrives or the scheduler shuts down.
    wake: Condvar,
    shutdown: AtomicBool,
    slots: Mutex<Vec<SlotStatus>>,
    metrics: SchedulerMetrics,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Job>> {
        // A panic elsewhere cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops queued jobs whose client went away.
    fn purge(&self, queue: &mut VecDeque<Job>) {
        queue.retain(|job| !job.cancelled());
        self.metrics.queue_depth.set(queue.len() as i64);
    }
}

/// Runs requests from many clients at once on one model.
///
/// ```no_run
/// use rusty_llm::engine::{GenerationOptions, Request, Runner, Scheduler, SchedulerOptions, SessionOptions};
/// use std::sync::Arc;
/// let runner = Arc::new(Runner::from_path("models/gemma-3-270m-q4_k_m.gguf")?);
/// let options = SchedulerOptions { parallel: 4, session: SessionOptions::new(&runner), queue_size: 16 };
/// let scheduler = Scheduler::start(Arc::clone(&runner), options);
/// let handles: Vec<_> = ["Once upon a time", "The capital of France is"]
///     .iter()
///     .map(|p| {
///         let request = Request {
///             tokens: runner.tokenize_prompt(p),
///             options: GenerationOptions::greedy(32),
///             cache_prompt: true,
///         };
///         scheduler.submit(request)
///     })
///     .collect::<Result<_, _>>()?;
/// for handle in handles {
///     println!("{}", handle.wait(|_| {})?.text);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Scheduler {
    shared: Arc<Shared>,
    options: SchedulerOptions,
    queue_size: usize,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .finish()
    }
}

impl Scheduler {
    /// Starts the engine thread for `runner`.
    pub fn start(runner: Arc<Runner>, options: SchedulerOptions) -> Self {
        let options = SchedulerOptions {
            parallel: options.parallel.max(1),
            session: SessionOptions {
                ctx_size: options.session.ctx_size.max(1),
                ubatch: options.session.ubatch.max(1),
                ..options.session
            },
            ..options
        };
        let idle = |id| SlotStatus {
            id,
            state: SlotState::Idle,
            n_ctx: options.session.ctx_size,
            tokens_cached: 0,
            request_id: None,
            prompt_tokens: 0,
            generated_tokens: 0,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            slots: Mutex::new((0..options.parallel).map(idle).collect()),
            metrics: SchedulerMetrics::default(),
        });
        shared
            .metrics
            .kv_cache_capacity_tokens
            .set((options.parallel * options.session.ctx_size) as i64);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rusty-llm-engine".into())
                .spawn(move || Engine::new(&runner, &shared, options).run())
                .expect("spawning the engine thread")
        };
        Self {
            shared,
            options,
            queue_size: options.queue_size,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
        }
    }

    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    /// Queues a request; never waits. Refused when `queue_size` jobs
    /// already wait.
    pub fn submit(&self, request: Request) -> Result<Handle, SubmitError> {
        let (events, rx) = mpsc::unbounded_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.queue(Job::Generate(Queued {
            id,
            request,
            events,
            cancelled: Arc::clone(&cancelled),
            arrived: Instant::now(),
        }))?;
        Ok(Handle {
            id,
            events: rx,
            cancelled,
        })
    }

    /// Queues an embedding job; never waits. Refused like [`Scheduler::submit`].
    pub fn submit_embed(&self, job: EmbedJob) -> Result<(), SubmitError> {
        self.queue(Job::Embed(job))
    }

    fn queue(&self, job: Job) -> Result<(), SubmitError> {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(SubmitError::Stopped);
        }
        let mut queue = self.shared.queue();
        self.shared.purge(&mut queue);
        if queue.len() >= self.queue_size {
            return Err(SubmitError::Busy);
        }
        queue.push_back(job);
        self.shared.metrics.queue_depth.set(queue.len() as i64);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Every slot's state, as of the last step.
    pub fn slots(&self) -> Vec<SlotStatus> {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        let mut queue = self.shared.queue();
        self.shared.purge(&mut queue);
        queue.len()
    }

    pub fn metrics(&self) -> &SchedulerMetrics {
        &self.shared.metrics
    }
}

impl Drop for Scheduler {
    /// Stops the engine thread after its current step; running requests end
    /// without a result ([`GenerateError::Stopped`] for [`Handle::wait`]).
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        drop(self.shared.queue());
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A slot's KV cache and the tokens in it, with the request it runs.
struct Slot<'r> {
    cache: KvCache,
    /// Tokens whose keys and values are in `cache`, in order.
    tokens: Vec<TokenId>,
    /// When it last ran a request (engine steps), for least-recently-used
    /// choice.
    last_used: u64,
    active: Option<Active<'r>>,
}

/// A request in a slot.
struct Active<'r> {
    id: u64,
    events: mpsc::UnboundedSender<Event>,
    cancelled: Arc<AtomicBool>,
    decoding: Decoding<'r>,
    /// Tokens to run before the next sample: the prompt's uncached rest, then
    /// each sampled token. `done` of them have run.
    pending: Vec<TokenId>,
    done: usize,
    /// A sampled token to run once `pending` (a context shift's re-prefill)
    /// is done, instead of sampling after it.
    then: Option<TokenId>,
    prompt_tokens: usize,
    cached_tokens: usize,
    admitted: Instant,
    /// Milliseconds from admission to the prompt's logits, once ready.
    prefill_ms: Option<f64>,
    last_token_at: Option<Instant>,
}

impl Active<'_> {
    /// The next chunk of `pending` this sequence runs (`ubatch` at most),
    /// and whether logits follow it.
    fn next_chunk(&self, ubatch: usize) -> (std::ops::Range<usize>, bool) {
        let end = (self.done + ubatch).min(self.pending.len());
        let last = end == self.pending.len() && self.then.is_none();
        (self.done..end, last)
    }
}

/// A piece handler that streams pieces to the request's events; `false`
/// (stop) once the client cancelled or went away.
fn stream_to<'a>(
    events: &'a mpsc::UnboundedSender<Event>,
    cancelled: &'a AtomicBool,
) -> impl FnMut(Piece<'_>) -> bool + 'a {
    move |piece| {
        !cancelled.load(Ordering::Relaxed)
            && events
                .send(Event::Piece {
                    text: piece.text.to_string(),
                    logprobs: piece.logprobs.to_vec(),
                })
                .is_ok()
    }
}

/// The engine thread's state.
struct Engine<'r> {
    runner: &'r Runner,
    shared: &'r Shared,
    options: SchedulerOptions,
    slots: Vec<Slot<'r>>,
    scratch: ForwardScratch,
    steps: u64,
}

impl<'r> Engine<'r> {
    fn new(runner: &'r Runner, shared: &'r Shared, options: SchedulerOptions) -> Self {
        let session = options.session;
        let slots = (0..options.parallel)
            .map(|_| Slot {
                cache: runner.model().new_cache(session.kv_type, session.ctx_size),
                tokens: Vec::new(),
                last_used: 0,
                active: None,
            })
            .collect();
        Self {
            runner,
            shared,
            options,
            slots,
            scratch: ForwardScratch::default(),
            steps: 0,
        }
    }

    fn run(mut self) {
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            self.drop_cancelled();
            let idle = self.slots.iter().all(|s| s.active.is_none());
            if idle {
                // Slots just freed by cancellation must show as idle before
                // `admit` blocks waiting for work (else `/slots` and the
                // metrics keep them busy until the next request).
                self.publish();
            }
            self.admit(idle);
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step();
            }
            self.publish();
        }
    }

    /// Frees the slots of requests whose client went away.
    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.cancelled.load(Ordering::Relaxed) || a.events.is_closed())
            {
                slot.active = None;
            }
        }
    }

    /// Moves queued requests into free slots; with `wait`, first blocks
    /// until there is one (or the scheduler shuts down).
    fn admit(&mut self, wait: bool) {
        let mut queue = self.shared.queue();
        self.shared.purge(&mut queue);
        if wait {
            while queue.is_empty() && !self.shared.shutdown.load(Ordering::Relaxed) {
                queue = self
                    .shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        // Embeddings need no slot: take them all, run them once the queue
        // is unlocked.
        let mut embeds = Vec::new();
        let mut i = 0;
        while i < queue.len() {
            if matches!(queue[i], Job::Embed(_)) {
                if let Some(Job::Embed(e)) = queue.remove(i) {
                    embeds.push(e);
                }
            } else {
                i += 1;
            }
        }
        while self.slots.iter().any(|s| s.active.is_none()) {
            let Some(job) = queue.pop_front() else { break };
            match job {
                Job::Generate(q) if !q.cancelled.load(Ordering::Relaxed) => self.start(q),
                Job::Generate(_) | Job::Embed(_) => {}
            }
        }
        self.shared.metrics.queue_depth.set(queue.len() as i64);
        drop(queue);
        for job in embeds {
            // The client went away while the job waited: skip the work.
            if job.reply.is_closed() {
                continue;
            }
            let result = self
                .runner
                .embed_tokens(&job.inputs, &job.options)
                .map_err(|e| e.to_string());
            let _ = job.reply.send(result);
        }
    }

    /// Checks a request and puts it into the free slot that suits it best.
    fn start(&mut self, q: Queued) {
        let Queued {
            id,
            request,
            events,
            cancelled,
            arrived,
        } = q;
        let prompt = &request.tokens;
        let ctx_size = self.options.session.ctx_size;
        let n_vocab = self.runner.model().config().n_vocab;
        let checked = if prompt.is_empty() {
            Err(GenerateError::EmptyPrompt)
        } else if prompt.len() > ctx_size {
            Err(GenerateError::PromptTooLong {
                prompt: prompt.len(),
                ctx_size,
            })
        } else if let Some(&token) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            Err(ModelError::TokenOutOfRange { token, n_vocab }.into())
        } else {
            check_request(self.runner, prompt.len(), &request.options, ctx_size).and_then(|()| {
                Decoding::new(self.runner.tokenizer(), prompt, &request.options, arrived)
            })
        };
        let decoding = match checked {
            Ok(d) => d,
            Err(e) => {
                let _ = events.send(Event::Error(e));
                return;
            }
        };
        let index = self.choose_slot(prompt, request.cache_prompt);
        let slot = &mut self.slots[index];
        let reused = if request.cache_prompt {
            reusable_prefix(&slot.tokens, prompt)
        } else {
            0
        };
        slot.tokens.truncate(reused);
        slot.last_used = self.steps;
        let m = &self.shared.metrics;
        m.prompt_tokens.inc_by(prompt.len() as u64);
        m.prefix_cache_hit_tokens.inc_by(reused as u64);
        slot.active = Some(Active {
            id,
            events,
            cancelled,
            decoding,
            pending: prompt[reused..].to_vec(),
            done: 0,
            then: None,
            prompt_tokens: prompt.len(),
            cached_tokens: reused,
            admitted: Instant::now(),
            prefill_ms: None,
            last_token_at: None,
        });
    }

    /// The free slot whose cached tokens share the longest prefix with
    /// `prompt`, if that prefix covers at least half of what the slot holds
    /// (llama-server's rule: reuse where most of a cache serves); otherwise
    /// the least recently used free slot, so recent conversations keep
    /// their caches.
    fn choose_slot(&self, prompt: &[TokenId], cache_prompt: bool) -> usize {
        let free = || {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
        };
        if cache_prompt {
            let best = free()
                .map(|(i, s)| (i, reusable_prefix(&s.tokens, prompt), s.tokens.len()))
                .filter(|&(_, common, held)| common > 0 && 2 * common >= held)
                .max_by_key(|&(_, common, _)| common);
            if let Some((i, _, _)) = best {
                return i;
            }
        }
        free()
            .min_by_key(|(_, s)| (!s.tokens.is_empty(), s.last_used))
            .map(|(i, _)| i)
            .expect("admit checks for a free slot")
    }

    /// One forward pass over the next token or prompt chunk of every active
    /// sequence, then sampling for those whose logits came out.
    fn step(&mut self) {
        let ubatch = self.options.session.ubatch;
        // Which slots run which chunk: every single token, and prompt chunks
        // in slot order while they fit in one `ubatch` (at least one).
        let mut plan: Vec<(usize, std::ops::Range<usize>, bool)> = Vec::new();
        let mut prompt_tokens = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(active) = &slot.active else { continue };
            let (chunk, logits) = active.next_chunk(ubatch);
            if chunk.len() > 1 {
                if prompt_tokens > 0 && prompt_tokens + chunk.len() > ubatch {
                    continue;
                }
                prompt_tokens += chunk.len();
            }
            plan.push((i, chunk, logits));
        }
        let batch = plan.iter().any(|(_, chunk, _)| chunk.len() > 1);
        let pool = if batch {
            self.runner.batch_pool()
        } else {
            self.runner.pool()
        };
        let mut segments: Vec<Segment<'_>> = Vec::with_capacity(plan.len());
        let mut planned = plan.iter().peekable();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some((_, chunk, logits)) = planned.next_if(|entry| entry.0 == i) else {
                continue;
            };
            let active = slot.active.as_ref().expect("planned slots are active");
            segments.push(Segment {
                cache: &mut slot.cache,
                tokens: &active.pending[chunk.clone()],
                pos0: slot.tokens.len(),
                logits: if *logits { Logits::Last } else { Logits::None },
            });
        }
        let n_tokens: usize = segments.iter().map(|s| s.tokens.len()).sum();
        // Taken out of `self` while the logits borrow it and the slots change.
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self
            .runner
            .model()
            .forward_batch(pool, &mut segments, &mut scratch, None);
        drop(segments);
        self.steps += 1;
        let m = &self.shared.metrics;
        m.steps.inc();
        m.step_tokens.inc_by(n_tokens as u64);
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                // Nothing in one sequence makes a pass fail (tokens and
                // positions were checked), so every sequence in it shares the
                // error.
                let message = e.to_string();
                for (i, _, _) in plan {
                    let slot = &mut self.slots[i];
                    if let Some(active) = slot.active.take() {
                        let e = GenerateError::BatchFailed(message.clone());
                        let _ = active.events.send(Event::Error(e));
                    }
                    slot.tokens.clear();
                }
                self.scratch = scratch;
                return;
            }
        };
        let n_vocab = self.runner.model().config().n_vocab;
        let mut rows = logits.chunks_exact(n_vocab);
        for (i, chunk, has_logits) in plan {
            let slot = &mut self.slots[i];
            let active = slot.active.as_mut().expect("planned slots are active");
            slot.tokens
                .extend_from_slice(&active.pending[chunk.clone()]);
            active.done = chunk.end;
            if active.done < active.pending.len() {
                continue;
            }
            if !has_logits {
                // A context shift's re-prefill is done: run the sampled token.
                let token = active.then.take().expect("no logits only before a token");
                active.pending = vec![token];
                active.done = 0;
                continue;
            }
            let row = rows
                .next()
                .expect("one row of logits per sampling sequence");
            let next = self.sample(i, row);
            self.finish_or_feed(i, next);
        }
        self.scratch = scratch;
    }

    /// Samples slot `i`'s next token from `logits` and streams its text.
    fn sample(&mut self, i: usize, logits: &[f32]) -> Result<Next, GenerateError> {
        let active = self.slots[i]
            .active
            .as_mut()
            .expect("sampled slots are active");
        active
            .prefill_ms
            .get_or_insert_with(|| active.admitted.elapsed().as_secs_f64() * 1e3);
        let before = active.decoding.generated();
        let mut on_piece = stream_to(&active.events, &active.cancelled);
        let next = active.decoding.advance(logits, &mut on_piece);
        let m = &self.shared.metrics;
        let now = Instant::now();
        match active.last_token_at.replace(now) {
            None => m
                .time_to_first_token
                .observe(active.decoding.time_to_first_token_ms().unwrap_or(0.0) / 1e3),
            Some(previous) => m
                .inter_token_latency
                .observe((now - previous).as_secs_f64()),
        }
        m.generated_tokens
            .inc_by((active.decoding.generated() - before) as u64);
        next
    }

    /// Queues the sampled token of slot `i` (shifting a full context if the
    /// request allows it), or ends its request.
    fn finish_or_feed(&mut self, i: usize, next: Result<Next, GenerateError>) {
        let ctx_size = self.options.session.ctx_size;
        let slot = &mut self.slots[i];
        let active = slot.active.as_mut().expect("sampled slots are active");
        let stop = match next {
            Ok(Next::Feed(token)) if slot.tokens.len() < ctx_size => {
                active.pending = vec![token];
                active.done = 0;
                return;
            }
            Ok(Next::Feed(token)) if active.decoding.options().context_shift => {
                // As `Session::shift_context(1)`: keep the first token and
                // the newer half of the rest, recompute their cache, then
                // run the token.
                let rest = &slot.tokens[1..];
                let mut kept = slot.tokens[..1].to_vec();
                kept.extend_from_slice(&rest[rest.len() / 2..]);
                slot.tokens.clear();
                active.pending = kept;
                active.done = 0;
                active.then = Some(token);
                return;
            }
            Ok(Next::Feed(_)) => Err(GenerateError::ContextFull { ctx_size }),
            Ok(Next::Stop(reason)) => Ok(reason),
            Err(e) => Err(e),
        };
        let active = slot.active.take().expect("sampled slots are active");
        // The slot is free before its client hears the end, so a client that
        // reads `/slots` or `/metrics` right after sees it free.
        self.publish();
        let event = match stop {
            Ok(reason) => {
                let Active {
                    decoding,
                    events,
                    cancelled,
                    cached_tokens,
                    prefill_ms,
                    ..
                } = active;
                let mut on_piece = stream_to(&events, &cancelled);
                let g = decoding.finish(
                    reason,
                    &mut on_piece,
                    cached_tokens,
                    prefill_ms.unwrap_or(0.0),
                );
                let _ = events.send(Event::Done(g));
                return;
            }
            Err(e) => Event::Error(e),
        };
        let _ = active.events.send(event);
    }

    /// Publishes the slots' state and the gauges.
    fn publish(&self) {
        let m = &self.shared.metrics;
        let mut busy = 0;
        let mut cached = 0;
        let mut slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        for (status, slot) in slots.iter_mut().zip(&self.slots) {
            status.tokens_cached = slot.tokens.len();
            cached += slot.tokens.len();
            match &slot.active {
                None => {
                    status.state = SlotState::Idle;
                    status.request_id = None;
                }
                Some(a) => {
                    busy += 1;
                    status.state = if a.prefill_ms.is_none() {
                        SlotState::Prefill
                    } else {
                        SlotState::Generate
                    };
                    status.request_id = Some(a.id);
                    status.prompt_tokens = a.prompt_tokens;
                    status.generated_tokens = a.decoding.generated();
                }
            }
        }
        drop(slots);
        m.busy_slots.set(busy);
        m.kv_cache_tokens.set(cached as i64);
        let capacity = (self.options.parallel * self.options.session.ctx_size).max(1);
        m.kv_cache_usage.set(cached as f64 / capacity as f64);
    }
}
