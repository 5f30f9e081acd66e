//! The T-SQL lexer: text to tokens, dropping whitespace and comments.
//!
//! Split from the parser so that each stays readable; the lexer owns the quoting rules
//! (`N'..'` with `''` escapes, `[..]` and `"..."` names, nested block comments) that every
//! client spells differently.

use super::SqlError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    /// `[name]` or `"name"`.
    Quoted(String),
    /// `@name`, with the `@`.
    Var(String),
    /// `@@name`, lowercased, without the `@@`.
    Global(String),
    Num(i64),
    Str {
        text: String,
        unicode: bool,
    },
    Punct(&'static str),
}

impl Tok {
    pub(crate) fn text(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => q.clone(),
            Tok::Var(v) => v.clone(),
            Tok::Global(g) => format!("@@{g}"),
            Tok::Num(n) => n.to_string(),
            Tok::Str { text, .. } => text.clone(),
            Tok::Punct(p) => (*p).to_string(),
        }
    }

    pub(crate) fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }
}

const PUNCT: &[&str] = &[
    "<>", "!=", ">=", "<=", "::", "=", "<", ">", "(", ")", ",", ".", ";", "*", "+", "-", "/", "%",
];

/// Splits text into tokens, dropping whitespace and comments.
pub fn lex(sql: &str) -> Result<Vec<Tok>, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && at(i + 1) == Some('-') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            // T-SQL block comments nest.
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(_), _) => i += 1,
                    (None, _) => {
                        return Err(SqlError::new(113, 15, "Missing end comment mark '*/'."));
                    }
                }
            }
        } else if c == '\'' || ((c == 'N' || c == 'n') && at(i + 1) == Some('\'')) {
            let unicode = c != '\'';
            i += if unicode { 2 } else { 1 };
            let mut text = String::new();
            loop {
                match at(i) {
                    Some('\'') if at(i + 1) == Some('\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(ch);
                        i += 1;
                    }
                    None => {
                        return Err(SqlError::new(
                            105,
                            15,
                            format!("Unclosed quotation mark after the character string '{text}'."),
                        ));
                    }
                }
            }
            out.push(Tok::Str { text, unicode });
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            i += 1;
            let mut text = String::new();
            loop {
                match at(i) {
                    Some(ch) if ch == close && at(i + 1) == Some(close) => {
                        text.push(close);
                        i += 2;
                    }
                    Some(ch) if ch == close => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(ch);
                        i += 1;
                    }
                    None => {
                        return Err(SqlError::new(
                            105,
                            15,
                            format!("Unclosed quotation mark after the character string '{text}'."),
                        ));
                    }
                }
            }
            out.push(Tok::Quoted(text));
        } else if c == '@' {
            let global = at(i + 1) == Some('@');
            let start = if global { i + 2 } else { i + 1 };
            let mut j = start;
            while at(j).is_some_and(|c| {
                c.is_alphanumeric() || c == '_' || c == '$' || c == '#' || c == '@'
            }) {
                j += 1;
            }
            if j == start {
                return Err(SqlError::syntax_near("@"));
            }
            let name: String = chars[start..j].iter().collect();
            out.push(if global {
                Tok::Global(name.to_ascii_lowercase())
            } else {
                Tok::Var(format!("@{name}"))
            });
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            let digits: String = chars[i..j].iter().collect();
            let n = digits
                .parse::<i64>()
                .map_err(|_| SqlError::syntax_near(&digits))?;
            out.push(Tok::Num(n));
            i = j;
        } else if c.is_alphabetic() || c == '_' || c == '#' {
            let mut j = i;
            while at(j).is_some_and(|c| {
                c.is_alphanumeric() || c == '_' || c == '$' || c == '#' || c == '@'
            }) {
                j += 1;
            }
            out.push(Tok::Word(chars[i..j].iter().collect()));
            i = j;
        } else {
            let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let Some(p) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
                return Err(SqlError::syntax_near(&c.to_string()));
            };
            out.push(Tok::Punct(p));
            i += p.chars().count();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_literals_comments_and_names() {
        let t =
            lex("select N'it''s' , 'x' /* a /* nested */ comment */ [my col] -- tail\n @@SpId @p1")
                .unwrap();
        assert_eq!(
            t,
            vec![
                Tok::Word("select".into()),
                Tok::Str {
                    text: "it's".into(),
                    unicode: true
                },
                Tok::Punct(","),
                Tok::Str {
                    text: "x".into(),
                    unicode: false
                },
                Tok::Quoted("my col".into()),
                Tok::Global("spid".into()),
                Tok::Var("@p1".into()),
            ]
        );
        assert_eq!(lex("SELECT 'open").unwrap_err().number, 105);
        assert_eq!(lex("/* open").unwrap_err().number, 113);
    }
}
