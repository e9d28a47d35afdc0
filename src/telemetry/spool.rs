//! The disk spool: append-only segment files of framed, checksummed records, replayed in order
//! and removed once every record in them is resolved (acknowledged by the server, dead-lettered
//! or dropped by the full-spool policy).
//!
//! ```text
//! <dir>/00000000000000000001.seg   records 1 ..            (named by their first sequence number)
//! <dir>/00000000000000031207.seg   records 31207 ..        (a new segment every `segment_bytes`)
//! <dir>/ack                         "every record below N is resolved" (written to ack.tmp, renamed)
//! <dir>/failed.log                  records the server refused for good (same framing)
//! ```
//!
//! Group commit: [`Spool::append`] only frames the record into an in-memory write buffer and
//! returns its sequence number (no system call); [`Spool::commit`] writes the whole buffer with
//! one `write` call. The *durable watermark* ([`Spool::durable_through`]) is the highest sequence
//! number such that it and every record before it are in the file: they survive the process
//! being killed (the operating system holds them); [`Spool::sync`] also survives a power loss.
//! A crash loses the records above the watermark, and at most one batch is torn: a crash
//! mid-write leaves a torn record at the end of the last segment, which is detected on
//! [`Spool::open`], reported in [`RecoveryReport`], and cut off; the records before it are intact.
//! A checksum mismatch elsewhere (a damaged disk) ends that segment at the last good record, also
//! reported. The reader only ever reads bytes below the watermark. The ack cursor is advisory: if
//! it is stale after a crash, acknowledged records are sent again (at-least-once), never lost.
//!
//! A batch goes to one segment: a new segment starts with the first batch committed after the
//! current one reached `segment_bytes`, so a segment may exceed it by one batch.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{self, Frame, FrameError, Kind, HEADER_LEN, MAX_PAYLOAD};

/// A new segment is started after this many bytes, by default (4 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;
/// The ack cursor is rewritten at least every this many resolved records (and at every segment
/// removal and [`Spool::sync`]).
const CURSOR_EVERY: u64 = 256;
const CURSOR_FILE: &str = "ack";
const DEAD_LETTER_FILE: &str = "failed.log";

/// Damage found in one segment when the spool was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// A torn tail (crash mid-write) or corruption, with its byte offset.
    pub error: FrameError,
    /// Bytes cut off the segment from that offset on.
    pub discarded_bytes: u64,
}

/// What the telemetry spool found when it was opened
/// ([`TelemetrySender::open`](super::TelemetrySender::open)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records found that still have to be sent (replayed in order).
    pub replay: u64,
    /// Segments removed because every record in them was already resolved (or none was valid).
    pub segments_removed: usize,
    /// Torn tails and corrupt records found, each cut off and reported here.
    pub damaged: Vec<Damage>,
    /// The ack cursor could not be read (the spool then replays everything it holds).
    pub cursor_problem: Option<String>,
}

impl RecoveryReport {
    /// Whether a torn tail was found (the previous process died mid-write).
    pub fn torn_tail(&self) -> bool {
        self.damaged
            .iter()
            .any(|d| matches!(d.error, FrameError::Torn { .. }))
    }
}

/// Reads one segment file, never past a byte limit (the committed length of the segment being
/// written), so it never sees a batch that is still being written.
struct SegmentReader {
    first_seq: u64,
    file: File,
    /// File offset of the next byte `file` yields.
    file_pos: u64,
    /// Bytes read from the file; `buf[start..]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
}

/// Bytes the reader asks the file for at once.
const READ_CHUNK: usize = 64 << 10;

