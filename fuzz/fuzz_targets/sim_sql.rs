//! tds-sim's SQL recogniser: any text a client sends in a batch must parse or give an
//! error (which the simulator turns into an ERROR token), never panic.
//!
//! Each input is parsed as it is, and once more behind a prefix its first byte picks, so
//! that mutations land inside the grammars that are hard to reach from random text: the
//! security statements (GRANT/DENY/REVOKE with `::` securables, CREATE LOGIN), function
//! calls with arguments and CAST.
#![no_main]
use libfuzzer_sys::fuzz_target;

const PREFIXES: &[&str] = &[
    "GRANT ",
    "DENY VIEW SERVER STATE TO ",
    "REVOKE ",
    "REVOKE GRANT OPTION FOR ALTER ON AVAILABILITY GROUP::",
    "GRANT ALTER, CONTROL, VIEW DEFINITION ON AVAILABILITY GROUP :: [",
    "GRANT VIEW SERVER STATE TO [w] ",
    "CREATE LOGIN [w] WITH PASSWORD = N'",
    "CREATE LOGIN w WITH PASSWORD = 'p', ",
    "SELECT HAS_PERMS_BY_NAME(",
    "SELECT CAST(HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE') AS ",
    "SELECT CAST(",
    "SELECT DB_NAME(",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tds_sim::sql::parse_batch(text);
    }
    if let Some((&pick, rest)) = data.split_first()
        && let Ok(text) = std::str::from_utf8(rest)
    {
        let prefix = PREFIXES[pick as usize % PREFIXES.len()];
        let _ = tds_sim::sql::parse_batch(&format!("{prefix}{text}"));
    }
});
