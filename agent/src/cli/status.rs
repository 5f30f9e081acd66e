//! `tdsvip status`: the running agent's `GET /status`, for a person or (with `--json`) for a
//! script.
//!
//! The answer is read as the agent's own wire type (`status::StatusDocument`), which keeps
//! what it does not know: this command may be newer or older than the agent it asks, so
//! fields a newer agent sends are printed generically (and passed through by `--json`),
//! and fields an older agent does not send are skipped. An answer whose known fields do not
//! have their types is refused with the field named. The text is in `status_text.rs`.
//!
//! Exit status: 0 when the agent answered, 1 when it could not be reached or did not answer
//! 2xx with JSON (the message says which: refused, timeout, 401, …), 2 on bad arguments or
//! configuration (the message names the argument).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tdsvip::StatusDocument;
use tdsvip::config::AgentConfig;
use tdsvip::field_error;
use tdsvip::status_client::{Bearer, DEFAULT_URL, TOKEN_ENV, fetch, parse_url, url_of_listen};
use tdsvip::token_text;

use super::status_text::render;
use super::{EXIT_USAGE, block_on, usage_error};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's HTTP base URL [default: the config's http.listen, else http://127.0.0.1:9477].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The agent's TOML config file: its http.listen and http.token_file are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the bearer token [default: the TDSVIP_HTTP_TOKEN variable, else the
    /// config's http.token_file].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the agent's JSON (pretty) instead of text.
    #[arg(long)]
    json: bool,
    /// Deadline for connecting and for the whole answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
}

fn token_from_file(path: &Path, arg: &str) -> Result<Bearer, (String, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            arg.to_owned(),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let value = token_text(&text)
        .map_err(|e| (arg.to_owned(), format!("{}: {e}", path.display())))?
        .to_owned();
    Ok(Bearer {
        value,
        source: format!("{arg} {}", path.display()),
    })
}

/// `--token-file`, else `TDSVIP_HTTP_TOKEN`, else the config's `http.token_file`, else none.
/// Errors are `(argument, reason)`.
fn pick_token(
    token_file: Option<&Path>,
    env: Option<String>,
    config: Option<&AgentConfig>,
) -> Result<Option<Bearer>, (String, String)> {
    if let Some(path) = token_file {
        return token_from_file(path, "--token-file").map(Some);
    }
    if let Some(text) = env {
        let value = token_text(&text)
            .map_err(|e| (TOKEN_ENV.to_owned(), e.to_string()))?
            .to_owned();
        return Ok(Some(Bearer {
            value,
            source: TOKEN_ENV.to_owned(),
        }));
    }
    match config.and_then(|c| c.http.token_file.as_deref()) {
        Some(path) => token_from_file(path, "http.token_file").map(Some),
        None => Ok(None),
    }
}

pub fn run(args: StatusArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match AgentConfig::load(path) {
            Ok(c) => Some(c),
            Err(errors) => {
                for issue in &errors.0 {
                    eprintln!("{}: {issue}", path.display());
                }
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => None,
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => url_of_listen(c.http.listen),
        (None, None) => DEFAULT_URL.to_owned(),
    };
    let target = match parse_url(&url) {
        Ok(t) => t,
        Err(reason) => {
            let arg = if args.url.is_some() {
                "--url"
            } else {
                "http.listen"
            };
            return usage_error(arg, reason);
        }
    };
    let env = std::env::var_os(TOKEN_ENV).map(|v| v.to_string_lossy().into_owned());
    let token = match pick_token(args.token_file.as_deref(), env, config.as_ref()) {
        Ok(t) => t,
        Err((arg, reason)) => return usage_error(&arg, reason),
    };
    let deadline = Duration::from_millis(args.timeout_ms);
    block_on(async move {
        let (value, _) = match fetch(&target, token.as_ref(), deadline).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let doc: StatusDocument = match serde_path_to_error::deserialize(&value) {
            Ok(doc) => doc,
            Err(e) => {
                let why = field_error(e);
                eprintln!(
                    "error: {}: the answer is not a tdsvip status: {why}",
                    target.url
                );
                return ExitCode::FAILURE;
            }
        };
        if args.json {
            // The wire type keeps the agent's field order and what this build does not know.
            match serde_json::to_string_pretty(&doc) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("error: cannot print the status as JSON: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            print!("{}", render(&doc, &target.url, unix_now()));
        }
        ExitCode::SUCCESS
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_like_the_agent_does() {
        assert_eq!(token_text("abc\r\n"), Ok("abc"));
        assert!(token_text("\n").is_err());
        assert!(token_text("a b").is_err());
        let t = pick_token(None, Some("envtoken\n".into()), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.value.as_str(), t.source.as_str()),
            ("envtoken", TOKEN_ENV)
        );
        let (arg, _) = pick_token(None, Some(String::new()), None).err().unwrap();
        assert_eq!(arg, TOKEN_ENV);
        let (arg, why) = pick_token(Some(Path::new("/nonexistent/t")), None, None)
            .err()
            .unwrap();
        assert_eq!(arg, "--token-file");
        assert!(why.contains("/nonexistent/t"), "{why}");
        assert!(pick_token(None, None, None).unwrap().is_none());
    }
}
