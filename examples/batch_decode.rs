//! What a continuous batch costs per decode step: `Model::forward_batch` over
//! k sequences of one token each (their own KV caches, as the server's slots
//! run them), for k = 1, 2, 4, 8 by default, interleaved over rounds; prints
//! the median and best ms per step and the tokens/s they give. With
//! `RUSTY_LLM_PROFILE=1` also the time per operation.
//!
//!     cargo run --release --example batch_decode -- MODEL [k,k,…] [threads]

use rusty_llm::engine::{LoadOptions, Runner};
use rusty_llm::model::{ForwardScratch, KvType, Logits, Segment};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: batch_decode MODEL [k,k,…] [threads]")?;
    let ks: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 2, 4, 8],
    };
    let threads = match args.next() {
        Some(t) => t.parse()?,
        None => 2,
    };
    let options = LoadOptions {
        threads,
        threads_batch: threads,
        ..LoadOptions::default()
    };
    let runner = Runner::load(&path, &options)?;
    let model = runner.model();
    let (rounds, steps) = (3, 16);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
    for _ in 0..rounds {
        for (k, times) in ks.iter().zip(&mut times) {
            let mut caches: Vec<_> = (0..*k)
                .map(|_| model.new_cache(KvType::F16, steps + 1))
                .collect();
            let tokens: Vec<[u32; 1]> = (0..*k).map(|i| [100 + i as u32]).collect();
            let mut scratch = ForwardScratch::default();
            let start = Instant::now();
            for pos in 0..steps {
                let mut segments: Vec<Segment<'_>> = caches
                    .iter_mut()
                    .zip(&tokens)
                    .map(|(cache, token)| Segment {
                        cache,
                        tokens: token,
                        pos0: pos,
                        logits: Logits::Last,
                    })
                    .collect();
                model.forward_batch(runner.pool(), &mut segments, &mut scratch, None)?;
            }
            times.push(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
    }
    println!("| sequences | ms/step median (best) | tokens/s median (best) |");
    println!("|---:|---:|---:|");
    for (k, times) in ks.iter().zip(&mut times) {
        times.sort_by(f64::total_cmp);
        let (median, best) = (times[times.len() / 2], times[0]);
        println!(
            "| {k} | {median:.1} ({best:.1}) | {:.1} ({:.1}) |",
            *k as f64 * 1e3 / median,
            *k as f64 * 1e3 / best
        );
    }
    if let Some(report) = rusty_llm::profile::report() {
        eprintln!("{report}");
    }
    Ok(())
}
