//! Where every benchmark of the workspace writes its JSON: one folder,
//! `$TDSVIP_BENCH_DIR`, by default `~/.cache/tdsvip/bench` (outside the clone, like the
//! build), one file per benchmark. The probes, node, cloud and lab benchmarks all use it, so
//! a reader finds every number in one place.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde_json::Value;

/// The benchmarks' folder (not created).
pub fn bench_dir() -> PathBuf {
    std::env::var_os("TDSVIP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/tdsvip/bench")
        })
}

/// Writes `report` (pretty) to `name` in the benchmarks' folder, creating the folder; the
/// path written, or what failed with the path named.
pub fn write_json(name: &str, report: &Value) -> Result<PathBuf, String> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("{name}: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pretty_json_into_the_bench_folder() {
        let name = format!("tdsvip-bench-output-test-{}.json", std::process::id());
        let path = write_json(&name, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(path, bench_dir().join(&name));
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains("\n  \"a\": 1"), "{text}");
    }
}
