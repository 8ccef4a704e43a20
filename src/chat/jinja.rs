//! The model's own Jinja template, rendered as Hugging Face's
//! `apply_chat_template` renders it.
//!
//! What HF templates rely on, beyond minijinja's defaults:
//! - `trim_blocks` and `lstrip_blocks` on (HF's environment), no trailing newline kept;
//! - Python string/dict methods (`.strip()`, `.startswith()`, `.items()`, …):
//!   minijinja-contrib's `pycompat`;
//! - `raise_exception(msg)` → [`ChatError::Raised`];
//! - `tojson` as Python's `json.dumps(ensure_ascii=False)` (minijinja's own
//!   escapes `<`, `>`, `&` and `'` for HTML, which would change prompts);
//! - `strftime_now(fmt)`: the local time;
//! - loop controls (`break`/`continue`).
//!
//! Templates that drop or reject system messages get llama.cpp's polyfill:
//! system text is moved into the next user message (see `merge_system`).

use super::{ChatError, Message};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value, context};

const NAME: &str = "chat_template";

/// Prefix that marks an error as coming from `raise_exception`.
const RAISED: &str = "raise_exception: ";

/// Instruction budget of one render: a hostile template (`range(10**9)`)
/// fails instead of hanging. Gemma 4's 12 KB template renders 2000 messages
/// within it (tested).
const FUEL: u64 = 20_000_000;

/// Nesting limit of `tojson` (namespaces can contain themselves).
const JSON_MAX_DEPTH: usize = 128;

pub(super) struct JinjaTemplate {
    env: Environment<'static>,
    /// The template ignores or rejects system messages: merge them into user turns.
    polyfill_system: bool,
    /// The template reads a `tools` variable (renders tool definitions itself).
    pub(super) uses_tools: bool,
}

impl JinjaTemplate {
    /// Parses `source` (syntax errors surface here) and probes whether it
    /// renders system messages.
    pub(super) fn compile(source: &str, bos: &str, eos: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        let mut template = Self {
            env,
            polyfill_system: false,
            uses_tools: false,
        };
        template.uses_tools = template
            .env
            .get_template(NAME)
            .is_ok_and(|t| t.undeclared_variables(false).contains("tools"));
        template.polyfill_system = !template.supports_system_role(bos, eos);
        Ok(template)
    }

    /// llama.cpp's capability probe (minja's `supports_system_role`): a
    /// system message must show up in the output, and not make the template fail.
    fn supports_system_role(&self, bos: &str, eos: &str) -> bool {
        const NEEDLE: &str = "<System Needle>";
        let probe = [Message::new("system", NEEDLE), Message::new("user", "Hey")];
        self.render_raw(&probe, false, None, bos, eos)
            .is_ok_and(|out| out.contains(NEEDLE))
    }

    /// Renders `messages`; `tools` (OpenAI's list of tool definitions), when
    /// given, is the template's `tools` variable, else it stays undefined as
    /// templates expect when there are none.
    pub(super) fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        bos: &str,
        eos: &str,
    ) -> Result<String, ChatError> {
        if self.polyfill_system {
            self.render_raw(
                &merge_system(messages),
                add_generation_prompt,
                tools,
                bos,
                eos,
            )
        } else {
            self.render_raw(messages, add_generation_prompt, tools, bos, eos)
        }
    }

    fn render_raw(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        bos: &str,
        eos: &str,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatError::Render(e.to_string()))?;
        let ctx = context! {
            messages => messages_value(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
        };
        let ctx = match tools {
            Some(tools) => context! { tools => Value::from(Serde(tools)), ..ctx },
            None => ctx,
        };
        template.render(ctx).map_err(render_error)
    }
}

/// `messages` as a list of `{role, content}` maps, keys in that order.
fn messages_value(messages: &[Message]) -> Value {
    messages
        .iter()
        .map(|m| {
            Value::from_pairs([
                ("role", Value::from(m.role.as_str())),
                ("content", Value::from(m.content.as_str())),
            ])
        })
        .collect()
}

/// llama.cpp's system-role polyfill: consecutive system texts are joined by
/// newlines and open the next user message (`system\nuser`); before any
/// other role, or at the end, they become a user message of their own.
fn merge_system(messages: &[Message]) -> Vec<Message> {
    let mut out = Vec::with_capacity(messages.len());
    let mut pending = String::new();
    for m in messages {
        if m.role == "system" {
            if !pending.is_empty() {
                pending.push('\n');
            }
            pending.push_str(&m.content);
            continue;
        }
        if pending.is_empty() {
            out.push(m.clone());
        } else if m.role == "user" {
            let mut content = std::mem::take(&mut pending);
            if !m.content.is_empty() {
                content.push('\n');
                content.push_str(&m.content);
            }
            out.push(Message::new("user", content));
        } else {
            out.push(Message::new("user", std::mem::take(&mut pending)));
            out.push(m.clone());
        }
    }
    if !pending.is_empty() {
        out.push(Message::new("user", pending));
    }
    out
}

fn render_error(e: Error) -> ChatError {
    if let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED)) {
        return ChatError::Raised(msg.to_owned());
    }
    ChatError::Render(e.to_string())
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    // An invalid format makes `write!` fail (never panic, unlike `to_string`).
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(out)
}

/// Python's `json.dumps` layout.
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// `tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`,
/// as HF's filter (`json.dumps` with `ensure_ascii=False`).
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<String, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => Some(" ".repeat(usize::try_from(v)?.min(64))),
        },
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(seps) if seps.len() == 2 => (seps[0].clone(), seps[1].clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair",
            ));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(out)
}

fn write_json(out: &mut String, v: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    if depth > JSON_MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, v),
        ValueKind::String | ValueKind::Bytes => write_string(out, v.as_str().unwrap_or(""), style),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            let items = keys
                .into_iter()
                .map(|k| v.get_item(&k).map(|val| (k, val)))
                .collect::<Result<Vec<_>, _>>()?;
            write_container(out, style, depth, ('{', '}'), &items, |out, (k, val)| {
                match k.as_str() {
                    Some(s) => write_string(out, s, style),
                    None => write_string(out, &k.to_string(), style),
                }
                out.push_str(&style.key_sep);
                write_json(out, val, style, depth + 1)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, style, depth, ('[', ']'), &items, |out, item| {
                write_json(out, item, style, depth + 1)
            })?;
        }
        _ => write_string(out, &v.to_string(), style),
    }
    Ok(())
}

fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        write_item(out, item)?;
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// Integers as integers; floats as Python's `repr` (`1.0`, `0.5`, `NaN`).
fn write_number(out: &mut String, v: &Value) {
    if v.is_integer() {
        out.push_str(&v.to_string());
        return;
    }
    let Ok(f) = f64::try_from(v.clone()) else {
        out.push_str(&v.to_string());
        return;
    };
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        out.push_str(&format!("{f:.1}"));
    } else {
        out.push_str(&f.to_string());
    }
}

/// A JSON string as Python writes it: `"`, `\` and control characters
/// escaped (`\n`, `\u001b`); with `ensure_ascii` also every non-ASCII
/// character, as UTF-16 `\uXXXX` units.
fn write_string(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (style.ensure_ascii && (c as u32) >= 0x7f) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
