//! The bytes of one connection between the socket and hyper, so that the answers hyper gives
//! on its own have the API's `{"error": "..."}` shape too.
//!
//! hyper answers some requests before the router sees them: a head over `MAX_HEADER_BYTES` or
//! with more than `MAX_HEADERS` headers (431), a head that is not HTTP/1.1 (400), a URI too long
//! (414). It sends those with an empty body, and it closes a connection whose head stalls past
//! `HEADER_READ_TIMEOUT_SECS` without a word. `ConnectionIo` rewrites hyper's bodiless error
//! heads on their way out into the same status with a JSON body, and when hyper gives up on
//! a client that stalled in the middle of a head (part of a head arrived, no request reached
//! the service, the header deadline passed), its drop answers 408 before the socket closes.
//! An idle keep-alive connection that sent nothing is closed without a word, as before.
//!
//! It never touches an answer the router made: those always carry a `Content-Type` (the
//! router turns every error it makes into JSON), while hyper's own carry none. It never reads
//! or changes request bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Slack for timer granularity when deciding that hyper's header deadline has passed.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// The socket as hyper sees it.
pub struct ConnectionIo {
    socket: TcpStream,
    /// `HEADER_READ_TIMEOUT_SECS`: hyper's deadline for a head, counted (like hyper's) from
    /// the connection's start or the last answer.
    header_timeout: Duration,
    /// When the connection started or the last answer began.
    waiting_since: Instant,
    /// The client sent bytes since then.
    unanswered_bytes: bool,
    /// hyper handed a request to the service and its answer has not begun (set by the
    /// service, cleared here when the answer's head goes out).
    serving: Arc<AtomicBool>,
    /// A rewritten answer not yet fully on the socket, and how much of it is.
    rewritten: Vec<u8>,
    rewritten_sent: usize,
}

impl ConnectionIo {
    /// The connection's IO, and the flag the service sets when a request reaches it.
    pub fn new(socket: TcpStream, header_timeout: Duration) -> (Self, Arc<AtomicBool>) {
        let serving = Arc::new(AtomicBool::new(false));
        let io = ConnectionIo {
            socket,
            header_timeout,
            waiting_since: Instant::now(),
            unanswered_bytes: false,
            serving: serving.clone(),
            rewritten: Vec::new(),
            rewritten_sent: 0,
        };
        (io, serving)
    }

    /// Whether hyper is dropping this connection because a head it began stalled.
    fn head_stalled(&self) -> bool {
        self.unanswered_bytes
            && !self.serving.load(Ordering::Relaxed)
            && self.waiting_since.elapsed() + DEADLINE_SLACK >= self.header_timeout
    }

    /// Writes what is left of a rewritten answer.
    fn poll_send_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.rewritten_sent < self.rewritten.len() {
            let sent =
                ready!(Pin::new(&mut self.socket)
                    .poll_write(cx, &self.rewritten[self.rewritten_sent..]))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.rewritten_sent += sent;
        }
        self.rewritten.clear();
        self.rewritten_sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.socket).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.unanswered_bytes = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_rewritten(cx))?;
        if buf.starts_with(b"HTTP/1.") {
            this.unanswered_bytes = false;
            this.waiting_since = Instant::now();
            this.serving.store(false, Ordering::Relaxed);
            if let Some(answer) = json_answer_for_bodiless_error(buf) {
                // hyper's whole answer is in `buf` (a head, no body): take it, send ours.
                this.rewritten = answer;
                this.rewritten_sent = 0;
                // A failure shows on the next write or flush, which hyper always makes.
                let _ = this.poll_send_rewritten(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.socket).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_rewritten(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_rewritten(cx))?;
        Pin::new(&mut this.socket).poll_shutdown(cx)
    }
    // Vectored writes stay off (the default), so hyper hands over each answer's head in one
    // buffer: a bodiless error answer is always whole in one `poll_write`.
}

impl Drop for ConnectionIo {
    fn drop(&mut self) {
        if self.head_stalled() {
            // One non-blocking write: the answer is far smaller than a socket buffer.
            let _ = self.socket.try_write(&stalled_head_answer());
        }
    }
}

/// What a client is told for each answer hyper makes on its own.
fn message_for(status: u16) -> &'static str {
    match status {
        431 => "the request head is too large: over MAX_HEADER_BYTES bytes or more than MAX_HEADERS headers",
        414 => "the request URI is too long",
        408 => "the request head did not arrive within HEADER_READ_TIMEOUT_SECS",
        400 => "the request is not valid HTTP/1.1",
        _ => "the request was refused before it reached the service",
    }
}

/// The refusal reason counted in the metrics for each such answer.
fn refusal_reason(status: u16) -> &'static str {
    match status {
        431 => "header_too_large",
        414 => "uri_too_long",
        408 => "header_timeout",
        _ => "malformed_http",
    }
}

/// When `head` is a whole error answer with no body and no content type (only hyper makes
/// those), the same answer with a JSON body; otherwise `None`.
fn json_answer_for_bodiless_error(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|window| window == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let mut kept = Vec::new();
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "content-type" => return None,
            "content-length" if line.split(':').nth(1).map(str::trim) != Some("0") => return None,
            "content-length" | "connection" => {}
            _ => kept.push(line),
        }
    }
    crate::service_metrics::request_refused(refusal_reason(status));
    Some(error_answer(status_line, &kept, message_for(status)))
}

/// The 408 for a client that stalled in the middle of its request head.
fn stalled_head_answer() -> Vec<u8> {
    crate::service_metrics::request_refused(refusal_reason(408));
    let date = httpdate_now();
    error_answer(
        "HTTP/1.1 408 Request Timeout",
        &[&format!("date: {date}")],
        message_for(408),
    )
}

fn error_answer(status_line: &str, headers: &[&str], message: &str) -> Vec<u8> {
    let body = serde_json::to_string(&super::wire::ErrorBody {
        error: message.to_string(),
    })
    .unwrap_or_default();
    let mut answer = format!("{status_line}\r\n");
    for header in headers {
        answer.push_str(header);
        answer.push_str("\r\n");
    }
    answer.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    answer.into_bytes()
}

/// The current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_431_gets_a_json_body_and_keeps_its_status_and_date() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 02:00:00 GMT\r\n\r\n";
        let answer = json_answer_for_bodiless_error(head).expect("rewritten");
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("date: Sun, 06 Dec 2026"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("MAX_HEADER_BYTES"));
    }

    #[test]
    fn answers_the_router_made_pass_untouched() {
        let with_type = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(json_answer_for_bodiless_error(with_type).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n";
        assert!(json_answer_for_bodiless_error(with_body).is_none());
        let head_and_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore";
        assert!(json_answer_for_bodiless_error(head_and_body).is_none());
        let success = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_answer_for_bodiless_error(success).is_none());
    }
}
