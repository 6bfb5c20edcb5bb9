//! What the supervisor reads of the engine's stdout and stderr while a batch runs: each run's
//! output between its markers (`BatchOutputs`), read straight from the pipes (`OutputPipe`),
//! and what a dead child wrote last.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::exchange::{Answered, DRAIN_AFTER_DEATH};
use super::supervisor::MettaRunOutcome;
use crate::capture::{CapturedOutput, MarkedCapture};

/// The captured output of each run of a batch: every chunk of the engine's stdout and
/// stderr goes to the captures of the runs not yet finished (from the running one on), each
/// of which keeps what lies between its own markers.
pub(super) struct BatchOutputs {
    stdout: Vec<Option<MarkedCapture>>,
    stderr: Vec<Option<MarkedCapture>>,
    pub(super) stdout_open: bool,
    pub(super) stderr_open: bool,
}

impl BatchOutputs {
    pub(super) fn new(markers: &[(String, String)], cap: usize) -> Self {
        let captures = || {
            markers
                .iter()
                .map(|(start, end)| Some(MarkedCapture::new(start.as_bytes(), end.as_bytes(), cap)))
                .collect()
        };
        BatchOutputs {
            stdout: captures(),
            stderr: captures(),
            stdout_open: true,
            stderr_open: true,
        }
    }

    pub(super) fn feed_stdout(&mut self, from: usize, chunk: Option<Vec<u8>>) {
        match chunk {
            Some(chunk) => feed_all(self.stdout.get_mut(from..).unwrap_or_default(), &chunk),
            None => self.stdout_open = false,
        }
    }

    pub(super) fn feed_stderr(&mut self, from: usize, chunk: Option<Vec<u8>>) {
        match chunk {
            Some(chunk) => feed_all(self.stderr.get_mut(from..).unwrap_or_default(), &chunk),
            None => self.stderr_open = false,
        }
    }

    /// Whether the run's output is complete on both streams.
    pub(super) fn done(&self, run: usize) -> bool {
        let done = |captures: &[Option<MarkedCapture>], open: bool| {
            !open
                || captures
                    .get(run)
                    .and_then(Option::as_ref)
                    .is_none_or(MarkedCapture::is_done)
        };
        done(&self.stdout, self.stdout_open) && done(&self.stderr, self.stderr_open)
    }

    /// The run's output as it stands (it no longer runs).
    pub(super) fn finish(&mut self, run: usize) -> (CapturedOutput, CapturedOutput) {
        let take = |captures: &mut Vec<Option<MarkedCapture>>| {
            captures
                .get_mut(run)
                .and_then(Option::take)
                .map(MarkedCapture::finish)
                .unwrap_or_default()
        };
        (take(&mut self.stdout), take(&mut self.stderr))
    }

    /// An answered run's outcome, with its output as it stands.
    pub(super) fn outcome(&mut self, run: usize, answered: Answered) -> MettaRunOutcome {
        let (stdout, stderr) = self.finish(run);
        match answered {
            Answered::Run(end, answer) => MettaRunOutcome::Answered {
                end,
                answer,
                stdout,
                stderr,
            },
            // The session's process died alone: the engine and the other sessions go on.
            Answered::SessionDied(cause) => MettaRunOutcome::Died {
                cause,
                stdout,
                stderr,
            },
            Answered::Unavailable(reason) => MettaRunOutcome::Unavailable(reason),
        }
    }

    /// After the child died or was killed: what else it wrote, for the run that was running.
    pub(super) async fn drain(
        &mut self,
        run: usize,
        stdout_chunks: &mut OutputPipe,
        stderr_chunks: &mut OutputPipe,
    ) -> (CapturedOutput, CapturedOutput) {
        let stdout = match self.stdout.get_mut(run).and_then(Option::take) {
            Some(capture) => drain_after_death(capture, stdout_chunks).await,
            None => CapturedOutput::default(),
        };
        let stderr = match self.stderr.get_mut(run).and_then(Option::take) {
            Some(capture) => drain_after_death(capture, stderr_chunks).await,
            None => CapturedOutput::default(),
        };
        (stdout, stderr)
    }
}

fn feed_all(captures: &mut [Option<MarkedCapture>], chunk: &[u8]) {
    for capture in captures.iter_mut().flatten() {
        capture.feed(chunk);
        // Runs write their markers in order: a run's start marker can only follow the end
        // marker of the run before it, so later captures need the chunk only once this one
        // is complete (it then was the chunk that completed it, or a later one).
        if !capture.is_done() {
            break;
        }
    }
}

/// One of the engine's output pipes, read by the exchange itself while a batch runs (no
/// task in between). Between batches nobody reads it: a leftover process printing then fills
/// the pipe and blocks, it cannot grow the server's memory.
pub(super) struct OutputPipe {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    buffer: Vec<u8>,
}

impl OutputPipe {
    pub(super) fn new(reader: impl AsyncRead + Unpin + Send + 'static) -> Self {
        OutputPipe {
            reader: Box::new(reader),
            buffer: vec![0u8; 16 * 1024],
        }
    }

    /// The next chunk, or `None` at the pipe's end. Cancel-safe: a read that did not
    /// complete consumed nothing.
    pub(super) async fn recv(&mut self) -> Option<Vec<u8>> {
        match self.reader.read(&mut self.buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(self.buffer[..n].to_vec()),
        }
    }
}

async fn drain_after_death(mut capture: MarkedCapture, chunks: &mut OutputPipe) -> CapturedOutput {
    let drain = async {
        while let Some(chunk) = chunks.recv().await {
            capture.feed(&chunk);
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_DEATH, drain).await;
    capture.finish()
}
