//! Which HTTP request is being served, so every log line about it, and about the jobs it
//! submitted, can be followed by one id.
//!
//! The HTTP layer names each request (`RequestId`: the client's valid `X-Request-Id`, or a new
//! one), runs it inside a tracing span carrying that id, and makes the id readable to the code
//! below it for the request's duration (`RequestId::current`), so `queue` can hand it to the
//! worker with the job (in memory, `JobSignals`) without every handler passing it along. It is
//! for log correlation only: nothing decides anything on it, and it is never stored.

use std::fmt;
use std::future::Future;

/// Longest `X-Request-Id` taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// One request's id, as sent back in `X-Request-Id` and written in its log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new id (a UUID v7, so ids sort by time).
    pub fn generate() -> Self {
        RequestId(uuid::Uuid::now_v7().to_string())
    }

    /// The client's id when it is usable in logs and headers: 1 to 128 characters, each a
    /// letter, digit or one of `-_.:/+=@`. Anything else is replaced by a new id.
    pub fn from_client(text: &str) -> Option<Self> {
        let usable = !text.is_empty()
            && text.len() <= MAX_REQUEST_ID_LEN
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&byte));
        usable.then(|| RequestId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the request the calling task is serving, if any.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `serve` as the handling of the request named `self`.
    pub async fn scope<F: Future>(self, serve: F) -> F::Output {
        CURRENT.scope(self, serve).await
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_taken_only_when_safe_to_log_and_echo() {
        assert!(RequestId::from_client("abc-123_x.y:z").is_some());
        assert!(RequestId::from_client("").is_none());
        assert!(RequestId::from_client("has space").is_none());
        assert!(RequestId::from_client("line\nbreak").is_none());
        assert!(RequestId::from_client(&"a".repeat(129)).is_none());
        assert!(RequestId::from_client(&"a".repeat(128)).is_some());
    }

    #[tokio::test]
    async fn the_current_id_is_visible_inside_the_scope_only() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::generate();
        let seen = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
    }
}
