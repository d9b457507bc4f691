//! A plugin program's stdout and stderr: read continuously (the program never blocks on a
//! full pipe), cut into bounded lines, made safe to print, rate-limited, and logged with
//! the plugin id. The last stderr lines are kept for error messages and crash reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line kept; longer ones are cut (the rest up to the newline is dropped).
pub(crate) const MAX_LINE: usize = 4096;
/// Lines logged per second per stream before the rest of that second is dropped.
const LINES_PER_SECOND: u32 = 200;
/// Stderr lines kept for error messages.
const TAIL_LINES: usize = 20;

/// The last lines a program wrote to stderr.
#[derive(Default)]
pub(crate) struct Tail {
    lines: Mutex<VecDeque<String>>,
    /// Set once the stream has been read to its end.
    ended: tokio::sync::Notify,
    ended_flag: std::sync::atomic::AtomicBool,
}

impl Tail {
    fn push(&self, line: &str) {
        let mut lines = self.lines.lock();
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// Waits, at most `limit`, until the stream has been read to its end (so a message
    /// about an exited program includes its last words).
    pub(crate) async fn settle(&self, limit: Duration) {
        let ended = self.ended.notified();
        if self.ended_flag.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(limit, ended).await;
    }

    fn end(&self) {
        self.ended_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.ended.notify_waiters();
    }

    /// The kept lines, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().iter().cloned().collect()
    }

    /// The kept lines, oldest first, joined for a message (`""` when none).
    pub(crate) fn render(&self) -> String {
        let lines = self.lines.lock();
        if lines.is_empty() {
            return String::new();
        }
        let joined: Vec<&str> = lines.iter().map(String::as_str).collect();
        format!("; last stderr lines: {}", joined.join(" | "))
    }
}

/// Reads lines from a pipe, at most [`MAX_LINE`] bytes each, whatever the program writes.
pub(crate) struct LineReader<R> {
    reader: R,
    buffer: Vec<u8>,
    /// Inside an over-long line whose first part was already returned.
    skipping: bool,
    eof: bool,
}

/// One line as read.
pub(crate) struct Line {
    /// The line, as printable text (control characters escaped, invalid UTF-8 replaced).
    pub(crate) text: String,
    /// Whether the line was longer than [`MAX_LINE`] and cut.
    pub(crate) cut: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R) -> LineReader<R> {
        LineReader { reader, buffer: Vec::with_capacity(MAX_LINE), skipping: false, eof: false }
    }

    /// The next line; `None` at the end of the stream.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = self.buffer.drain(..=end).collect();
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                // A `\r\n` line end (a program written for Windows) is a line end too.
                let body = &raw[..raw.len() - 1];
                let body = body.strip_suffix(b"\r").unwrap_or(body);
                return Ok(Some(Line { text: printable(body), cut: false }));
            }
            if self.buffer.len() > MAX_LINE {
                let raw: Vec<u8> = self.buffer.drain(..).collect();
                if std::mem::replace(&mut self.skipping, true) {
                    continue;
                }
                return Ok(Some(Line { text: printable(&raw[..MAX_LINE]), cut: true }));
            }
            if self.eof {
                if self.buffer.is_empty() || self.skipping {
                    return Ok(None);
                }
                let raw: Vec<u8> = self.buffer.drain(..).collect();
                return Ok(Some(Line { text: printable(&raw), cut: false }));
            }
            let mut chunk = [0u8; 8192];
            let room = (MAX_LINE + 1).saturating_sub(self.buffer.len()).clamp(1, chunk.len());
            let read = self.reader.read(&mut chunk[..room]).await?;
            if read == 0 {
                self.eof = true;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Text safe to print on a terminal or in a log: control characters (ANSI escapes among
/// them) become `\x1b`-style escapes; invalid UTF-8 becomes U+FFFD.
pub(crate) fn printable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Logs every line of `reader` (and keeps stderr's tail) until the stream ends.
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    mut lines: LineReader<R>,
    plugin: Arc<str>,
    stream: &'static str,
    tail: Option<Arc<Tail>>,
) {
    let mut window = Instant::now();
    let (mut logged, mut dropped) = (0u32, 0u64);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tail) = &tail {
            tail.push(&line.text);
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(plugin = %plugin, stream, dropped, "plugin output rate-limited: lines dropped");
            }
            window = Instant::now();
            (logged, dropped) = (0, 0);
        }
        if logged >= LINES_PER_SECOND {
            dropped += 1;
            continue;
        }
        logged += 1;
        let cut = if line.cut { " [cut]" } else { "" };
        tracing::info!(plugin = %plugin, stream, "{}{cut}", line.text);
    }
    if let Some(tail) = &tail {
        tail.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<(String, bool)> {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push((line.text, line.cut));
        }
        out
    }

    #[tokio::test]
    async fn lines_are_bounded_cut_and_escaped() {
        assert_eq!(lines_of(b"a\nb\n").await, [("a".into(), false), ("b".into(), false)]);
        assert_eq!(lines_of(b"no newline").await, [("no newline".into(), false)]);
        assert_eq!(lines_of(b"crlf\r\nend\r\n").await, [("crlf".into(), false), ("end".into(), false)]);
        assert_eq!(lines_of(b"a\rb\n").await, [("a\\rb".into(), false)]);
        assert_eq!(lines_of(b"\x1b[31mred\x1b[0m\n").await, [("\\u{1b}[31mred\\u{1b}[0m".into(), false)]);
        let mut long = vec![b'x'; 3 * MAX_LINE];
        long.extend_from_slice(b"\nnext\n");
        let got = lines_of(&long).await;
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.len(), got[0].1), (MAX_LINE, true));
        assert_eq!(got[1], ("next".into(), false));
        assert_eq!(lines_of(&[0xff, 0xfe, b'\n']).await, [("\u{fffd}\u{fffd}".into(), false)]);
    }
}
