//! The inference worker: one thread owns the model's session and runs jobs
//! from a bounded queue, streaming events back over a channel per job, so the
//! async runtime never blocks on a forward pass. Generations and embedding
//! requests share the queue, so only this thread ever drives the pool.

use crate::engine::{
    EmbedOptions, Embedding, Generation, GenerationOptions, Runner, Session, SessionOptions,
    TokenLogprob,
};
use crate::tokenizer::TokenId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// What a job reports while it runs.
#[derive(Debug)]
pub enum Event {
    /// A piece of generated text (possibly empty) and, when asked for, the
    /// log-probabilities of the tokens behind it.
    Piece {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The generation finished.
    Done(Generation),
    /// It failed (bad request found late, context full, …).
    Error(String),
}

/// One generation request for the worker.
pub struct Job {
    pub tokens: Vec<TokenId>,
    pub options: GenerationOptions,
    pub events: mpsc::UnboundedSender<Event>,
    /// Set by the handler when its client went away.
    pub cancelled: Arc<AtomicBool>,
    /// Reuse the KV entries of a prompt prefix the previous job left. Off,
    /// the prompt is prefilled from scratch, so the answer does not depend on
    /// the previous request: batch and single-token passes round differently,
    /// which can flip a near-tie greedy pick (llama-server's `cache_prompt`).
    pub cache_prompt: bool,
}

/// One embedding request for the worker: inputs tokenized and checked by
/// the handler; the vectors (or the error) come back on `reply`.
pub struct EmbedJob {
    pub inputs: Vec<Vec<TokenId>>,
    pub options: EmbedOptions,
    pub reply: oneshot::Sender<Result<Vec<Embedding>, String>>,
}

/// What the worker runs.
enum Work {
    Generate(Job),
    Embed(EmbedJob),
}

/// The queue into the worker.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Work>,
}

/// Why a job was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full: answer 503 and let the client retry.
    Busy,
    /// The worker has stopped.
    Stopped,
}

impl EngineHandle {
    /// Starts the worker thread for `runner` with room for `queue` waiting jobs.
    pub fn start(runner: Arc<Runner>, session: SessionOptions, queue: usize) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Work>(queue.max(1));
        std::thread::Builder::new()
            .name("rusty-llm-engine".into())
            .spawn(move || {
                // One session, reused across requests: a request that starts
                // like the previous one (a continuing chat, a shared system
                // prompt) prefills only what differs.
                let mut session = Session::new(&runner, session);
                while let Some(work) = rx.blocking_recv() {
                    match work {
                        Work::Generate(job) => run(&mut session, job),
                        Work::Embed(job) => embed(&runner, job),
                    }
                }
            })
            .expect("spawning the engine thread");
        Self { jobs }
    }

    /// Queues a generation; never waits.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.queue(Work::Generate(job))
    }

    /// Queues an embedding request; never waits.
    pub fn submit_embed(&self, job: EmbedJob) -> Result<(), SubmitError> {
        self.queue(Work::Embed(job))
    }

    fn queue(&self, work: Work) -> Result<(), SubmitError> {
        self.jobs.try_send(work).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Busy,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
        })
    }
}

fn embed(runner: &Runner, job: EmbedJob) {
    // The client went away while the job waited: skip the work.
    if job.reply.is_closed() {
        return;
    }
    let result = runner
        .embed_tokens(&job.inputs, &job.options)
        .map_err(|e| e.to_string());
    let _ = job.reply.send(result);
}

fn run(session: &mut Session<'_>, job: Job) {
    if job.cancelled.load(Ordering::Relaxed) {
        return;
    }
    if !job.cache_prompt {
        session.reset();
    }
    let events = &job.events;
    let result = session.generate_pieces(&job.tokens, &job.options, |piece| {
        // A closed receiver means the client disconnected: stop at once.
        !job.cancelled.load(Ordering::Relaxed)
            && events
                .send(Event::Piece {
                    text: piece.text.to_string(),
                    logprobs: piece.logprobs.to_vec(),
                })
                .is_ok()
    });
    let _ = match result {
        Ok(g) => events.send(Event::Done(g)),
        Err(e) => events.send(Event::Error(e.to_string())),
    };
}
