//! Making workloads: the frontend's code ids, counting a program's `!` expressions, a
//! small deterministic random generator (so a failing run can be repeated from its seed), and
//! timestamps as the service writes them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh `code_<ms>_<rand>` id: the frontend makes one per click and never reuses it.
pub fn frontend_code_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("code_{ms}_{}", &random[..9])
}

/// How many `!` expressions `code` has (a `!` directly before `(`, at the start or after
/// white space; `println!` and `bind!` do not count).
pub fn bang_count(code: &str) -> usize {
    let bytes = code.as_bytes();
    (0..bytes.len())
        .filter(|&at| {
            bytes[at] == b'!'
                && bytes.get(at + 1) == Some(&b'(')
                && (at == 0 || bytes[at - 1].is_ascii_whitespace())
        })
        .count()
}

/// A small deterministic pseudo-random generator (SplitMix64), no crate needed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 for a bound of 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// Now, as the service writes timestamps (RFC 3339, UTC, milliseconds): text order is time order.
pub fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
