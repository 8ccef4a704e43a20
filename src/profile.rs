//! `RUSTY_LLM_PROFILE=1`: wall time per operation, summed over the whole run
//! and printed to stderr at exit (matrix products by weight type and shape,
//! attention, norms, sampling, time spent waiting for worker threads).
//!
//! Off by default, and then a scope costs one relaxed load. The times are
//! wall-clock on the calling thread, so with several threads an operation's
//! time includes its share of waiting; `pool wait` isolates the part where
//! the caller had finished its own chunks and waited for the workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static INIT: Once = Once::new();
static TOTALS: Mutex<Option<HashMap<String, Total>>> = Mutex::new(None);

#[derive(Default, Clone, Copy)]
struct Total {
    calls: u64,
    time: Duration,
}

/// Whether profiling is on (`RUSTY_LLM_PROFILE` set to anything but `0`).
#[inline]
pub fn enabled() -> bool {
    INIT.call_once(|| {
        let on = std::env::var("RUSTY_LLM_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        ENABLED.store(on, Ordering::Relaxed);
    });
    ENABLED.load(Ordering::Relaxed)
}

/// Times the rest of the enclosing block under the name `name()` (only
/// called when profiling is on).
#[must_use = "the scope measures until it is dropped"]
pub fn scope(name: impl FnOnce() -> String) -> Option<Scope> {
    enabled().then(|| Scope {
        name: name(),
        start: Instant::now(),
    })
}

/// A running measurement; adds its time to the totals when dropped.
pub struct Scope {
    name: String,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        add(std::mem::take(&mut self.name), self.start.elapsed());
    }
}

/// Adds one call of `time` to `name`'s total.
pub fn add(name: String, time: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let t = totals
        .get_or_insert_with(HashMap::new)
        .entry(name)
        .or_default();
    t.calls += 1;
    t.time += time;
}

/// The totals as a table, largest first; `None` when profiling is off or
/// nothing was measured.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<(&String, &Total)> = totals.as_ref()?.iter().collect();
    rows.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(b.0)));
    let mut out = format!(
        "{:<44} {:>9} {:>11} {:>10}\n",
        "operation", "calls", "total ms", "µs/call"
    );
    for (name, t) in rows {
        let ms = t.time.as_secs_f64() * 1e3;
        let per_call = t.time.as_secs_f64() * 1e6 / t.calls as f64;
        out += &format!("{name:<44} {:>9} {ms:>11.1} {per_call:>10.1}\n", t.calls);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_by_name() {
        add("test op".into(), Duration::from_millis(2));
        add("test op".into(), Duration::from_millis(3));
        let totals = TOTALS.lock().unwrap();
        let t = totals.as_ref().unwrap()["test op"];
        assert_eq!((t.calls, t.time), (2, Duration::from_millis(5)));
    }
}
