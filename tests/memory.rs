//! Peak memory of loading and running the default model: the weights are
//! copied into huge pages at load and the file's pages released, so memory
//! must hold them about once (issue 6: peak RSS at most file + KV cache +
//! 100 MB). Its own test binary, so the process measured is this test alone.

mod common;

use rusty_llm::engine::{GenerationOptions, SessionOptions};
use rusty_llm::model::KvType;

/// `VmHWM` (peak resident set) of this process, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn default_model_peak_rss_is_the_file_plus_cache_plus_100_mb() {
    let (Some(path), Some(before)) = (common::default_model(), peak_rss()) else {
        return;
    };
    let file = std::fs::metadata(&path).unwrap().len();
    let runner = common::runner(&path);
    let ctx_size = 640;
    let mut session = runner.session(SessionOptions {
        ctx_size,
        ubatch: 512,
        kv_type: KvType::F16,
    });
    let prompt: Vec<u32> = (0..512).map(|i| 1000 + i).collect();
    session
        .generate(&prompt, &GenerationOptions::greedy(16), |_| true)
        .unwrap();
    let c = runner.model().config();
    let kv = (c.n_layers * ctx_size * (c.k_dim() + c.v_dim()) * 2) as u64;
    let peak = peak_rss().unwrap();
    let limit = before + file + kv + 100_000_000;
    assert!(
        peak <= limit,
        "peak RSS {:.0} MB, limit {:.0} MB (test process {:.0} MB before load + file {:.0} MB + KV {:.1} MB + 100 MB)",
        peak as f64 / 1e6,
        limit as f64 / 1e6,
        before as f64 / 1e6,
        file as f64 / 1e6,
        kv as f64 / 1e6
    );
}
