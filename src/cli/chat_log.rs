//! `--chat-history PATH`: one JSON object per turn, appended and fsynced, so a
//! crash loses at most the turn in progress and an existing file is never
//! truncated. A write failure is reported once; generation goes on.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of the log.
#[derive(Debug, Serialize)]
pub struct Turn<'a> {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub model: &'a str,
    pub role: &'a str,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f64>,
}

impl<'a> Turn<'a> {
    pub fn new(model: &'a str, role: &'a str, content: &'a str) -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            time,
            model,
            role,
            content,
            prompt_tokens: None,
            generated_tokens: None,
            prefill_ms: None,
            decode_ms: None,
        }
    }
}

/// The append-only log; `None` file after the first failure.
pub struct ChatLog {
    path: PathBuf,
    file: Option<File>,
}

impl ChatLog {
    /// Opens (creating if needed) `path` for appending. Failing to open is
    /// reported like a failed write: once, without stopping the chat.
    pub fn open(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| warn(path, &e))
            .ok();
        Self {
            path: path.to_path_buf(),
            file,
        }
    }

    pub fn append(&mut self, turn: &Turn<'_>) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut line = serde_json::to_string(turn).expect("a turn serializes");
        line.push('\n');
        // One write per line: with O_APPEND the line lands whole at the end.
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            warn(&self.path, &e);
            self.file = None;
        }
    }
}

impl ChatLog {
    /// Appends a user turn and the assistant's answer with its counts and timings.
    pub fn append_exchange(
        &mut self,
        model: &str,
        prompt: &str,
        answer: &crate::engine::Generation,
    ) {
        self.append(&Turn::new(model, "user", prompt));
        let mut turn = Turn::new(model, "assistant", &answer.text);
        turn.prompt_tokens = Some(answer.prompt_tokens);
        turn.generated_tokens = Some(answer.generated_tokens);
        turn.prefill_ms = Some(answer.prefill_ms);
        turn.decode_ms = Some(answer.decode_ms);
        self.append(&turn);
    }
}

fn warn(path: &Path, e: &std::io::Error) {
    eprintln!(
        "rusty-llm: cannot write the chat history {}: {e} (continuing without it)",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_never_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let mut log = ChatLog::open(&path);
        log.append(&Turn::new("m", "user", "hi"));
        let mut reply = Turn::new("m", "assistant", "hello");
        reply.generated_tokens = Some(2);
        log.append(&reply);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "{\"earlier\":true}");
        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["content"], "hello");
        assert_eq!(v["generated_tokens"], 2);
    }

    #[test]
    fn unwritable_path_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ChatLog::open(&dir.path().join("missing/dir/chat.jsonl"));
        log.append(&Turn::new("m", "user", "hi")); // no panic
        assert!(log.file.is_none());
    }
}
