//! Fuzzes the GGUF reader: any byte string must parse to Ok or Err, never panic,
//! hang, or read out of bounds. Every tensor view of an accepted file must lie
//! inside the input.
//!
//!     cargo +nightly fuzz run gguf_reader -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use rusty_llm::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            let view = file.view(t);
            assert_eq!(view.data.len() as u64, t.size);
        }
        let _ = file.metadata().iter().count();
    }
});
