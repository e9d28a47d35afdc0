//! A key's call journal: the wall-clock time of each call, written before the call goes out, so
//! that a program that stops — even killed — and starts again knows which of its calls the server
//! still counts ([`KeyConfig::call_journal`](crate::KeyConfig::call_journal)).
//!
//! Records are written in groups: [`CallJournal::record`] keeps a call's record in memory, and the
//! shard writes every key's records of a turn in one `write` per key ([`Unflushed::flush`]) before
//! it polls the turn's calls — a call's request leaves only when its future is polled, so each
//! record still reaches the file before its call goes. A `kill -9` loses only records of calls
//! that had not gone (their futures never polled): none of a call that was sent.
//!
//! The file is a sequence of 8-byte little-endian integers, one per call: milliseconds since the
//! Unix epoch, rounded up. A write cut short leaves a multiple of 8 bytes fewer than it meant, or
//! fewer than 8 at the end, which are ignored (those calls were not sent: their records are written
//! first) and cut off. The file is appended to without `fsync`: what a killed process wrote is in
//! the operating system's cache and survives it; a power loss may lose the last records. Once it holds [`COMPACT_AFTER`] records or more, it
//! is rewritten with only those still within the key's longest window (a new file, synced, renamed
//! over the old). A lock on `PATH.lock`, held while the journal is open, keeps a second key or
//! program from writing the same journal (its records would go to a file the first one replaces).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// The journal open for appending, and its lock file (locked); `None` once closed.
    open: Option<(File, File)>,
    /// Records in the file.
    records: u64,
    /// Records at which the next compaction is tried.
    next_compaction: u64,
    /// Records of calls about to go, not yet written: 8 bytes each.
    unwritten: Vec<u8>,
    /// The time of the newest record (written or not).
    newest: SystemTime,
    /// Whether a compaction runs (in a thread of its own).
    compacting: bool,
    /// Bumped when the file is opened again after a close: a compaction begun before gives up.
    generation: u64,
}

impl CallJournal {
    /// Opens the journal at `path` (created if missing) for a key whose calls count for `keep`,
    /// adds `also` (calls the key is told of otherwise, [`KeyConfig::sent_earlier`]
    /// (crate::KeyConfig::sent_earlier)), and returns the calls that still count at `now`: newer
    /// than `now - keep`, and not later than `now + keep` (a later record is not a time this
    /// program wrote: a corrupt file or a clock set far off). It is compacted after
    /// `max(COMPACT_AFTER, 4 × most)` records, `most` being the quota's largest count. Fails if
    /// another journal holds `path` open.
    pub(crate) fn open(
        path: &Path,
        keep: Duration,
        most: u32,
        now: SystemTime,
        also: &[SystemTime],
    ) -> io::Result<(Self, Vec<SystemTime>)> {
        let lock = lock(path)?;
        let recent = calls_that_count(Some(path), keep, now, also)?;
        let compact_after = COMPACT_AFTER.max(4 * u64::from(most));
        let journal = Self {
            path: path.to_path_buf(),
            keep,
            compact_after,
            file: Mutex::new(Appending {
                open: Some((rewrite(path, &recent)?, lock)),
                records: recent.len() as u64,
                next_compaction: compact_after,
                unwritten: Vec::new(),
                newest: now,
                compacting: false,
                generation: 0,
            }),
        };
        Ok((journal, recent))
    }

    /// Records a call going out at `at`, before it goes: kept in memory until [`flush`]
    /// (Self::flush), which must come before the call's future is first polled. True if it is the
    /// first record since the last flush (the journal is then to be listed in its shard's
    /// [`Unflushed`]).
    pub(crate) fn record(&self, at: SystemTime) -> bool {
        let mut appending = self.lock();
        let first = appending.unwritten.is_empty();
        appending
            .unwritten
            .extend_from_slice(&unix_ms(at).to_le_bytes());
        appending.newest = appending.newest.max(at);
        first
    }

    /// Writes the records kept since the last flush, in one `write`. Starts a compaction when it
    /// is due, in a thread of its own ([`compact`](Self::compact)): the calls of the turn wait
    /// for this write only, not for a rewrite and its sync. On an error the records are dropped
    /// (their calls go anyway, as they would without a journal) and the file cut back to whole
    /// records.
    pub(crate) fn flush(self: &Arc<Self>) -> io::Result<()> {
        self.flush_sent_by(None)
    }

