//! Builtin prompt formats, for models whose file carries no chat template.
//!
//! The renderings follow llama.cpp's builtins (`llm_chat_apply_template` in
//! `src/llama-chat.cpp`), except `llama2-inst`, which follows the Llama 2
//! chat template itself, and `plain`, a last resort of our own. None writes
//! a leading BOS: the tokenizer adds it (see the module docs of `chat`).

use super::{ChatTokens, Message};

/// Mistral's `[INST]` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MistralStyle {
    /// v3: `[INST] system\n\nuser[/INST] assistant</s>`; the system prompt
    /// opens the first user turn (llama.cpp's `mistral-v3`).
    V3,
    /// v3-tekken: as v3 without the spaces.
    V3Tekken,
    /// v7: `[SYSTEM_PROMPT] …[/SYSTEM_PROMPT][INST] …[/INST] …</s>`.
    V7,
    /// v7-tekken: as v7 without the spaces.
    V7Tekken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Builtin {
    GemmaTurns,
    ChatMl,
    Llama2Inst,
    Llama3Headers,
    MistralInst(MistralStyle),
    Phi3,
    Plain,
}

impl Builtin {
    pub(super) fn name(self) -> &'static str {
        match self {
            Builtin::GemmaTurns => "gemma-turns",
            Builtin::ChatMl => "chatml",
            Builtin::Llama2Inst => "llama2-inst",
            Builtin::Llama3Headers => "llama3-headers",
            Builtin::MistralInst(_) => "mistral-inst",
            Builtin::Phi3 => "phi3",
            Builtin::Plain => "plain",
        }
    }

    /// The builtin named `name`, if any (`mistral-inst` picks its variant from the vocabulary).
    pub(super) fn from_name(name: &str, tokens: &ChatTokens<'_>) -> Option<Self> {
        Some(match name {
            "gemma-turns" => Builtin::GemmaTurns,
            "chatml" => Builtin::ChatMl,
            "llama2-inst" => Builtin::Llama2Inst,
            "llama3-headers" => Builtin::Llama3Headers,
            "mistral-inst" => Builtin::MistralInst(mistral_style(tokens)),
            "phi3" => Builtin::Phi3,
            "plain" => Builtin::Plain,
            _ => return None,
        })
    }

    /// The format for a model without a template, from its architecture and
    /// the special tokens its vocabulary has.
    pub(super) fn select(arch: &str, tokens: &ChatTokens<'_>) -> Self {
        let has = tokens.has_token;
        if matches!(arch, "gemma" | "gemma2" | "gemma3" | "gemma3n") || has("<start_of_turn>") {
            Builtin::GemmaTurns
        } else if has("<|im_start|>") {
            Builtin::ChatMl
        } else if has("<|start_header_id|>") {
            Builtin::Llama3Headers
        } else if has("[INST]") {
            Builtin::MistralInst(mistral_style(tokens))
        } else if arch == "phi3" || has("<|user|>") {
            Builtin::Phi3
        } else if matches!(arch, "llama" | "mistral") {
            Builtin::Llama2Inst
        } else {
            Builtin::Plain
        }
    }

    pub(super) fn render(
        self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos: &str,
        eos: &str,
    ) -> String {
        let mut out = String::new();
        match self {
            Builtin::GemmaTurns => gemma(&mut out, messages, add_generation_prompt),
            Builtin::ChatMl => {
                for m in messages {
                    push_all(
                        &mut out,
                        &["<|im_start|>", &m.role, "\n", &m.content, "<|im_end|>\n"],
                    );
                }
                if add_generation_prompt {
                    out.push_str("<|im_start|>assistant\n");
                }
            }
            Builtin::Llama2Inst => llama2(&mut out, messages, bos, eos),
            Builtin::Llama3Headers => {
                for m in messages {
                    let header = ["<|start_header_id|>", &m.role, "<|end_header_id|>\n\n"];
                    push_all(&mut out, &header);
                    push_all(&mut out, &[m.content.trim(), "<|eot_id|>"]);
                }
                if add_generation_prompt {
                    out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            Builtin::MistralInst(style) => mistral(&mut out, messages, style, eos),
            Builtin::Phi3 => {
                for m in messages {
                    push_all(&mut out, &["<|", &m.role, "|>\n", &m.content, "<|end|>\n"]);
                }
                if add_generation_prompt {
                    out.push_str("<|assistant|>\n");
                }
            }
            Builtin::Plain => {
                for m in messages {
                    push_all(&mut out, &[&capitalized(&m.role), ": ", &m.content, "\n"]);
                }
                if add_generation_prompt {
                    out.push_str("Assistant:");
                }
            }
        }
        out
    }
}

fn mistral_style(tokens: &ChatTokens<'_>) -> MistralStyle {
    match ((tokens.has_token)("[SYSTEM_PROMPT]"), tokens.sentencepiece) {
        (true, true) => MistralStyle::V7,
        (true, false) => MistralStyle::V7Tekken,
        (false, true) => MistralStyle::V3,
        (false, false) => MistralStyle::V3Tekken,
    }
}

fn push_all(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
}

fn capitalized(role: &str) -> String {
    let mut chars = role.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Gemma has no system turn: system text (trimmed) opens the next user turn,
/// followed by a blank line, as Gemma 3's template and llama.cpp's builtin do.
/// Several system messages are joined by blank lines.
fn gemma(out: &mut String, messages: &[Message], add_generation_prompt: bool) {
    let mut system = String::new();
    for m in messages {
        if m.role == "system" {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(m.content.trim());
            continue;
        }
        let role = if m.role == "assistant" {
            "model"
        } else {
            &m.role
        };
        push_all(out, &["<start_of_turn>", role, "\n"]);
        if !system.is_empty() && role != "model" {
            push_all(out, &[&system, "\n\n"]);
            system.clear();
        }
        push_all(out, &[m.content.trim(), "<end_of_turn>\n"]);
    }
    if add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
}

/// The Llama 2 chat template: every user turn is `BOS[INST] text [/INST]`,
/// every assistant turn ` text EOS`, contents stripped; a system message
/// opens the next user turn inside `<<SYS>>` markers. The first BOS is left
/// to the tokenizer. There is no generation prompt: a prompt ending in
/// `[/INST]` already asks for the answer.
fn llama2(out: &mut String, messages: &[Message], bos: &str, eos: &str) {
    let mut system: Option<String> = None;
    let mut first = true;
    for m in messages {
        match m.role.as_str() {
            "system" => {
                let s = system.get_or_insert_with(String::new);
                if !s.is_empty() {
                    s.push_str("\n\n");
                }
                s.push_str(m.content.trim());
            }
            "assistant" => push_all(out, &[" ", m.content.trim(), " ", eos]),
            _ => {
                if !first {
                    out.push_str(bos);
                }
                first = false;
                out.push_str("[INST] ");
                if let Some(s) = system.take() {
                    push_all(out, &["<<SYS>>\n", &s, "\n<</SYS>>\n\n"]);
                }
                push_all(out, &[m.content.trim(), " [/INST]"]);
            }
        }
    }
}

/// llama.cpp's `mistral-v3`/`-v3-tekken`/`-v7`/`-v7-tekken` builtins.
fn mistral(out: &mut String, messages: &[Message], style: MistralStyle, eos: &str) {
    let space = match style {
        MistralStyle::V3 | MistralStyle::V7 => " ",
        MistralStyle::V3Tekken | MistralStyle::V7Tekken => "",
    };
    let eos = if eos.is_empty() { "</s>" } else { eos };
    match style {
        MistralStyle::V7 | MistralStyle::V7Tekken => {
            for m in messages {
                match m.role.as_str() {
                    "system" => push_all(
                        out,
                        &["[SYSTEM_PROMPT]", space, &m.content, "[/SYSTEM_PROMPT]"],
                    ),
                    "assistant" => push_all(out, &[space, &m.content, eos]),
                    _ => push_all(out, &["[INST]", space, &m.content, "[/INST]"]),
                }
            }
        }
        MistralStyle::V3 | MistralStyle::V3Tekken => {
            let mut inside_turn = false;
            for m in messages {
                if !inside_turn {
                    push_all(out, &["[INST]", space]);
                    inside_turn = true;
                }
                match m.role.as_str() {
                    "system" => push_all(out, &[&m.content, "\n\n"]),
                    "assistant" => {
                        // v3 trims the answer; v3-tekken keeps it as is.
                        let content = if style == MistralStyle::V3 {
                            m.content.trim()
                        } else {
                            &m.content
                        };
                        push_all(out, &[space, content, eos]);
                        inside_turn = false;
                    }
                    _ => push_all(out, &[&m.content, "[/INST]"]),
                }
            }
        }
    }
}