impl SegmentReader {
    fn open(dir: &Path, first_seq: u64) -> io::Result<Self> {
        Ok(Self {
            first_seq,
            file: File::open(dir.join(segment_name(first_seq)))?,
            file_pos: 0,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        })
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Makes at least `need` unconsumed bytes available, reading no byte at or past file offset
    /// `limit`. `false`: the file (or the limit) ends first.
    fn fill(&mut self, need: usize, limit: u64) -> io::Result<bool> {
        while self.buffered() < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let want = (need - self.buf.len()).max(READ_CHUNK);
            let allowed = limit.saturating_sub(self.file_pos);
            let n = (want as u64).min(allowed) as usize;
            if n == 0 {
                return Ok(false);
            }
            let old = self.buf.len();
            self.buf.resize(old + n, 0);
            let got = match self.file.read(&mut self.buf[old..]) {
                Ok(got) => got,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                return Ok(false);
            }
            self.file_pos += got as u64;
        }
        Ok(true)
    }

    /// The next whole frame's bytes (consumed), or `None` when no whole frame lies before `limit`
    /// or the end of the file.
    fn next_frame(&mut self, limit: u64) -> io::Result<Option<Frame>> {
        if !self.fill(HEADER_LEN, limit)? {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt spool record length",
            ));
        }
        if !self.fill(HEADER_LEN + len, limit)? {
            return Ok(None);
        }
        let whole = &self.buf[self.start..self.start + HEADER_LEN + len];
        let decoded =
            frame::decode(whole, 0).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.start += HEADER_LEN + len;
        Ok(decoded.map(|(frame, _)| frame))
    }
}

/// The segment being written: its file, first sequence number and committed length in bytes.
struct Writer {
    file: Arc<File>,
    first_seq: u64,
    committed: u64,
}

/// A write buffer taken out of the spool, to be written without holding the spool (see
/// [`Spool::take_batch`]). Records `first_seq .. end_seq`, framed, in `bytes`.
pub(crate) struct Batch {
    file: Arc<File>,
    segment_first: u64,
    new_segment: bool,
    /// The file's length before this batch (where a failed write is cut back to).
    offset_before: u64,
    bytes: Vec<u8>,
    first_seq: u64,
    end_seq: u64,
}

impl Batch {
    /// Writes the batch with one `write_all` (one `write` system call for a regular file). On
    /// failure, cuts the file back to its length before the batch; the error says whether that
    /// worked (`true`: the file is as before).
    pub(crate) fn write(&self) -> Result<(), (io::Error, bool)> {
        match (&*self.file).write_all(&self.bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                let restored = self.file.set_len(self.offset_before).is_ok();
                Err((e, restored))
            }
        }
    }

    /// Records in the batch.
    pub(crate) fn records(&self) -> u64 {
        self.end_seq - self.first_seq
    }
}

