//! Instructors' sign-in to the dashboard: the `INSTRUCTOR_TOKEN` is checked once (in constant
//! time) and traded for a signed, expiring session cookie, so the token never sits in a page,
//! a URL or the browser's storage, and is never logged.
//!
//! The cookie is `<expiry unix secs>.<random nonce>.<HMAC-SHA256 of both>` under a key made
//! at start-up (a restart signs everyone out). It is `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page sends it), scoped to `/instructor`, and `Secure`
//! when the request came over HTTPS. Signing out revokes the nonce in memory until it would
//! have expired anyway.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE_NAME: &str = "mlb_instructor";
/// The path the cookie is sent for.
pub const COOKIE_PATH: &str = "/instructor";

type Signer = Hmac<Sha256>;

/// Checks tokens, issues and verifies session cookies. One per process.
pub struct InstructorSessions {
    token: String,
    key: [u8; 32],
    lifetime: Duration,
    /// Signed-out nonces and when their cookies expire.
    revoked: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for InstructorSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the key.
        f.debug_struct("InstructorSessions")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl InstructorSessions {
    pub fn new(token: String, lifetime: Duration) -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        InstructorSessions {
            token,
            key,
            lifetime,
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `presented` is the instructor token (constant time).
    pub fn token_matches(&self, presented: &str) -> bool {
        !presented.is_empty()
            && bool::from(presented.trim().as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// The `Set-Cookie` value of a new session.
    pub fn issue_cookie(&self, secure: bool) -> String {
        let expiry = now_secs() + self.lifetime.as_secs();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let value = format!("{expiry}.{nonce}.{}", self.signature(expiry, &nonce));
        cookie(&value, self.lifetime.as_secs(), secure)
    }

    /// The `Set-Cookie` value that removes the cookie; revokes the presented session.
    pub fn sign_out(&self, headers: &HeaderMap, secure: bool) -> String {
        if let Some((expiry, nonce)) = self.verified(headers) {
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            let now = now_secs();
            revoked.retain(|_, until| *until > now);
            revoked.insert(nonce, expiry);
        }
        cookie("", 0, secure)
    }

    /// Whether the request carries a valid, unexpired, not signed-out session cookie.
    pub fn is_signed_in(&self, headers: &HeaderMap) -> bool {
        self.verified(headers).is_some()
    }

    fn verified(&self, headers: &HeaderMap) -> Option<(u64, String)> {
        let value = cookie_value(headers)?;
        let mut parts = value.splitn(3, '.');
        let expiry: u64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let signature = hex_decode(parts.next()?)?;
        let mut mac = Signer::new_from_slice(&self.key).ok()?;
        mac.update(signed_text(expiry, nonce).as_bytes());
        mac.verify_slice(&signature).ok()?;
        if expiry <= now_secs() {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        (!revoked.contains_key(nonce)).then(|| (expiry, nonce.to_string()))
    }

    fn signature(&self, expiry: u64, nonce: &str) -> String {
        let Ok(mut mac) = Signer::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(signed_text(expiry, nonce).as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

fn signed_text(expiry: u64, nonce: &str) -> String {
    format!("instructor-session|{expiry}|{nonce}")
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// Whether the request reached us over HTTPS (directly or through a proxy that says so).
pub fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        headers
    }

    #[test]
    fn an_issued_cookie_signs_in_until_signed_out_and_a_tampered_one_never() {
        let sessions = InstructorSessions::new("secret".into(), Duration::from_secs(60));
        let issued = sessions.issue_cookie(false);
        assert!(issued.contains("HttpOnly") && issued.contains("SameSite=Strict"));
        assert!(!issued.contains("secret"), "the token is not in the cookie");
        let headers = with_cookie(&issued);
        assert!(sessions.is_signed_in(&headers));

        let tampered = issued.replacen(".", "9.", 1);
        assert!(!sessions.is_signed_in(&with_cookie(&tampered)));
        let other_process = InstructorSessions::new("secret".into(), Duration::from_secs(60));
        assert!(
            !other_process.is_signed_in(&headers),
            "another key never verifies"
        );

        let cleared = sessions.sign_out(&headers, false);
        assert!(cleared.contains("Max-Age=0"));
        assert!(!sessions.is_signed_in(&headers), "signed out for good");
    }

    #[test]
    fn an_expired_cookie_is_refused() {
        let sessions = InstructorSessions::new("secret".into(), Duration::from_secs(0));
        let headers = with_cookie(&sessions.issue_cookie(false));
        assert!(!sessions.is_signed_in(&headers));
    }

    #[test]
    fn the_token_must_match_exactly() {
        let sessions = InstructorSessions::new("secret".into(), Duration::from_secs(60));
        assert!(sessions.token_matches("secret"));
        assert!(!sessions.token_matches("secreT"));
        assert!(!sessions.token_matches(""));
        assert!(!sessions.token_matches("secret2"));
    }
}