    /// As [`flush`](Self::flush), the calls going out once this returns: a record earlier than
    /// `sent_by` is written as `sent_by`, so that no record is earlier than its call, however long
    /// the turn took between recording a call and sending it.
    pub(crate) fn flush_sent_by(self: &Arc<Self>, sent_by: Option<SystemTime>) -> io::Result<()> {
        let mut appending = self.lock();
        if appending.unwritten.is_empty() {
            return Ok(());
        }
        if let Some(at) = sent_by {
            let floor_ms = unix_ms(at);
            for record in appending.unwritten.chunks_exact_mut(8) {
                let ms = u64::from_le_bytes(record.try_into().unwrap_or([0; 8]));
                if ms < floor_ms {
                    record.copy_from_slice(&floor_ms.to_le_bytes());
                }
            }
            appending.newest = appending.newest.max(at);
        }
        let unwritten = std::mem::take(&mut appending.unwritten);
        let written = self.append(&mut appending, &unwritten);
        // The buffer is kept for the next group (its capacity, not its records).
        let mut buffer = unwritten;
        buffer.clear();
        appending.unwritten = buffer;
        written?;
        if appending.records >= appending.next_compaction && !appending.compacting {
            appending.compacting = true;
            let journal = Arc::clone(self);
            let (records, generation, at) =
                (appending.records, appending.generation, appending.newest);
            let started = std::thread::Builder::new()
                .name("fabraix-journal".into())
                .spawn(move || journal.compact(records, generation, at));
            if let Err(e) = started {
                appending.compacting = false;
                appending.next_compaction = appending.records + self.compact_after;
                tracing::warn!(path = %self.path.display(), error = %e, "could not compact a call journal; it keeps growing");
            }
        }
        Ok(())
    }

    /// Appends whole records to the file (opened again if a shutdown closed it).
    fn append(&self, appending: &mut Appending, records: &[u8]) -> io::Result<()> {
        if appending.open.is_none() {
            // Closed by a shutdown, and a call still goes: open it again.
            let lock = lock(&self.path)?;
            let file = OpenOptions::new().append(true).open(&self.path)?;
            appending.records = file.metadata()?.len() / 8;
            appending.open = Some((file, lock));
            appending.generation += 1;
        }
        let before = appending.records;
        let Some((file, _)) = appending.open.as_mut() else {
            unreachable!("opened above");
        };
        if let Err(e) = file.write_all(records) {
            // Part of a record would put every later one out of step: cut it off.
            let _ = file.set_len(before * 8);
            return Err(e);
        }
        appending.records += (records.len() / 8) as u64;
        Ok(())
    }

    /// Rewrites the file with only the calls that still count at `at`, the newest record when
    /// it began with `records` records. Unlocked: those records are read and the ones that still
    /// count written to a new file, synced. Locked: the records appended since are added to it,
    /// and it is renamed over the old. A compaction that fails is logged and tried again after
    /// as many more records; one overtaken by a close gives up.
    fn compact(&self, records: u64, generation: u64, at: SystemTime) {
        let new = sibling(&self.path, ".new");
        let kept = read_recent_of(&self.path, records, self.keep, at)
            .and_then(|recent| write_synced(&new, &recent).map(|()| recent.len() as u64));
        let mut appending = self.lock();
        appending.compacting = false;
        if appending.generation != generation || appending.open.is_none() {
            let _ = fs::remove_file(&new);
            return;
        }
        let renamed = kept.and_then(|kept| {
            let tail = read_after(&self.path, records * 8)?;
            let mut file = OpenOptions::new().append(true).open(&new)?;
            file.write_all(&tail)?;
            fs::rename(&new, &self.path)?;
            Ok((file, kept + (tail.len() / 8) as u64))
        });
        match renamed {
            Ok((file, now_held)) => {
                if let Some((appended, _)) = appending.open.as_mut() {
                    *appended = file;
                }
                appending.records = now_held;
                appending.next_compaction = now_held.saturating_add(self.compact_after);
            }
            Err(e) => {
                let _ = fs::remove_file(&new);
                appending.next_compaction = appending.records + self.compact_after;
                tracing::warn!(path = %self.path.display(), error = %e, "could not compact a call journal; it keeps growing");
            }
        }
    }

    /// Writes what is kept, closes the file and lets go of its lock, so that another journal
    /// (the next run's, in this process) may open it. A call recorded after this opens it again.
    pub(crate) fn close(self: &Arc<Self>) {
        if let Err(e) = self.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write a call journal's last records");
        }
        self.lock().open = None;
    }

    fn lock(&self) -> MutexGuard<'_, Appending> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The journals of one shard's keys with records not yet written: each listed once, by the call
