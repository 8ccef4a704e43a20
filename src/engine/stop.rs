//! Stop strings over streamed text.
//!
//! Generation yields text piece by piece, and a stop string can arrive split
//! over many pieces. [`StopStrings::push`] returns what is safe to show now and
//! holds back the longest tail that could still grow into a stop string; once a
//! stop string completes, the text before it is released and the stop string
//! itself never is.
//!
//! As in llama.cpp's server (`find_stopping_strings`), generation stops as soon
//! as any stop string is complete, at the earliest place one occurs, even if a
//! longer stop string that starts earlier could still complete later.
//!
//! Pieces are `&str`, and the held-back tail always starts where a stop
//! string's first character matched, so no UTF-8 character is ever split.

/// What one [`StopStrings::push`] releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text safe to show now.
    pub emit: String,
    /// A stop string completed: `emit` is the last text of this generation.
    pub stopped: bool,
}

/// A streaming filter that ends generation at the first stop string.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Length in bytes of the longest stop string.
    longest: usize,
    /// Text received but not yet released: a possible start of a stop string.
    pending: String,
    stopped: bool,
}

impl StopStrings {
    /// Empty strings are dropped (they would match before any text) and
    /// duplicates kept once.
    pub fn new(stops: Vec<String>) -> Self {
        let mut stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        stops.sort_unstable();
        stops.dedup();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Self {
            stops,
            longest,
            pending: String::new(),
            stopped: false,
        }
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.stopped {
            return StopOutput {
                emit: String::new(),
                stopped: true,
            };
        }
        self.pending.push_str(text);
        // Held-back text never contains a whole stop string (it would have
        // stopped already), so only matches reaching into `text` are found.
        if let Some(at) = self.earliest_match() {
            self.pending.truncate(at);
            self.stopped = true;
            return StopOutput {
                emit: std::mem::take(&mut self.pending),
                stopped: true,
            };
        }
        let keep_from = self.pending.len() - self.partial_match_len();
        let held = self.pending.split_off(keep_from);
        StopOutput {
            emit: std::mem::replace(&mut self.pending, held),
            stopped: false,
        }
    }

