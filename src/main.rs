fn main() -> std::process::ExitCode {
    rusty_llm::cli::main()
}
