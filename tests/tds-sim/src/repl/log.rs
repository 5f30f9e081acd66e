//! The replica's log: the committed transactions in LSN order, in memory and, with a data
//! dir, in an append-only file so that a killed and restarted replica keeps what it
//! hardened.
//!
//! The file holds `Log` frames back to back (the replication codec's format); a torn last
//! frame (killed mid-write) is cut off on load. "Hardened" means written to the file with
//! `write(2)`: that survives the process being killed, which is the fault the lab injects;
//! it would not survive a power cut (no fsync — a documented deviation that keeps commits
//! fast on a loaded test machine). The `sequence_number` is kept next to it in `meta`.
//! Truncation (a rejoining replica dropping history the new primary never had) rewrites
//! the file through a temporary and a rename.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::codec::{DecodeError, Frame, Record, Row};
use crate::ag::rules::Span;

const LOG_FILE: &str = "log";
const META_FILE: &str = "meta";

pub struct Log {
    records: Vec<Record>,
    /// The ledger table those records build: id → at.
    ledger: BTreeMap<i64, i64>,
    dir: Option<PathBuf>,
    file: Option<File>,
}

/// What a data dir held at start.
pub struct Loaded {
    pub log: Log,
    pub seq: u64,
    /// True when the dir already held a replica's state (so it restarted).
    pub restarted: bool,
}

fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Log {
    /// An in-memory log (no data dir).
    pub fn memory() -> Log {
        Log {
            records: Vec::new(),
            ledger: BTreeMap::new(),
            dir: None,
            file: None,
        }
    }

    /// Opens (creating) the data dir and loads what it holds.
    pub fn open(dir: &Path) -> io::Result<Loaded> {
        fs::create_dir_all(dir).map_err(|e| ctx("creating data dir", dir, e))?;
        let path = dir.join(LOG_FILE);
        let meta = dir.join(META_FILE);
        let restarted = meta.exists();
        let seq = match fs::read_to_string(&meta) {
            Ok(s) => s
                .trim()
                .strip_prefix("sequence_number=")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: expected 'sequence_number=N', got {s:?}",
                            meta.display()
                        ),
                    )
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(ctx("reading", &meta, e)),
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ctx("reading", &path, e)),
        };
        let (records, good) = parse(&bytes).map_err(|m| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {m}", path.display()),
            )
        })?;
        let mut log = Log {
            records: Vec::new(),
            ledger: BTreeMap::new(),
            dir: Some(dir.to_path_buf()),
            file: None,
        };
        for r in records {
            log.apply(r);
        }
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - good, "torn last log record dropped");
            log.rewrite()?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ctx("opening", &path, e))?;
        log.file = Some(file);
        log.save_seq(seq)?;
        Ok(Loaded {
            log,
            seq,
            restarted,
        })
    }

    pub fn last_lsn(&self) -> u64 {
        self.records.last().map(|r| r.lsn).unwrap_or(0)
    }

    pub fn last_commit_unix_ms(&self) -> u64 {
        self.records.last().map(|r| r.commit_unix_ms).unwrap_or(0)
    }

    pub fn ledger(&self) -> &BTreeMap<i64, i64> {
        &self.ledger
    }

    /// Records after `lsn`, at most `max`.
    pub fn after(&self, lsn: u64, max: usize) -> Vec<Record> {
        let start = self.records.partition_point(|r| r.lsn <= lsn);
        self.records[start..].iter().take(max).cloned().collect()
    }

    pub fn spans(&self) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        for r in &self.records {
            match out.last_mut() {
                Some(s) if s.epoch == r.epoch && s.last + 1 == r.lsn => s.last = r.lsn,
                _ => out.push(Span {
                    epoch: r.epoch,
                    first: r.lsn,
                    last: r.lsn,
                }),
            }
        }
        out
    }

    /// Hardens a record: the next LSN, written to the file before it counts.
    pub fn append(&mut self, r: Record) -> io::Result<()> {
        if r.lsn != self.last_lsn() + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LSN {} does not follow {}", r.lsn, self.last_lsn()),
            ));
        }
        if let Some(f) = &mut self.file {
            f.write_all(&Frame::Log(r.clone()).encode())?;
        }
        self.apply(r);
        Ok(())
    }

    fn apply(&mut self, r: Record) {
        for (id, at) in &r.rows {
            self.ledger.insert(*id, *at);
        }
        self.records.push(r);
    }

    /// Drops every record after `lsn`; returns how many transactions were discarded.
    pub fn truncate_after(&mut self, lsn: u64) -> io::Result<u64> {
        let keep = self.records.partition_point(|r| r.lsn <= lsn);
        let dropped = (self.records.len() - keep) as u64;
        if dropped == 0 {
            return Ok(0);
        }
        for r in self.records.drain(keep..) {
            for (id, _) in &r.rows {
                self.ledger.remove(id);
            }
        }
        self.rewrite()?;
        Ok(dropped)
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let tmp = dir.join("log.tmp");
        let mut bytes = Vec::new();
        for r in &self.records {
            bytes.extend_from_slice(&Frame::Log(r.clone()).encode());
        }
        fs::write(&tmp, &bytes).map_err(|e| ctx("writing", &tmp, e))?;
        let path = dir.join(LOG_FILE);
        fs::rename(&tmp, &path).map_err(|e| ctx("renaming to", &path, e))?;
        self.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| ctx("opening", &path, e))?,
        );
        Ok(())
    }

    /// Persists the `sequence_number` seen (no-op without a data dir).
    pub fn save_seq(&self, seq: u64) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let tmp = dir.join("meta.tmp");
        fs::write(&tmp, format!("sequence_number={seq}\n")).map_err(|e| ctx("writing", &tmp, e))?;
        fs::rename(&tmp, dir.join(META_FILE)).map_err(|e| ctx("renaming", &tmp, e))
    }

    pub fn contains(&self, id: i64) -> bool {
        self.ledger.contains_key(&id)
    }

    pub fn rows_between(&self, lo: i64, hi: i64) -> Vec<Row> {
        if lo > hi {
            return Vec::new();
        }
        self.ledger.range(lo..=hi).map(|(a, b)| (*a, *b)).collect()
    }
}