/// that made its first record since it was last written ([`CallJournal::record`]'s answer).
#[derive(Debug, Default)]
pub(crate) struct Unflushed(Mutex<Vec<Arc<CallJournal>>>);

impl Unflushed {
    /// Lists `journal` to be written at the next [`flush`](Self::flush).
    pub(crate) fn add(&self, journal: &Arc<CallJournal>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(journal));
    }

    /// Writes every listed journal's records: once per turn of the shard, before it polls the
    /// calls it started. A journal that cannot be written is logged; its calls go anyway.
    /// `now` is read (once) only if a journal is listed: its records are written as no earlier
    /// than that.
    pub(crate) fn flush(&self, now: impl FnOnce() -> SystemTime) {
        // Only the shard's own task lists journals: the lock is never waited for.
        let mut listed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if listed.is_empty() {
            return;
        }
        let sent_by = now();
        for journal in listed.drain(..) {
            if let Err(e) = journal.flush_sent_by(Some(sent_by)) {
                tracing::warn!(path = %journal.path.display(), error = %e, "could not record calls in a key's journal");
            }
        }
    }
}

/// Takes the lock file of the journal at `path`.
fn lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sibling(path, ".lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "in use by another key or program",
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a call at `t` still counts at `now` (see [`CallJournal::open`]).
fn counts(t: SystemTime, keep: Duration, now: SystemTime) -> bool {
    let since = now.checked_sub(keep).unwrap_or(UNIX_EPOCH);
    t > since && now.checked_add(keep).is_none_or(|until| t <= until)
}

/// The calls recorded in the call journal at `path`
/// ([`KeyConfig::call_journal`](crate::KeyConfig::call_journal)) that still count at `now` (wall
/// clock) for a key whose calls count for `counted_for` (its quota's longest window plus the
/// ledger's guard, [`LedgerConfig::counted_for`](crate::LedgerConfig::counted_for)): not older
/// than that, nor that far ahead. Oldest first; none if there is no file. The file is only read,
/// never locked or written, so a journal in use may be read (to plan a resumed batch without
/// sending, say). For a key's configuration,
/// [`KeyConfig::calls_that_count`](crate::KeyConfig::calls_that_count) adds the calls it was told
/// of.
///
/// ```
/// use fabraix_scheduler::read_call_journal;
/// use std::time::{Duration, SystemTime};
/// let path = std::env::temp_dir().join("fabraix-doc-no-such-journal");
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let calls = read_call_journal(&path, Duration::from_secs(3_600), now).unwrap();
/// assert!(calls.is_empty());
/// ```
pub fn read_call_journal(
    path: &Path,
    counted_for: Duration,
    now: SystemTime,
) -> io::Result<Vec<SystemTime>> {
    calls_that_count(Some(path), counted_for, now, &[])
}

/// The calls that still count at `now` (see [`CallJournal::open`]) of those recorded at `path` (if
/// given; none if there is no file) and of `also`, oldest first. The file is only read: neither
/// locked nor written.
pub(crate) fn calls_that_count(
    path: Option<&Path>,
    keep: Duration,
    now: SystemTime,
    also: &[SystemTime],
) -> io::Result<Vec<SystemTime>> {
    let mut recent = match path {
        Some(path) => read_recent(path, keep, now)?,
        None => Vec::new(),
    };
    recent.extend(also.iter().filter(|&&t| counts(t, keep, now)));
    recent.sort_unstable();
    Ok(recent)
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
    Ok(recent_of(&bytes, keep, now))
}

/// The calls recorded in `bytes` that still count at `now`.
fn recent_of(bytes: &[u8], keep: Duration, now: SystemTime) -> Vec<SystemTime> {
    // A torn last record (fewer than 8 bytes) is left out by `chunks_exact`.
    bytes
        .chunks_exact(8)
        .filter_map(|b| {
            let ms = u64::from_le_bytes(b.try_into().ok()?);
            UNIX_EPOCH.checked_add(Duration::from_millis(ms))
        })
        .filter(|&t| counts(t, keep, now))
        .collect()
}

/// The calls among the first `records` records at `path` that still count at `now`.
fn read_recent_of(
    path: &Path,
    records: u64,
    keep: Duration,
    now: SystemTime,
) -> io::Result<Vec<SystemTime>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(records.saturating_mul(8))
        .read_to_end(&mut bytes)?;
    Ok(recent_of(&bytes, keep, now))
}

