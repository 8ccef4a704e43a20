//! A persistent worker pool for the matrix kernels.
//!
//! A decode step of a small model runs a few hundred matrix-vector products of
//! 10–100 µs each, so the cost of handing work to threads matters as much as the
//! kernels. Spawning per call costs ~10 µs a thread; a general work-stealing pool
//! (rayon) wakes workers through its sleep machinery on every call. This pool
//! keeps its workers hot instead: a job is published by bumping a generation
//! counter, workers spin on it briefly and only then park, and chunks of a job
//! are claimed from one atomic counter so uneven chunks balance themselves.
//! Once every chunk is claimed `run` closes the job and waits only for the
//! workers that joined it, so a worker that was parked (or descheduled on a
//! busy machine) and wakes late is never waited for: the caller has done its
//! share of the work instead.
//!
//! `run` blocks until every chunk is done; the calling thread works too.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How long a worker spins on an idle pool before it parks, in spin-loop hints
/// (roughly 50 µs: longer than the gap between two kernels of a decode step).
const SPIN_BEFORE_PARK: u32 = 20_000;

type Job = dyn Fn(usize) + Sync;

/// `join` word layout: the job's generation in the high 32 bits, then a
/// "closed" bit, then the number of workers that joined.
const CLOSED: u64 = 1 << 31;
const JOINED: u64 = CLOSED - 1;

/// A value on a cache line of its own: the chunk counter is hammered by every
/// thread and must not share a line with what parked or spinning workers
/// read.
#[repr(align(128))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    /// Bumped once per job; workers compare it with the last one they ran.
    generation: Line<AtomicUsize>,
    /// The current job. Written by `run` before `generation` is bumped and
    /// read only by workers that joined it (see `join`).
    job: UnsafeCell<Option<&'static Job>>,
    n_chunks: AtomicUsize,
    next_chunk: Line<AtomicUsize>,
    /// Which job is open to workers, whether `run` has closed it, and how
    /// many workers joined it (see `CLOSED`). A worker joins with a
    /// compare-exchange on the generation it saw, so a late worker can never
    /// join a job that `run` already closed (or a newer one by mistake), and
    /// `run` waits only for workers that joined: a parked worker that wakes
    /// late costs the caller nothing.
    join: Line<AtomicU64>,
    /// Joined workers that have finished the current job.
    done: AtomicU64,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers parked (or about to park) on `wake`; `run` skips the wake-up
    /// call when there are none.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by `run` while no worker reads it (the
// previous job is closed and every worker that joined it is done), and read
// by workers only between joining a job and counting themselves `done`.
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
            generation: Line(AtomicUsize::new(0)),
            job: UnsafeCell::new(None),
            n_chunks: AtomicUsize::new(0),
            next_chunk: Line(AtomicUsize::new(0)),
            join: Line(AtomicU64::new(CLOSED)),
            done: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
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
        // SAFETY: the reference is only used until this function returns: we
        // close the job below and wait until every worker that joined it is
        // done, so extending its lifetime to 'static is never observable.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(f) };
        // SAFETY: no worker reads `job` now: the previous job is closed and
        // its workers are done.
        unsafe { *s.job.get() = Some(job) };
        s.n_chunks.store(n_chunks, Ordering::Relaxed);
        s.next_chunk.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let generation = s.generation.load(Ordering::Relaxed).wrapping_add(1);
        s.join.store(tag(generation), Ordering::Release);
        // SeqCst pairs with the worker's `sleepers` increment then generation
        // check: either it sees this bump or we see it asleep and wake it.
        s.generation.store(generation, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) != 0 {
            // Taking the lock orders the wake-up after a worker about to wait.
            drop(s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner()));
            s.wake.notify_all();
        }

        let mine = catch_unwind(AssertUnwindSafe(|| claim_chunks(s, job)));
        // Every chunk is claimed: close the job to latecomers and wait for the
        // workers that joined it.
        let joined = s.join.fetch_or(CLOSED, Ordering::AcqRel) & JOINED;
        let waited = crate::profile::scope(|| "pool wait (caller idle)".into());
        while s.done.load(Ordering::Acquire) != joined {
            std::hint::spin_loop();
        }
        drop(waited);
        // SAFETY: every worker that joined is done with the job; no other can
        // join a closed one.
        unsafe { *s.job.get() = None };
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread panicked while running a kernel");
        }
    }
}

/// The `join` word of an open job of `generation` that no worker joined yet.
fn tag(generation: usize) -> u64 {
    (generation as u64 & 0xffff_ffff) << 32
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

/// Joins the job of `generation` if it is still open.
fn join(s: &Shared, generation: usize) -> bool {
    let mut cur = s.join.load(Ordering::Acquire);
    loop {
        if cur & !(CLOSED | JOINED) != tag(generation) || cur & CLOSED != 0 {
            return false;
        }
        match s
            .join
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
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
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::Acquire) {
                drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if !join(s, seen) {
            continue;
        }
        // SAFETY: we joined the open job of the generation we saw; `run`
        // published it before opening it and keeps it alive until we count
        // ourselves done.
        if let Some(job) = unsafe { *s.job.get() }
            && catch_unwind(AssertUnwindSafe(|| claim_chunks(s, job))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
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
    fn jobs_after_parking_mix_with_back_to_back_jobs() {
        for threads in [2, 3] {
            let pool = ThreadPool::new(threads);
            for round in 0..200u64 {
                if round % 50 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                let sum = AtomicU64::new(0);
                let n = 1 + (round as usize % 9);
                pool.run(n, &|i| {
                    sum.fetch_add(i as u64 + 1, Ordering::Relaxed);
                });
                assert_eq!(sum.load(Ordering::Relaxed), (n * (n + 1) / 2) as u64);
            }
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
