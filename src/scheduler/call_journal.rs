//! A key's call journal: the wall-clock time of each call, appended before the call goes out, so
//! that a program that stops — even killed — and starts again knows which of its calls the server
//! still counts ([`KeyConfig::call_journal`](crate::KeyConfig::call_journal)).
//!
//! The file is a sequence of 8-byte little-endian integers, one per call: milliseconds since the
//! Unix epoch. A write cut short by a crash leaves fewer than 8 bytes at the end, which are ignored
//! (that call was not sent: its record is written first). The file is appended to without `fsync`:
//! what a killed process wrote is in the operating system's cache and survives it; a power loss
//! may lose the last records. Once it holds [`COMPACT_AFTER`] records or more, it is rewritten
//! with only those still within the key's longest window (a new file renamed over the old).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records in the file before it is compacted (at least; see [`CallJournal::open`]).
pub(crate) const COMPACT_AFTER: u64 = 4_096;

/// One key's call journal (see the module documentation).
#[derive(Debug)]
pub(crate) struct CallJournal {
    path: PathBuf,
    /// How long a call counts: the key's longest window plus its guard.
    keep: Duration,
    /// Records at which the file is compacted.
    compact_after: u64,
    file: Mutex<Appending>,
}

#[derive(Debug)]
struct Appending {
    file: File,
    /// Records in the file.
    records: u64,
}

impl CallJournal {
    /// Opens the journal at `path` (created if missing) for a key whose calls count for `keep`,
    /// and returns the calls it holds that still count at `now` (newer than `now - keep`). It is
    /// compacted after `max(COMPACT_AFTER, 4 × most)` records, `most` being the quota's largest
    /// count.
    pub(crate) fn open(
        path: &Path,
        keep: Duration,
        most: u32,
        now: SystemTime,
    ) -> io::Result<(Self, Vec<SystemTime>)> {
        let recent = read_recent(path, keep, now)?;
        let journal = Self {
            path: path.to_path_buf(),
            keep,
            compact_after: COMPACT_AFTER.max(4 * u64::from(most)),
            file: Mutex::new(Appending {
                file: rewrite(path, &recent)?,
                records: recent.len() as u64,
            }),
        };
        Ok((journal, recent))
    }

    /// Records a call going out at `at`, before it goes. Compacts the file when it is due.
    pub(crate) fn record(&self, at: SystemTime) -> io::Result<()> {
        let mut appending = self.lock();
        appending.file.write_all(&unix_ms(at).to_le_bytes())?;
        appending.records += 1;
        if appending.records >= self.compact_after {
            let recent = read_recent(&self.path, self.keep, at)?;
            appending.file = rewrite(&self.path, &recent)?;
            appending.records = recent.len() as u64;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Appending> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The calls recorded at `path` that still count at `now` (none if there is no file).
fn read_recent(path: &Path, keep: Duration, now: SystemTime) -> io::Result<Vec<SystemTime>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let since = now.checked_sub(keep).unwrap_or(UNIX_EPOCH);
    // A torn last record (fewer than 8 bytes) is left out by `chunks_exact`.
    Ok(bytes
        .chunks_exact(8)
        .filter_map(|b| {
            let ms = u64::from_le_bytes(b.try_into().ok()?);
            UNIX_EPOCH.checked_add(Duration::from_millis(ms))
        })
        .filter(|&t| t > since)
        .collect())
}

/// Writes `calls` to a new file renamed over `path`, and returns it open for appending.
fn rewrite(path: &Path, calls: &[SystemTime]) -> io::Result<File> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let new = path.with_file_name(name);
    let mut bytes = Vec::with_capacity(calls.len() * 8);
    for &t in calls {
        bytes.extend_from_slice(&unix_ms(t).to_le_bytes());
    }
    fs::write(&new, &bytes)?;
    fs::rename(&new, path)?;
    OpenOptions::new().append(true).open(path)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fbx-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("calls")
    }

    #[test]
    fn reopening_gives_the_calls_that_still_count_and_ignores_a_torn_record() {
        let path = temp("reopen");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        let (journal, earlier) = CallJournal::open(&path, minute, 60, t0).unwrap();
        assert!(earlier.is_empty());
        for s in [0, 10, 50, 59] {
            journal.record(t0 + Duration::from_secs(s)).unwrap();
        }
        drop(journal);
        // A crash in the middle of a record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        // 65 s after t0, the call of t0 + 0 s is past the window.
        let (_, earlier) =
            CallJournal::open(&path, minute, 60, t0 + Duration::from_secs(65)).unwrap();
        let secs: Vec<u64> = earlier
            .iter()
            .map(|t| t.duration_since(t0).unwrap().as_secs())
            .collect();
        assert_eq!(secs, [10, 50, 59]);
        // Opening rewrote the file with those three only (the torn record is gone).
        assert_eq!(fs::metadata(&path).unwrap().len(), 24);
    }

    #[test]
    fn the_file_is_compacted_to_the_calls_that_still_count() {
        let path = temp("compact");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let second = Duration::from_secs(1);
        let (journal, _) = CallJournal::open(&path, second, 1, t0).unwrap();
        // One call per millisecond: at each compaction, only the last second's 1,000 remain.
        for ms in 0..(2 * COMPACT_AFTER) {
            journal.record(t0 + Duration::from_millis(ms)).unwrap();
        }
        let records = fs::metadata(&path).unwrap().len() / 8;
        assert!(records < COMPACT_AFTER, "{records} records");
        let last = t0 + Duration::from_millis(2 * COMPACT_AFTER - 1);
        let (_, earlier) = CallJournal::open(&path, second, 1, last).unwrap();
        assert_eq!(
            earlier.len(),
            1_000,
            "the calls of the last second before {last:?}"
        );
    }
}
