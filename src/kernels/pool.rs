//! A persistent worker pool for the matrix kernels.
//!
//! A decode step of a small model runs a few hundred matrix-vector products of
//! 10–100 µs each, so the cost of handing work to threads matters as much as the
//! kernels. Spawning per call costs ~10 µs a thread; a general work-stealing pool
//! (rayon) wakes workers through its sleep machinery on every call. This pool
//! keeps its workers hot instead: a job is published by bumping a generation
//! counter, workers spin on it briefly and only then park, and chunks of a job
//! are claimed from one atomic counter so uneven chunks balance themselves.
//!
//! `run` blocks until every chunk is done; the calling thread works too.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How long a worker spins on an idle pool before it parks, in spin-loop hints
/// (roughly 50 µs: longer than the gap between two kernels of a decode step).
const SPIN_BEFORE_PARK: u32 = 20_000;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Bumped once per job; workers compare it with the last one they ran.
    generation: AtomicUsize,
    /// The current job. Written by `run` before `generation` is bumped (Release)
    /// and read by workers after they observe the bump (Acquire).
    job: UnsafeCell<Option<&'static Job>>,
    n_chunks: AtomicUsize,
    next_chunk: AtomicUsize,
    /// Workers that have not yet finished the current job.
    busy: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by `run` while no worker reads it (every worker
// has finished the previous job, `busy == 0`), and read by workers only between
// observing a new generation and decrementing `busy`.
unsafe impl Sync for Shared {}

/// A fixed set of worker threads that execute chunked jobs.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// `run` takes `&self`; this keeps two callers from publishing jobs at once.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ThreadPool {
    /// A pool that computes with `threads` threads in all: the caller of `run`
    /// plus `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            n_chunks: AtomicUsize::new(0),
            next_chunk: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("rusty-llm-worker-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// The default thread count: the number of physical cores.
    pub fn default_threads() -> usize {
        num_cpus::get_physical().max(1)
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(chunk)` once for every chunk in `0..n_chunks`, spread over all
    /// threads, and returns when all calls have returned. A panic in `f` is
    /// re-raised here.
    pub fn run<'a>(&self, n_chunks: usize, f: &'a (dyn Fn(usize) + Sync + 'a)) {
        if n_chunks == 0 {
            return;
        }
        if self.workers.is_empty() || n_chunks == 1 {
            (0..n_chunks).for_each(f);
            return;
        }
        let _one_job_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the reference is only used until this function returns: we wait
        // below until every worker has finished with it (`busy == 0`), so
        // extending its lifetime to 'static is never observable.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(f) };
        // SAFETY: no worker reads `job` now: the previous job ended with busy == 0.
        unsafe { *s.job.get() = Some(job) };
        s.n_chunks.store(n_chunks, Ordering::Relaxed);
        s.next_chunk.store(0, Ordering::Relaxed);
        s.busy.store(self.workers.len(), Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        {
            // Taking the lock orders the bump against a worker about to sleep.
            let _guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.generation.fetch_add(1, Ordering::Release);
        }
        s.wake.notify_all();

        let mine = catch_unwind(AssertUnwindSafe(|| claim_chunks(s, job)));
        while s.busy.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        // SAFETY: all workers are done with the job.
        unsafe { *s.job.get() = None };
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread panicked while running a kernel");
        }
    }
}

fn claim_chunks(s: &Shared, job: &Job) {
    let n = s.n_chunks.load(Ordering::Relaxed);
    loop {
        let chunk = s.next_chunk.fetch_add(1, Ordering::Relaxed);
        if chunk >= n {
            return;
        }
        job(chunk);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0;
    loop {
        // Wait for a new generation: spin first, then park.
        let mut spins = 0;
        loop {
            let generation = s.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                break;
            }
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if spins < SPIN_BEFORE_PARK {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            if s.generation.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
                drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
            }
        }
        // SAFETY: `run` published the job before bumping the generation we saw,
        // and keeps it alive until we decrement `busy`.
        if let Some(job) = unsafe { *s.job.get() }
            && catch_unwind(AssertUnwindSafe(|| claim_chunks(s, job))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.busy.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _guard = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_chunk_runs_exactly_once() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 64, 1000] {
                let counts: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.run(n, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                    "{threads} threads, {n} chunks"
                );
            }
        }
    }

    #[test]
    fn many_short_jobs_borrowing_local_data() {
        let pool = ThreadPool::new(2);
        let mut out = vec![0u64; 64];
        for round in 0..2000u64 {
            let cells: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
            pool.run(64, &|i| cells[i].store(round * i as u64, Ordering::Relaxed));
            for (o, c) in out.iter_mut().zip(&cells) {
                *o = c.load(Ordering::Relaxed);
            }
            assert_eq!(out[63], round * 63);
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let sum = AtomicU64::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn a_panicking_chunk_panics_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|i| assert!(i != 5, "chunk 5 fails"));
        }));
        assert!(result.is_err());
        let sum = AtomicU64::new(0);
        pool.run(10, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
