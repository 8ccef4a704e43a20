//! Model architectures: what each family needs from a GGUF file, and whether
//! rusty-llm can run a given file.

mod arch;
mod support;

pub use arch::Architecture;
pub use support::{SupportReport, check_support};