/// An append-only, checksummed, crash-safe record log in one directory. Not shared between
/// processes: open one spool directory from one sender at a time.
pub(crate) struct Spool {
    dir: PathBuf,
    segment_bytes: u64,
    /// First sequence numbers of the segment files holding committed records, oldest first.
    segments: VecDeque<u64>,
    writer: Option<Writer>,
    /// A segment whose file may hold bytes past this length that are not records (a failed write
    /// that could not be cut back): the reader stops there.
    cut: Option<(u64, u64)>,
    /// The write buffer: framed records `pending_first .. next_seq`, not written yet.
    pending: Vec<u8>,
    pending_first: u64,
    /// The previous write buffer, kept for its capacity.
    spare: Vec<u8>,
    /// A batch was taken by [`take_batch`](Self::take_batch) and is being written.
    in_flight: bool,
    /// Every record below this is in a segment file (the durable watermark + 1).
    durable_next: u64,
    next_seq: u64,
    reader: Option<SegmentReader>,
    /// Every record below this was read (or skipped as resolved).
    read_through: u64,
    /// Read but not yet resolved.
    outstanding: BTreeSet<u64>,
    unread: u64,
    cursor_written: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("unread", &self.unread)
            .field("outstanding", &self.outstanding.len())
            .field("pending", &self.pending_records())
            .finish_non_exhaustive()
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, recovers it (see the module docs) and
    /// positions the reader at the oldest unresolved record. `segment_bytes` (at least 4 KiB) is
    /// when a new segment file starts.
    pub(crate) fn open(
        dir: impl AsRef<Path>,
        segment_bytes: u64,
    ) -> io::Result<(Self, RecoveryReport)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let mut report = RecoveryReport::default();
        let resolved_below = match fs::read_to_string(dir.join(CURSOR_FILE)) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(n) => n,
                Err(e) => {
                    report.cursor_problem = Some(format!("unreadable ack cursor {s:?}: {e}"));
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => {
                report.cursor_problem = Some(format!("cannot read the ack cursor: {e}"));
                0
            }
        };
        let mut names: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
                names.push(first);
            }
        }
        names.sort_unstable();
        let mut segments = VecDeque::new();
        let mut max_seq = resolved_below.saturating_sub(1);
        let mut unread = 0u64;
        for first in names {
            let path = dir.join(segment_name(first));
            let bytes = fs::read(&path)?;
            let scan = frame::scan_segment(&bytes);
            if let Some(error) = scan.damage {
                let discarded_bytes = bytes.len() as u64 - scan.valid_len;
                tracing::warn!(segment = %path.display(), %error, discarded_bytes, "telemetry spool: damaged segment cut at the last good record");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(scan.valid_len)?;
                report.damaged.push(Damage {
                    segment: path.clone(),
                    error,
                    discarded_bytes,
                });
            }
            max_seq = max_seq.max(first);
            let live = scan
                .frames
                .iter()
                .filter(|f| f.seq >= resolved_below)
                .count() as u64;
            if let Some(last) = scan.frames.last() {
                max_seq = max_seq.max(last.seq);
            }
            if live == 0 {
                fs::remove_file(&path)?;
                report.segments_removed += 1;
            } else {
                unread += live;
                segments.push_back(first);
            }
        }
        report.replay = unread;
        let next_seq = (max_seq + 1).max(resolved_below).max(1);
        let spool = Self {
            dir,
            segment_bytes: segment_bytes.max(4096),
            segments,
            writer: None,
            cut: None,
            pending: Vec::new(),
            pending_first: next_seq,
            spare: Vec::new(),
            in_flight: false,
            durable_next: next_seq,
            next_seq,
            reader: None,
            read_through: resolved_below,
            outstanding: BTreeSet::new(),
            unread,
            cursor_written: resolved_below,
        };
        if report.replay > 0 || !report.damaged.is_empty() {
            tracing::info!(dir = %spool.dir.display(), replay = report.replay, damaged = report.damaged.len(), "telemetry spool: recovered");
        }
        Ok((spool, report))
    }

    /// Appends a record to the write buffer and returns its sequence number; no system call. The
    /// record is in the file once [`durable_through`](Self::durable_through) reaches that number:
    /// after the next [`commit`](Self::commit) (or [`sync`](Self::sync), or a read that needs
    /// it). `body` must be under 1 MiB.
    pub(crate) fn append(&mut self, kind: Kind, body: &[u8]) -> io::Result<u64> {
        if body.len() + frame::PAYLOAD_PREFIX > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record larger than 1 MiB",
            ));
        }
        let seq = self.next_seq;
        frame::encode_into(&mut self.pending, seq, kind, body);
        self.next_seq += 1;
        self.unread += 1;
        Ok(seq)
    }

    /// Records in the write buffer (appended, not written yet; a batch being written not
    /// included).
    pub(crate) fn pending_records(&self) -> u64 {
        self.next_seq - self.pending_first
    }

    /// The durable watermark: every record with a sequence number up to this one is in a segment
    /// file (it survives the process being killed; [`sync`](Self::sync) for power loss). 0 before
    /// the first record.
    pub(crate) fn durable_through(&self) -> u64 {
        self.durable_next.saturating_sub(1)
    }

    /// The next sequence number `append` will return.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes the write buffer to the current segment (starting a new one past `segment_bytes`)
    /// with one `write` call. Returns the durable watermark. Fails with
    /// [`io::ErrorKind::WouldBlock`] while a batch taken by another writer is being written. On a
    /// write error the records stay buffered (the file is cut back to its last whole record) and
    /// a later commit retries them.
    pub(crate) fn commit(&mut self) -> io::Result<u64> {
        if self.in_flight {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a batch is being written",
            ));
        }
        if let Some(batch) = self.take_batch()? {
            let result = batch.write();
            self.finish_batch(batch, result)?;
        }
        Ok(self.durable_through())
    }

    /// Takes the write buffer out as a [`Batch`] to be written without holding the spool; at most
    /// one batch is out at a time (`None` while one is, or when nothing is buffered). Opens a new
    /// segment file if the current one is full. Must be followed by
    /// [`finish_batch`](Self::finish_batch).
    pub(crate) fn take_batch(&mut self) -> io::Result<Option<Batch>> {
        if self.in_flight || self.pending.is_empty() {
            return Ok(None);
        }
        let rotate = self
            .writer
            .as_ref()
            .is_none_or(|w| w.committed >= self.segment_bytes);
        let (file, segment_first, offset_before) = if rotate {
            let first = self.pending_first;
            let path = self.dir.join(segment_name(first));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if file.metadata()?.len() > 0 {
                // Left over by a failed write of this same batch: not records yet.
                file.set_len(0)?;
            }
            tracing::debug!(dir = %self.dir.display(), first, "telemetry spool: new segment");
            (Arc::new(file), first, 0)
        } else {
            let w = self
                .writer
                .as_ref()
                .ok_or_else(|| io::Error::other("no writer"))?;
            (Arc::clone(&w.file), w.first_seq, w.committed)
        };
        let bytes = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        let batch = Batch {
            file,
            segment_first,
            new_segment: rotate,
            offset_before,
            bytes,
            first_seq: self.pending_first,
            end_seq: self.next_seq,
        };
        self.pending_first = self.next_seq;
        self.in_flight = true;
        Ok(Some(batch))
    }

    /// Ends a batch: on success its records are durable (the watermark moves past them) and
    /// readable; on failure they go back to the front of the write buffer, to be retried, and the
    /// error is returned.
    pub(crate) fn finish_batch(
        &mut self,
        mut batch: Batch,
        result: Result<(), (io::Error, bool)>,
    ) -> io::Result<()> {
        self.in_flight = false;
        match result {
            Ok(()) => {
                let end = batch.offset_before + batch.bytes.len() as u64;
                if batch.new_segment {
                    self.segments.push_back(batch.segment_first);
                    self.writer = Some(Writer {
                        file: batch.file,
                        first_seq: batch.segment_first,
                        committed: end,
                    });
                } else if let Some(w) = &mut self.writer {
                    w.committed = end;
                }
                self.durable_next = batch.end_seq;
                batch.bytes.clear();
                if batch.bytes.capacity() > self.spare.capacity() {
                    self.spare = batch.bytes;
                }
                Ok(())
            }
            Err((e, restored)) => {
                if batch.new_segment {
                    let _ = fs::remove_file(self.dir.join(segment_name(batch.segment_first)));
                } else if !restored {
                    // The segment may end in a torn record: stop reading it at its last whole
                    // record, and write the retry to a new segment.
                    self.cut = Some((batch.segment_first, batch.offset_before));
                    self.writer = None;
                }
                batch.bytes.extend_from_slice(&self.pending);
                self.pending = batch.bytes;
                self.pending_first = batch.first_seq;
                self.durable_next = batch.first_seq;
                tracing::error!(dir = %self.dir.display(), error = %e, records = batch.end_seq - batch.first_seq, "telemetry spool: write failed; the records stay buffered and are retried");
                Err(e)
            }
        }
    }

    /// The byte offset the reader may read up to in segment `first`.
    fn read_limit(&self, first: u64) -> u64 {
        match (&self.writer, self.cut) {
            (Some(w), _) if w.first_seq == first => w.committed,
            (_, Some((seg, len))) if seg == first => len,
            _ => u64::MAX,
        }
    }

    /// The oldest record not read yet, in append order; `None` when every record was read (or the
    /// only unread ones are in a batch being written). A read record stays in the spool until
    /// [`resolve`](Self::resolve)d. Buffered records are committed first when the reader needs
    /// them.
    pub(crate) fn next_unread(&mut self) -> io::Result<Option<Frame>> {
        while self.unread > 0 {
            if self.reader.is_none() {
                let floor = self.read_seg_floor();
                match self.segments.iter().find(|&&s| s >= floor) {
                    Some(&first) => self.reader = Some(SegmentReader::open(&self.dir, first)?),
                    None => {
                        if self.reader_needs_commit()? {
                            continue;
                        }
                        return Ok(None);
                    }
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            let current = reader.first_seq;
            let limit = self.read_limit(current);
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            match reader.next_frame(limit)? {
                Some(frame) => {
                    if frame.seq < self.read_through {
                        continue; // resolved before the restart, or read before a reopen
                    }
                    self.read_through = self.read_through.max(frame.seq + 1);
                    self.unread -= 1;
                    self.outstanding.insert(frame.seq);
                    return Ok(Some(frame));
                }
                None => {
                    let leftover = reader.buffered();
                    if self.segments.iter().any(|&s| s > current) {
                        if leftover > 0 && limit == u64::MAX {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "a spool segment ends in a partial record",
                            ));
                        }
                        self.reader = None;
                        self.read_through = self.read_through.max(self.next_segment_after(current));
                        continue;
                    }
                    if self.reader_needs_commit()? {
                        continue;
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The reader reached the end of what is written: commits the write buffer if there is one
    /// (`true`: read on). With nothing buffered and no batch out, every record was read.
    fn reader_needs_commit(&mut self) -> io::Result<bool> {
        if self.in_flight {
            return Ok(false); // the writer finishes it; read then
        }
        if !self.pending.is_empty() {
            self.commit()?;
            return Ok(true);
        }
        // Nothing more was written than what was read.
        self.unread = 0;
        self.read_through = self.next_seq;
        Ok(false)
    }

    fn read_seg_floor(&self) -> u64 {
        // The segment holding `read_through`: the last segment starting at or below it.
        self.segments
            .iter()
            .rev()
            .find(|&&s| s <= self.read_through)
            .copied()
            .unwrap_or(0)
    }

    fn next_segment_after(&self, first: u64) -> u64 {
        self.segments
            .iter()
            .find(|&&s| s > first)
            .copied()
            .unwrap_or(self.next_seq)
    }

    /// Marks a read record as done (acknowledged, dead-lettered or dropped): once every record of a
    /// segment is done the segment file is deleted.
    pub(crate) fn resolve(&mut self, seq: u64) -> io::Result<()> {
        if !self.outstanding.remove(&seq) {
            return Ok(());
        }
        let below = self.resolved_below();
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1] <= below {
            if let Some(first) = self.segments.pop_front() {
                if self.reader.as_ref().is_some_and(|r| r.first_seq == first) {
                    self.reader = None;
                }
                match fs::remove_file(self.dir.join(segment_name(first))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                removed = true;
                tracing::debug!(dir = %self.dir.display(), first, "telemetry spool: segment done, removed");
            }
        }
        if removed || below >= self.cursor_written + CURSOR_EVERY {
            self.write_cursor(below)?;
        }
        Ok(())
    }

    /// Every record below this sequence number is resolved.
    fn resolved_below(&self) -> u64 {
        let read = if self.unread == 0 {
            self.next_seq
        } else {
            self.read_through
        };
        self.outstanding.first().copied().unwrap_or(read).min(read)
    }

    fn write_cursor(&mut self, below: u64) -> io::Result<()> {
        let tmp = self.dir.join("ack.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{below}")?;
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join(CURSOR_FILE))?;
        self.cursor_written = below;
        Ok(())
    }

    /// Appends a record the server refused for good to `failed.log` (same framing), so that it
    /// is kept for inspection rather than lost.
    pub(crate) fn dead_letter(&mut self, seq: u64, kind: Kind, body: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(body.len() + 32);
        frame::encode_into(&mut buf, seq, kind, body);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(DEAD_LETTER_FILE))?;
        f.write_all(&buf)
    }

    /// Commits the write buffer, flushes the current segment to stable storage (it then survives
    /// a power loss) and rewrites the ack cursor. Fails with [`io::ErrorKind::WouldBlock`] while a
    /// batch taken by another writer is being written.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.commit()?;
        if let Some(w) = &self.writer {
            w.file.sync_data()?;
        }
        let below = self.resolved_below();
        self.write_cursor(below)
    }

    /// Records appended (or found at open) and not read yet.
    pub(crate) fn unread(&self) -> u64 {
        self.unread
    }

    /// Records in the spool that are not resolved yet (unread plus read-but-unresolved).
    pub(crate) fn unresolved(&self) -> u64 {
        self.unread + self.outstanding.len() as u64
    }

    /// Segment files on disk now.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // What is still buffered is written now (best effort: the error is logged).
        if !self.pending.is_empty() && !self.in_flight {
            if let Err(e) = self.commit() {
                tracing::error!(dir = %self.dir.display(), error = %e, "telemetry spool: buffered records not written at close");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_appended_read_and_resolved() {
        let dir = std::env::temp_dir().join(format!("fabraix-spool-doc-{}", std::process::id()));
        let (mut spool, report) = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(report.replay, 0);
        let seq = spool.append(Kind::Event, b"{}").unwrap();
        let frame = spool.next_unread().unwrap().unwrap();
        assert_eq!(frame.seq, seq);
        spool.resolve(seq).unwrap();
        assert_eq!(spool.unresolved(), 0);
        drop(spool);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("fabraix-spool-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn segment_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    }

    #[test]
    fn append_buffers_and_commit_writes_one_batch() {
        let dir = temp("commit");
        let (mut spool, _) = Spool::open(&dir.0, 4096).unwrap();
        assert_eq!(spool.durable_through(), 0);
        let a = spool.append(Kind::Event, b"{\"a\":1}").unwrap();
        let b = spool.append(Kind::Event, b"{\"b\":2}").unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(spool.pending_records(), 2);
        assert_eq!(spool.durable_through(), 0, "buffered, not durable");
        assert_eq!(segment_bytes(&dir.0), 0);
        assert_eq!(spool.commit().unwrap(), 2);
        assert_eq!(spool.pending_records(), 0);
        assert!(segment_bytes(&dir.0) > 0);
        // A restart (without the first spool's drop-time commit) finds both.
        let (_, report) = Spool::open(&dir.0, 4096).unwrap();
        assert_eq!(report.replay, 2);
    }

    #[test]
    fn the_reader_commits_what_it_needs_and_rotates_by_batch() {
        let dir = temp("reader");
        let (mut spool, _) = Spool::open(&dir.0, 4096).unwrap();
        let body = vec![b'x'; 1000];
        let mut seqs = Vec::new();
        for round in 0..6 {
            for _ in 0..3 {
                seqs.push(spool.append(Kind::Event, &body).unwrap());
            }
            if round % 2 == 0 {
                spool.commit().unwrap();
            }
        }
        let mut read = Vec::new();
        while let Some(f) = spool.next_unread().unwrap() {
            read.push(f.seq);
        }
        assert_eq!(read, seqs);
        assert_eq!(spool.durable_through(), *seqs.last().unwrap());
        assert!(spool.segment_count() > 1, "new segments past 4 KiB");
        for s in seqs {
            spool.resolve(s).unwrap();
        }
        assert_eq!(spool.unresolved(), 0);
        assert_eq!(spool.segment_count(), 1);
    }
}