/// The whole records of the file at `path` from byte `offset` on.
fn read_after(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    bytes.truncate(bytes.len() / 8 * 8);
    Ok(bytes)
}

/// Writes `calls` to a new file at `path`, synced.
fn write_synced(path: &Path, calls: &[SystemTime]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(calls.len() * 8);
    for &t in calls {
        bytes.extend_from_slice(&unix_ms(t).to_le_bytes());
    }
    let mut file = File::create(path)?;
    file.write_all(&bytes)?;
    file.sync_data()
}

/// Writes `calls` to a new file, synced, renamed over `path`, and returns it open for appending.
fn rewrite(path: &Path, calls: &[SystemTime]) -> io::Result<File> {
    let new = sibling(path, ".new");
    write_synced(&new, calls)?;
    fs::rename(&new, path)?;
    OpenOptions::new().append(true).open(path)
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Milliseconds since the Unix epoch, rounded up (a record is never earlier than its call).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records a call and writes it, as a shard's turn does.
    fn written(journal: &Arc<CallJournal>, at: SystemTime) {
        journal.record(at);
        journal.flush().unwrap();
        compacted(journal);
    }

    /// Waits for a compaction in its thread to end and let go of the journal (a few
    /// milliseconds; at most 10 s).
    fn compacted(journal: &Arc<CallJournal>) {
        for _ in 0..10_000 {
            if !journal.lock().compacting && Arc::strong_count(journal) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the compaction did not end");
    }

    /// `CallJournal::open`, shared as a key holds it.
    fn open(
        path: &Path,
        keep: Duration,
        most: u32,
        now: SystemTime,
        also: &[SystemTime],
    ) -> io::Result<(Arc<CallJournal>, Vec<SystemTime>)> {
        CallJournal::open(path, keep, most, now, also).map(|(j, e)| (Arc::new(j), e))
    }

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
        let (journal, earlier) = open(&path, minute, 60, t0, &[]).unwrap();
        assert!(earlier.is_empty());
        for s in [0, 10, 50, 59] {
            written(&journal, t0 + Duration::from_secs(s));
        }
        drop(journal);
        // A crash in the middle of a record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        // 65 s after t0, the call of t0 + 0 s is past the window.
        let (_, earlier) = open(&path, minute, 60, t0 + Duration::from_secs(65), &[]).unwrap();
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
        let (journal, _) = open(&path, second, 1, t0, &[]).unwrap();
        // One call per millisecond: at each compaction, only the last second's 1,000 remain.
        for ms in 0..(2 * COMPACT_AFTER) {
            written(&journal, t0 + Duration::from_millis(ms));
        }
        let records = fs::metadata(&path).unwrap().len() / 8;
        assert!(records < COMPACT_AFTER, "{records} records");
        let last = t0 + Duration::from_millis(2 * COMPACT_AFTER - 1);
        drop(journal);
        let (_, earlier) = open(&path, second, 1, last, &[]).unwrap();
        assert_eq!(
            earlier.len(),
            1_000,
            "the calls of the last second before {last:?}"
        );
    }

    #[test]
    fn a_journal_in_use_is_refused_and_records_far_ahead_or_told_otherwise_are_sorted_out() {
        let path = temp("lock");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        let told = [t0 - Duration::from_secs(30), t0 - Duration::from_secs(90)];
        let (journal, earlier) = open(&path, minute, 60, t0, &told).unwrap();
        // The call told of 30 s ago counts (and is now in the file); the one of 90 s ago does not.
        assert_eq!(earlier, [t0 - Duration::from_secs(30)]);
        let second = open(&path, minute, 60, t0, &[]).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock);
        // A record an hour ahead of now is not a time this program wrote.
        written(&journal, t0 + Duration::from_secs(3600));
        written(&journal, t0);
        drop(journal);
        let (_, earlier) = open(&path, minute, 60, t0, &[]).unwrap();
        assert_eq!(earlier, [t0 - Duration::from_secs(30), t0]);
    }

    #[test]
    fn a_closed_journal_can_be_opened_by_the_next_run_and_still_records() {
        let path = temp("close");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        let (journal, _) = open(&path, minute, 60, t0, &[]).unwrap();
        written(&journal, t0);
        journal.close();
        let (next, earlier) = open(&path, minute, 60, t0, &[]).unwrap();
        assert_eq!(earlier, [t0]);
        drop(next);
        // A late call of the closed one opens it again (the next run's is gone).
        written(&journal, t0 + Duration::from_secs(1));
        assert_eq!(fs::metadata(&path).unwrap().len(), 16);
    }

    #[test]
    fn a_journal_in_use_can_be_read_without_being_changed() {
        let path = temp("read-only");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        let (journal, _) = open(&path, minute, 60, t0, &[]).unwrap();
        for s in [0, 20, 40] {
            written(&journal, t0 + Duration::from_secs(s));
        }
        // Read while the journal is held, 70 s after t0: the call at t0 is out of the window,
        // and a call told of 5 s ago goes in order.
        let now = t0 + Duration::from_secs(70);
        let told = [now - Duration::from_secs(5)];
        let calls = calls_that_count(Some(&path), minute, now, &told).unwrap();
        let secs: Vec<u64> = calls
            .iter()
            .map(|t| t.duration_since(t0).unwrap().as_secs())
            .collect();
        assert_eq!(secs, [20, 40, 65]);
        // Nothing was written, and the journal still records.
        assert_eq!(fs::metadata(&path).unwrap().len(), 24);
        written(&journal, now);
        assert_eq!(fs::metadata(&path).unwrap().len(), 32);
        // No file: only the calls told of.
        let none = calls_that_count(Some(&path.with_extension("none")), minute, now, &told);
        assert_eq!(none.unwrap(), told);
    }

    #[test]
    fn records_reach_the_file_in_groups_at_each_flush_and_at_close() {
        let path = temp("groups");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minute = Duration::from_secs(60);
        let (journal, _) = open(&path, minute, 60, t0, &[]).unwrap();
        let unflushed = Unflushed::default();
        // The first record of a group lists the journal; the others do not.
        for s in 0..3 {
            if journal.record(t0 + Duration::from_secs(s)) {
                unflushed.add(&journal);
            }
        }
        assert_eq!(unflushed.0.lock().unwrap().len(), 1);
        // Not written until the shard's flush (a kill -9 now loses calls that never went).
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        // Flushed 10 s after the first record: the records say when the calls went at the
        // earliest, the flush, not when they were recorded.
        unflushed.flush(|| t0 + Duration::from_secs(10));
        assert_eq!(fs::metadata(&path).unwrap().len(), 24);
        let bytes = fs::read(&path).unwrap();
        let stamps: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|r| u64::from_le_bytes(r.try_into().unwrap()))
            .collect();
        assert_eq!(stamps, [unix_ms(t0 + Duration::from_secs(10)); 3]);
        assert!(unflushed.0.lock().unwrap().is_empty());
        // What is kept at close is written then.
        assert!(journal.record(t0 + Duration::from_secs(3)));
        journal.close();
        assert_eq!(fs::metadata(&path).unwrap().len(), 32);
        let (_, earlier) = open(&path, minute, 60, t0, &[]).unwrap();
        assert_eq!(earlier.len(), 4);
    }

    #[test]
    fn a_compaction_keeps_the_records_written_while_it_ran_and_gives_up_after_a_close() {
        let path = temp("compact-tail");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let second = Duration::from_secs(1);
        let (journal, _) = open(&path, second, 1, t0, &[]).unwrap();
        // Ten calls 200 ms apart: at t0 + 1.8 s the last five still count (those after t0 + 0.8 s).
        for i in 0..10 {
            written(&journal, t0 + Duration::from_millis(200 * i));
        }
        let at = t0 + Duration::from_millis(1_800);
        // The compaction reads those ten; three more are written before it renames.
        let (records, generation) = {
            let a = journal.lock();
            (a.records, a.generation)
        };
        for i in 10..13 {
            written(&journal, t0 + Duration::from_millis(200 * i));
        }
        journal.compact(records, generation, at);
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 * (5 + 3));
        assert_eq!(journal.lock().records, 8);
        // Later records go to the compacted file.
        written(&journal, t0 + Duration::from_millis(2_600));
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 * 9);
        // A compaction overtaken by a close leaves the file as it is.
        let (records, generation) = {
            let a = journal.lock();
            (a.records, a.generation)
        };
        journal.close();
        journal.compact(records, generation, t0 + Duration::from_secs(60));
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 * 9);
        assert!(!sibling(&path, ".new").exists());
    }
}
