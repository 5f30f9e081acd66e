//! The bearer token that guards `/status` and `/events` (they tell an attacker a lot about
//! the cluster), read from `[http] token_file`.
//!
//! The token never appears in logs or `Debug` output, and comparing it takes the same time
//! whatever prefix of it a guess gets right.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the token file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: the token contains whitespace or control characters")]
    Invalid { path: PathBuf },
}

/// What is wrong with a token's text (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or control characters")]
    Invalid,
}

/// The token in `text`, as both the agent (its `token_file`) and `tdsvip status` (a file
/// or `TDSVIP_HTTP_TOKEN`) read it: trailing newlines (as editors and `echo` write them) are
/// not part of it, and nothing a header could not carry is allowed.
pub fn token_text(text: &str) -> Result<&str, TokenProblem> {
    let t = text.trim_end_matches(['\n', '\r']);
    if t.is_empty() {
        return Err(TokenProblem::Empty);
    }
    // A header value cannot carry these, so such a token could never be presented.
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenProblem::Invalid);
    }
    Ok(t)
}

impl Token {
    /// A token from its text ([`token_text`]). Errors name what is wrong, never the token.
    pub fn parse(text: &str, path: &Path) -> Result<Token, TokenError> {
        let path = path.to_owned();
        match token_text(text) {
            Ok(t) => Ok(Token(t.as_bytes().to_vec())),
            Err(TokenProblem::Empty) => Err(TokenError::Empty { path }),
            Err(TokenProblem::Invalid) => Err(TokenError::Invalid { path }),
        }
    }

    /// The token's text, for this agent's own requests to its peers (one token per cluster).
    /// Never log it.
    pub fn secret(&self) -> &str {
        // `parse` built it from a `&str`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is compared whole.
        let Some((scheme, presented)) = value.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        // `ct_eq` on slices of different lengths returns false without comparing; the length
        // of the token is not the secret.
        bool::from(presented.ct_eq(&self.0))
    }
}

/// Reads `[http] token_file`.
pub(crate) fn load_token(path: &Path) -> Result<Token, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    Token::parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newline_is_stripped_and_debug_is_redacted() {
        let p = Path::new("/t");
        let t = Token::parse("s3cret\n", p).unwrap();
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(t.accepts(Some(b"bearer s3cret")));
        assert!(!t.accepts(Some(b"Bearer s3cret\n")));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Bearer s3cretx")));
        assert!(!t.accepts(Some(b"Basic s3cret")));
        assert!(!t.accepts(Some(b"Bearer")));
        assert!(!t.accepts(None));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(matches!(
            Token::parse("\n", p),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            Token::parse("a b\n", p),
            Err(TokenError::Invalid { .. })
        ));
    }

    #[test]
    fn load_reads_the_file_and_names_it_on_error() {
        let dir = std::env::temp_dir().join(format!("tdsvip-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abc\r\n").unwrap();
        assert!(load_token(&file).unwrap().accepts(Some(b"Bearer abc")));
        let err = load_token(&dir.join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