    /// Releases the held-back text once generation ended without a stop
    /// string (end-of-generation token, length limit); empty after a stop.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Whether a stop string has completed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Starts over for a new generation with the same stop strings.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.stopped = false;
    }

    /// Byte offset in `pending` of the earliest complete stop string.
    fn earliest_match(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
    }

    /// Length of the longest tail of `pending` that begins some stop string.
    /// Such a tail is shorter than the longest stop string, and it starts on
    /// a character boundary because the stop string's first character does.
    fn partial_match_len(&self) -> usize {
        let len = self.pending.len();
        let earliest = len.saturating_sub(self.longest.saturating_sub(1));
        self.pending
            .char_indices()
            .map(|(i, _)| i)
            .skip_while(|&i| i < earliest)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .map_or(0, |i| len - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> StopStrings {
        StopStrings::new(list.iter().map(|s| s.to_string()).collect())
    }

    /// Pushes each piece; returns what each push emitted, whether it stopped,
    /// and what `finish` flushed.
    fn run(filter: &mut StopStrings, pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut emitted = Vec::new();
        let mut stopped = false;
        for piece in pieces {
            let out = filter.push(piece);
            emitted.push(out.emit);
            stopped = out.stopped;
        }
        (emitted, stopped, filter.finish())
    }

    #[test]
    fn streaming_cases() {
        struct Case {
            what: &'static str,
            stops: &'static [&'static str],
            pieces: &'static [&'static str],
            emitted: &'static [&'static str],
            stopped: bool,
            flushed: &'static str,
        }
        let table = [
            Case {
                what: "no stop strings: everything at once",
                stops: &[],
                pieces: &["Hello", " world"],
                emitted: &["Hello", " world"],
                stopped: false,
                flushed: "",
            },
            Case {
                what: "stop inside one piece",
                stops: &["END"],
                pieces: &["hello END world"],
                emitted: &["hello "],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "stop spanning several pieces",
                stops: &["END"],
                pieces: &["he", "llo E", "N", "D more"],
                emitted: &["he", "llo ", "", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "stop at the very start",
                stops: &["END"],
                pieces: &["END", "more"],
                emitted: &["", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "partial match that is not a stop is released",
                stops: &["END"],
                pieces: &["E", "N", "x"],
                emitted: &["", "", "ENx"],
                stopped: false,
                flushed: "",
            },
            Case {
                what: "held-back tail flushed at the end",
                stops: &["END"],
                pieces: &["foo E"],
                emitted: &["foo "],
                stopped: false,
                flushed: "E",
            },
            Case {
                what: "self-overlapping stop string (aab in aaab)",
                stops: &["aab"],
                pieces: &["a", "a", "a", "b"],
                emitted: &["", "", "a", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "overlapping stops: the one completing first wins",
                stops: &["abcd", "bc"],
                pieces: &["a", "b", "c", "d"],
                emitted: &["", "", "a", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "two complete stops: the earlier one wins",
                stops: &["b", "ab"],
                pieces: &["xab"],
                emitted: &["x"],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "stops sharing a prefix",
                stops: &["</s>", "</stop>"],
                pieces: &["ok</", "st", "op>"],
                emitted: &["ok", "", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "multi-byte stop split across pieces",
                stops: &["日本"],
                pieces: &["こんにちは日", "本語"],
                emitted: &["こんにちは", ""],
                stopped: true,
                flushed: "",
            },
            Case {
                what: "multi-byte held back whole, then released",
                stops: &["🙂x"],
                pieces: &["a🙂", "y"],
                emitted: &["a", "🙂y"],
                stopped: false,
                flushed: "",
            },
            Case {
                what: "same leading byte, different character",
                stops: &["é"],
                pieces: &["è", "e"],
                emitted: &["è", "e"],
                stopped: false,
                flushed: "",
            },
            Case {
                what: "empty stop strings are ignored",
                stops: &["", ""],
                pieces: &["abc"],
                emitted: &["abc"],
                stopped: false,
                flushed: "",
            },
        ];
        for case in table {
            let mut filter = stops(case.stops);
            let (emitted, stopped, flushed) = run(&mut filter, case.pieces);
            assert_eq!(emitted, case.emitted, "{}", case.what);
            assert_eq!(stopped, case.stopped, "{}", case.what);
            assert_eq!(flushed, case.flushed, "{}", case.what);
        }
    }

    #[test]
    fn nothing_after_a_stop_until_reset() {
        let mut filter = stops(&["\n\n"]);
        assert_eq!(filter.push("a\n").emit, "a");
        assert!(filter.push("\nb").stopped);
        assert!(filter.is_stopped());
        let after = filter.push("more");
        assert_eq!((after.emit.as_str(), after.stopped), ("", true));
        assert_eq!(filter.finish(), "");
        filter.reset();
        assert!(!filter.is_stopped());
        assert_eq!(filter.push("again").emit, "again");
    }

    /// Random texts cut into random pieces must release exactly the text
    /// before the first stop string, however they are cut. (With no stop
    /// string inside another, the first to complete is also the first to
    /// start, so the answer does not depend on the cuts.)
    #[test]
    fn any_chunking_gives_the_text_before_the_first_stop() {
        let alphabet = ['a', 'b', 'é', '🙂'];
        let stop_list = ["aba", "bb", "é🙂a"];
        let mut state = 0x5eed_u64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        for _ in 0..2000 {
            let text: String = (0..next(30))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let expected = stop_list
                .iter()
                .filter_map(|s| text.find(s))
                .min()
                .map_or(text.as_str(), |at| &text[..at]);

            let chars: Vec<char> = text.chars().collect();
            let mut pieces = Vec::new();
            let mut i = 0;
            while i < chars.len() {
                let n = 1 + next(4).min(chars.len() - i - 1);
                pieces.push(chars[i..i + n].iter().collect::<String>());
                i += n;
            }

            let mut filter = StopStrings::new(stop_list.iter().map(|s| s.to_string()).collect());
            let mut out = String::new();
            for piece in &pieces {
                let step = filter.push(piece);
                out.push_str(&step.emit);
                // Never hold back more than could still become a stop string.
                assert!(filter.pending.len() < filter.longest);
            }
            out.push_str(&filter.finish());
            assert_eq!(out, expected, "text {text:?} pieces {pieces:?}");
        }
    }
}