/// Parses a log file: the records and how many bytes were whole frames. A torn tail is not
/// an error; a malformed whole frame or a gap in LSNs is.
fn parse(bytes: &[u8]) -> Result<(Vec<Record>, usize), String> {
    let mut out: Vec<Record> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match Frame::decode(&bytes[at..]) {
            Ok((Frame::Log(r), n)) => {
                let want = out.last().map(|l| l.lsn + 1).unwrap_or(r.lsn);
                if r.lsn != want {
                    return Err(format!(
                        "LSN {} at byte {at} does not follow {}",
                        r.lsn,
                        want - 1
                    ));
                }
                out.push(r);
                at += n;
            }
            Ok((other, _)) => return Err(format!("unexpected {other:?} at byte {at}")),
            Err(DecodeError::Incomplete) => break,
            Err(e) => return Err(format!("at byte {at}: {e}")),
        }
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64, epoch: u64, id: i64) -> Record {
        Record {
            lsn,
            epoch,
            commit_unix_ms: lsn * 10,
            rows: vec![(id, id * 100)],
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tds-sim-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_a_restart_and_a_torn_tail_and_truncates() {
        let dir = tmpdir("restart");
        let l = Log::open(&dir).unwrap();
        assert!(!l.restarted);
        let mut log = l.log;
        for i in 1..=4 {
            log.append(rec(i, 1, i as i64)).unwrap();
        }
        assert!(log.append(rec(9, 1, 9)).is_err());
        log.save_seq(3).unwrap();
        drop(log);
        // A torn half record at the end.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(LOG_FILE))
            .unwrap();
        f.write_all(&Frame::Log(rec(5, 1, 5)).encode()[..10])
            .unwrap();
        drop(f);
        let l = Log::open(&dir).unwrap();
        assert!(l.restarted);
        assert_eq!(l.seq, 3);
        let mut log = l.log;
        assert_eq!(log.last_lsn(), 4);
        assert_eq!(log.rows_between(2, 3), vec![(2, 200), (3, 300)]);
        assert_eq!(log.truncate_after(2).unwrap(), 2);
        assert!(!log.contains(3));
        log.append(rec(3, 2, 33)).unwrap();
        drop(log);
        let log = Log::open(&dir).unwrap().log;
        assert_eq!(log.last_lsn(), 3);
        assert!(log.contains(33) && !log.contains(4));
        assert_eq!(
            log.spans(),
            vec![
                Span {
                    epoch: 1,
                    first: 1,
                    last: 2
                },
                Span {
                    epoch: 2,
                    first: 3,
                    last: 3
                }
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_corrupt_file() {
        let dir = tmpdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = Frame::Log(rec(1, 1, 1)).encode();
        bytes.extend_from_slice(&Frame::Log(rec(3, 1, 3)).encode());
        fs::write(dir.join(LOG_FILE), bytes).unwrap();
        let e = Log::open(&dir).err().unwrap().to_string();
        assert!(e.contains("does not follow"), "{e}");
        fs::write(dir.join(LOG_FILE), b"").unwrap();
        fs::write(dir.join(META_FILE), b"garbage").unwrap();
        assert!(Log::open(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
