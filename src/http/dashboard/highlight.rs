//! MeTTa syntax highlighting for the dashboard, done on the server: the code is split into
//! tokens (comments, strings, variables, numbers, `!`, brackets, the standard grounded
//! operations, other symbols), each shown in a `<span>` with a class the stylesheet colours.
//! Every token's text goes through maud's escaping; nothing here writes raw HTML.

use maud::{html, Markup};

/// What a token is, which is the CSS class it gets (`tok-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Comment,
    String,
    Variable,
    Number,
    Bang,
    Bracket,
    Keyword,
    Symbol,
    Space,
}

impl TokenKind {
    fn class(self) -> &'static str {
        match self {
            TokenKind::Comment => "tok-comment",
            TokenKind::String => "tok-string",
            TokenKind::Variable => "tok-var",
            TokenKind::Number => "tok-num",
            TokenKind::Bang => "tok-bang",
            TokenKind::Bracket => "tok-bracket",
            TokenKind::Keyword => "tok-kw",
            TokenKind::Symbol => "tok-sym",
            TokenKind::Space => "",
        }
    }
}

/// The grounded operations and special forms of MeTTa's standard library shown as keywords.
const KEYWORDS: &[&str] = &[
    "=",
    ":",
    "->",
    "if",
    "let",
    "let*",
    "match",
    "case",
    "switch",
    "superpose",
    "collapse",
    "unify",
    "chain",
    "eval",
    "quote",
    "unquote",
    "import!",
    "bind!",
    "add-atom",
    "remove-atom",
    "get-atoms",
    "new-space",
    "new-state",
    "get-state",
    "change-state!",
    "println!",
    "trace!",
    "assertEqual",
    "assertEqualToResult",
    "Type",
    "True",
    "False",
    "Empty",
    "Error",
];

/// Splits `code` into tokens; concatenating their texts gives `code` back.
pub fn tokenize(code: &str) -> Vec<(TokenKind, &str)> {
    let mut tokens = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let byte = bytes[at];
        let kind = match byte {
            b';' => {
                at = code[at..].find('\n').map_or(bytes.len(), |end| at + end);
                TokenKind::Comment
            }
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at = (at + 1).min(bytes.len());
                TokenKind::String
            }
            b'(' | b')' | b'[' | b']' | b'{' | b'}' => {
                at += 1;
                TokenKind::Bracket
            }
            byte if byte.is_ascii_whitespace() => {
                while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                TokenKind::Space
            }
            _ => {
                while at < bytes.len()
                    && !bytes[at].is_ascii_whitespace()
                    && !b"()[]{}\";".contains(&bytes[at])
                {
                    at += 1;
                }
                let word = &code[start..at];
                if word == "!" {
                    TokenKind::Bang
                } else if word.starts_with('$') {
                    TokenKind::Variable
                } else if word.parse::<f64>().is_ok() {
                    TokenKind::Number
                } else if KEYWORDS.contains(&word) {
                    TokenKind::Keyword
                } else {
                    TokenKind::Symbol
                }
            }
        };
        // Multi-byte characters are never split: every stop above is at an ASCII byte or
        // the end, except inside strings, which end at a quote or the end.
        while at < bytes.len() && !code.is_char_boundary(at) {
            at += 1;
        }
        tokens.push((kind, &code[start..at]));
    }
    tokens
}

/// `code` as highlighted markup (for inside a `<pre><code>`).
pub fn highlight_metta(code: &str) -> Markup {
    html! {
        @for (kind, text) in tokenize(code) {
            @if kind == TokenKind::Space {
                (text)
            } @else {
                span class=(kind.class()) { (text) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_the_code_and_name_its_parts() {
        let code = "; square\n(= (sq $x) (* $x $x))\n!(sq 7) \"a \\\" b\" é";
        let tokens = tokenize(code);
        let joined: String = tokens.iter().map(|(_, text)| *text).collect();
        assert_eq!(joined, code);
        let kind_of = |text: &str| tokens.iter().find(|(_, t)| *t == text).map(|(k, _)| *k);
        assert_eq!(kind_of("; square"), Some(TokenKind::Comment));
        assert_eq!(kind_of("="), Some(TokenKind::Keyword));
        assert_eq!(kind_of("$x"), Some(TokenKind::Variable));
        assert_eq!(kind_of("7"), Some(TokenKind::Number));
        assert_eq!(kind_of("!"), Some(TokenKind::Bang));
        assert_eq!(kind_of("sq"), Some(TokenKind::Symbol));
        assert_eq!(kind_of("\"a \\\" b\""), Some(TokenKind::String));
    }

    #[test]
    fn markup_is_escaped() {
        let html = highlight_metta("(<script> \"</span>\")").into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
