//! A bounded ring of a server's output lines (stderr, and stray stdout), shared by all of its
//! processes, so `get_mcp_server_logs` and failure reports can show the recent tail without the
//! memory of a chatty server growing without bound. It only keeps text, never parses it.

use std::{collections::VecDeque, sync::Mutex};

const MAX_LINES: usize = 2000;
const MAX_LINE_LEN: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct LogRing {
    lines: Mutex<VecDeque<String>>,
    /// Also write each line to our own stderr (the standalone bridge, so `kubectl logs` shows
    /// the server's output).
    echo: bool,
}

impl LogRing {
    pub(crate) fn echoing() -> LogRing {
        LogRing { echo: true, ..LogRing::default() }
    }

    /// Append one line, tagged with the process it came from; long lines are cut.
    pub(crate) fn push(&self, tag: &str, line: &str) {
        let mut text = String::with_capacity(tag.len() + line.len().min(MAX_LINE_LEN) + 3);
        if !tag.is_empty() {
            text.push('[');
            text.push_str(tag);
            text.push_str("] ");
        }
        let mut cut = line.len().min(MAX_LINE_LEN);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        text.push_str(&line[..cut]);
        if cut < line.len() {
            text.push_str(" …");
        }
        if self.echo {
            eprintln!("{text}");
        }
        let mut lines = self.lines.lock().expect("log ring poisoned");
        if lines.len() == MAX_LINES {
            lines.pop_front();
        }
        lines.push_back(text);
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().expect("log ring poisoned");
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_only_the_newest_lines() {
        let ring = LogRing::default();
        for i in 0..(MAX_LINES + 10) {
            ring.push("s1", &format!("line {i}"));
        }
        let tail = ring.tail(3);
        assert_eq!(tail.len(), 3);
        assert_eq!(tail[2], format!("[s1] line {}", MAX_LINES + 9));
        assert_eq!(ring.tail(usize::MAX).len(), MAX_LINES);
    }

    #[test]
    fn long_multibyte_lines_are_cut_on_a_char_boundary() {
        let ring = LogRing::default();
        ring.push("", &"é".repeat(MAX_LINE_LEN));
        let line = &ring.tail(1)[0];
        assert!(line.ends_with(" …"));
        assert!(line.len() <= MAX_LINE_LEN + 4);
    }
}
