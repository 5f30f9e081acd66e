//! Loading a config file: TOML syntax (with line and column), then shape (types; every
//! unknown key is collected with its path, not just the first), then meaning.

use std::path::Path;

use tdsvip_config_problem::ConfigProblems;

use super::{AgentConfig, ConfigErrors, ConfigProblem};

impl AgentConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigProblems(vec![ConfigProblem::new(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Self::parse(&text)
    }

    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let key = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("(syntax, line {line} column {col})")
                }
                None => "(syntax)".to_owned(),
            };
            ConfigProblems(vec![ConfigProblem::new(key, e.message().trim())])
        })?;

        let mut unknown = Vec::new();
        let value = toml::Value::Table(table);
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            unknown.push(ConfigProblem::new(
                key_path(&path.to_string()),
                "unknown key",
            ));
        };
        let ignoring = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let parsed: Result<AgentConfig, _> = serde_path_to_error::deserialize(ignoring);
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let key = key_path(&e.path().to_string());
                unknown.push(ConfigProblem::new(
                    if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    e.into_inner().message().trim().to_owned(),
                ));
                return Err(ConfigProblems(unknown));
            }
        };
        let mut issues = unknown;
        issues.extend(config.validate());
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigProblems(issues))
        }
    }
}

/// serde's paths read `ag.0.name`; operators read TOML, where that is `ag[0].name`.
pub(super) fn key_path(serde_path: &str) -> String {
    let mut out = String::new();
    for part in serde_path.split('.') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
