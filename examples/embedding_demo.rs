//! Embeds a few sentences (in one batched pass) and prints how similar each
//! pair is:
//!
//! ```sh
//! cargo run --release --example embedding_demo -- [MODEL] [SENTENCE…]
//! ```
//!
//! MODEL defaults to the default model (Gemma 3 270M, a chat model: it embeds
//! by mean-pooling its last layer, which is rough); an embedding model such
//! as nomic-embed-text or a BERT (bge, MiniLM) gives much better similarities.
//! Without sentences, six built-in ones in three pairs of related meaning.

use rusty_llm::engine::{EmbedOptions, Runner, cosine_similarity};
use std::process::ExitCode;

const SENTENCES: [&str; 6] = [
    "The cat sat on the mat.",
    "A kitten was sleeping on the rug.",
    "The stock market fell sharply today.",
    "Shares dropped as investors sold.",
    "How do I bake bread at home?",
    "A simple recipe for homemade bread.",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedding_demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "models/gemma-3-270m-q4_k_m.gguf".into());
    let given: Vec<String> = args.collect();
    let sentences: Vec<&str> = if given.is_empty() {
        SENTENCES.to_vec()
    } else {
        given.iter().map(String::as_str).collect()
    };

    let runner = Runner::from_path(&model)?;
    let config = runner.model().config();
    println!(
        "{model}: {} ({} pooling, {} dimensions)",
        config.arch,
        config.pooling.name(),
        config.n_embd
    );
    let started = std::time::Instant::now();
    let embeddings = runner.embed_batch(&sentences, &EmbedOptions::new(&runner))?;
    println!(
        "{} sentences embedded in {:.0} ms\n",
        sentences.len(),
        started.elapsed().as_secs_f64() * 1e3
    );

    // The matrix, labelled by sentence number; the sentences below it.
    print!("     ");
    for j in 0..sentences.len() {
        print!("{:>7}", format!("[{j}]"));
    }
    println!();
    for (i, a) in embeddings.iter().enumerate() {
        print!("{:>5}", format!("[{i}]"));
        for b in &embeddings {
            print!("{:>7.3}", cosine_similarity(&a.vector, &b.vector)?);
        }
        println!();
    }
    println!();
    for (i, s) in sentences.iter().enumerate() {
        println!("[{i}] {s}");
    }

    // The closest other sentence to each.
    println!();
    for (i, a) in embeddings.iter().enumerate() {
        let mut best = None;
        for (j, b) in embeddings.iter().enumerate() {
            if i != j {
                let c = cosine_similarity(&a.vector, &b.vector)?;
                if best.is_none_or(|(_, bc)| c > bc) {
                    best = Some((j, c));
                }
            }
        }
        if let Some((j, c)) = best {
            println!("[{i}] is closest to [{j}] ({c:.3})");
        }
    }
    Ok(())
}
