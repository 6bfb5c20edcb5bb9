//! Capped capture of a child's output. Children may print without end, so every reader keeps
//! at most a fixed number of bytes, drains (and drops) the rest so the child never blocks on
//! a full pipe, and reports whether anything was dropped.
//!
//! Two shapes: `read_capped_until` drains a pipe to its end (one Python job per child), and
//! `MarkedCapture` cuts one job's output out of a long-lived stream (the engine child writes
//! a start marker and an end marker around each job's run).

use memchr::memmem::Finder;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Output kept from one stream, and whether some was dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CapturedOutput {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl CapturedOutput {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn keep(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// Reads `reader` to its end (or until `stop`), keeping the first `cap` bytes.
pub async fn read_capped_until<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
    stop: CancellationToken,
) -> CapturedOutput {
    let mut output = CapturedOutput::default();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return output,
                Ok(n) => output.keep(&buffer[..n], cap),
            },
            _ = stop.cancelled() => return output,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkState {
    BeforeStart,
    Inside,
    Done,
}

/// Keeps the bytes between `start` and `end` markers of a stream fed chunk by chunk; markers
/// split across chunks are found all the same.
#[derive(Debug)]
pub struct MarkedCapture {
    start: Finder<'static>,
    end: Finder<'static>,
    cap: usize,
    state: MarkState,
    pending: Vec<u8>,
    output: CapturedOutput,
}

impl MarkedCapture {
    pub fn new(start: &[u8], end: &[u8], cap: usize) -> Self {
        MarkedCapture {
            start: Finder::new(start).into_owned(),
            end: Finder::new(end).into_owned(),
            cap,
            state: MarkState::BeforeStart,
            pending: Vec::new(),
            output: CapturedOutput::default(),
        }
    }

    /// True once the end marker has been seen.
    pub fn is_done(&self) -> bool {
        self.state == MarkState::Done
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.state == MarkState::Done {
            return;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            match self.state {
                MarkState::BeforeStart => match self.start.find(&self.pending) {
                    Some(at) => {
                        self.pending.drain(..at + self.start.needle().len());
                        self.state = MarkState::Inside;
                    }
                    None => {
                        keep_tail(&mut self.pending, self.start.needle().len() - 1);
                        return;
                    }
                },
                MarkState::Inside => match self.end.find(&self.pending) {
                    Some(at) => {
                        self.output.keep(&self.pending[..at], self.cap);
                        self.pending.clear();
                        self.state = MarkState::Done;
                        return;
                    }
                    None => {
                        let safe = self
                            .pending
                            .len()
                            .saturating_sub(self.end.needle().len() - 1);
                        self.output.keep(&self.pending[..safe], self.cap);
                        self.pending.drain(..safe);
                        return;
                    }
                },
                MarkState::Done => return,
            }
        }
    }

    /// The job's output; when the stream ended before the end marker (the child died), what
    /// came after the start marker.
    pub fn finish(mut self) -> CapturedOutput {
        if self.state == MarkState::Inside {
            let rest = std::mem::take(&mut self.pending);
            self.output.keep(&rest, self.cap);
        }
        self.output
    }
}

fn keep_tail(buffer: &mut Vec<u8>, keep: usize) {
    if buffer.len() > keep {
        buffer.drain(..buffer.len() - keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_capture_keeps_only_the_text_between_markers_across_chunk_splits() {
        let stream = b"old noise<S>hello\nworld<E>later noise";
        for split in 1..stream.len() {
            let mut capture = MarkedCapture::new(b"<S>", b"<E>", 1024);
            for chunk in stream.chunks(split) {
                capture.feed(chunk);
            }
            assert!(capture.is_done(), "split {split}");
            assert_eq!(capture.finish().text(), "hello\nworld", "split {split}");
        }
    }

    #[test]
    fn marked_capture_caps_and_reports_truncation() {
        let mut capture = MarkedCapture::new(b"<S>", b"<E>", 4);
        capture.feed(b"<S>abcdefgh<E>");
        let output = capture.finish();
        assert_eq!(output.text(), "abcd");
        assert!(output.truncated);
    }

    #[test]
    fn marked_capture_without_end_marker_returns_what_followed_the_start() {
        let mut capture = MarkedCapture::new(b"<S>", b"<E>", 1024);
        capture.feed(b"<S>partial out");
        assert!(!capture.is_done());
        assert_eq!(capture.finish().text(), "partial out");
    }

    #[tokio::test]
    async fn read_capped_drains_everything_but_keeps_the_cap() {
        let data = vec![b'x'; 100_000];
        let output = read_capped_until(&data[..], 10, CancellationToken::new()).await;
        assert_eq!(output.bytes.len(), 10);
        assert!(output.truncated);
    }
}
