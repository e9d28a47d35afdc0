//! The on-disk record frame of the spool: `[len u32 LE][crc32 u32 LE][payload]`, and a reader that
//! tells a torn tail (a crash mid-write) from corruption and never returns a damaged record.
//!
//! The payload is `[seq u64 LE][kind u8][body]`: the record's sequence number (strictly
//! increasing within a spool), what it is (see [`Kind`]), and the JSON body as sent.

use std::fmt;

/// Bytes before the payload: length and checksum.
pub(crate) const HEADER_LEN: usize = 8;
/// Bytes of the payload before the body: sequence number and kind.
pub(crate) const PAYLOAD_PREFIX: usize = 9;
/// The largest payload a frame may hold (1 MiB): a longer length field means corruption.
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;

/// What a spooled record is (the byte after the sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A `POST /event` body.
    Event = 0,
    /// A `POST /register-agent-run` body.
    RegisterAgentRun = 1,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Event),
            1 => Some(Kind::RegisterAgentRun),
            _ => None,
        }
    }

    /// The endpoint path, relative to the key's base URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Event => "/event",
            Kind::RegisterAgentRun => "/register-agent-run",
        }
    }
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The record's sequence number.
    pub(crate) seq: u64,
    /// What it is.
    pub(crate) kind: Kind,
    /// The JSON body.
    pub(crate) body: Vec<u8>,
}

/// Why the bytes of a spool segment could not be decoded into a record, from its offset on
/// ([`Damage::error`](super::Damage::error), in the [`RecoveryReport`](super::RecoveryReport) of
/// [`TelemetrySender::open`](super::TelemetrySender::open)): the one type of the spool's on-disk
/// format that is public, so that a report tells a torn tail from corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes end inside a frame: the writer was interrupted (a torn tail).
    Torn {
        /// Offset of the incomplete frame.
        offset: u64,
    },
    /// The frame is complete but its length, checksum, kind or sequence number is wrong.
    Corrupt {
        /// Offset of the bad frame.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
}

impl FrameError {
    /// The offset of the first byte that could not be decoded.
    pub fn offset(&self) -> u64 {
        match *self {
            FrameError::Torn { offset } | FrameError::Corrupt { offset, .. } => offset,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Torn { offset } => write!(f, "torn record at byte {offset}"),
            FrameError::Corrupt { offset, why } => {
                write!(f, "corrupt record at byte {offset}: {why}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one framed record to `out`.
pub(crate) fn encode_into(out: &mut Vec<u8>, seq: u64, kind: Kind, body: &[u8]) {
    let len = PAYLOAD_PREFIX + body.len();
    let start = out.len();
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `buf` (found at `offset` in its file). `Ok(None)`: `buf` is
/// empty. On success returns the frame and the bytes it used.
pub(crate) fn decode(buf: &[u8], offset: u64) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Torn { offset });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(PAYLOAD_PREFIX..=MAX_PAYLOAD).contains(&len) {
        return Err(FrameError::Corrupt {
            offset,
            why: "length out of bounds",
        });
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err(FrameError::Torn { offset });
    };
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Corrupt {
            offset,
            why: "checksum mismatch",
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[..8]);
    let Some(kind) = Kind::from_byte(payload[8]) else {
        return Err(FrameError::Corrupt {
            offset,
            why: "unknown record kind",
        });
    };
    Ok(Some((
        Frame {
            seq: u64::from_le_bytes(seq),
            kind,
            body: payload[PAYLOAD_PREFIX..].to_vec(),
        },
        HEADER_LEN + len,
    )))
}

/// What [`scan_segment`] found in a segment's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The valid records, in order, up to the first damage.
    pub(crate) frames: Vec<Frame>,
    /// Bytes of valid records (where a truncation would cut).
    pub(crate) valid_len: u64,
    /// The damage that ended the scan, if any: everything from its offset on is unusable.
    pub(crate) damage: Option<FrameError>,
}

/// Decodes every record of a segment, in order. Stops at the first torn or corrupt frame, and at a
/// sequence number that does not increase (a record from elsewhere): returned records are always
/// exactly the ones written, a prefix of the segment; never panics.
pub(crate) fn scan_segment(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut pos = 0usize;
    let mut last_seq: Option<u64> = None;
    loop {
        match decode(&bytes[pos..], pos as u64) {
            Ok(None) => break,
            Ok(Some((frame, used))) => {
                if last_seq.is_some_and(|s| frame.seq <= s) {
                    scan.damage = Some(FrameError::Corrupt {
                        offset: pos as u64,
                        why: "sequence number does not increase",
                    });
                    break;
                }
                last_seq = Some(frame.seq);
                scan.frames.push(frame);
                pos += used;
                scan.valid_len = pos as u64;
            }
            Err(e) => {
                scan.damage = Some(e);
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_stray_bytes_are_a_torn_tail_at_zero() {
        let scan = scan_segment(&[1, 2, 3]);
        assert!(scan.frames.is_empty());
        assert_eq!(scan.damage, Some(FrameError::Torn { offset: 0 }));
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, Kind::Event, b"{\"a\":1}");
        encode_into(&mut buf, 2, Kind::RegisterAgentRun, b"{}");
        let full = scan_segment(&buf);
        assert_eq!(full.frames.len(), 2);
        assert_eq!(full.damage, None);
        let torn = scan_segment(&buf[..buf.len() - 1]);
        assert_eq!(torn.frames.len(), 1);
        assert!(matches!(torn.damage, Some(FrameError::Torn { .. })));
    }
}
