//! The spool reader against corrupted files: it returns errors (reported damage), never panics,
//! and never returns a record that was not written. (A unit test: the on-disk format's types are
//! private to the crate.)

use std::path::PathBuf;

use super::frame::{scan_segment, FrameError, Kind};
use super::spool::Spool;
use proptest::prelude::*;

/// An independent encoder of the documented frame: `[len u32 LE][crc32 u32 LE][seq u64 LE][kind u8][body]`.
fn encode(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.push(0);
    payload.extend_from_slice(body);
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn segment(bodies: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        bytes.extend(encode(i as u64 + 1, b));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Garbage(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(i, g)| Damage::Garbage(i, g)),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match d {
        Damage::Truncate(i) => bytes.truncate(i % bytes.len()),
        Damage::Flip(i, x) => {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
        Damage::Garbage(i, g) => {
            let at = i % bytes.len();
            bytes.splice(at..at, g.iter().copied());
        }
    }
}

fn bodies() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..16)
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_truncated_segment_yields_the_whole_records_and_reports_a_torn_tail(b in bodies(), cut in any::<usize>()) {
        let (bytes, ends) = segment(&b);
        let cut = if bytes.is_empty() { 0 } else { cut % (bytes.len() + 1) };
        let scan = scan_segment(&bytes[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        prop_assert_eq!(scan.frames.len(), whole);
        for (i, f) in scan.frames.iter().enumerate() {
            prop_assert_eq!(f.seq, i as u64 + 1);
            prop_assert_eq!(&f.body, &b[i]);
        }
        let at_boundary = cut == 0 || ends.contains(&cut);
        if at_boundary {
            prop_assert_eq!(scan.damage, None);
        } else {
            let is_torn = matches!(scan.damage, Some(FrameError::Torn { .. }));
            prop_assert!(is_torn, "{:?}", scan.damage);
        }
    }

    #[test]
    fn a_damaged_segment_never_yields_a_wrong_record(b in bodies(), damages in proptest::collection::vec(damage(), 1..4)) {
        let (mut bytes, _) = segment(&b);
        for d in &damages {
            apply(&mut bytes, d);
        }
        let scan = scan_segment(&bytes);
        // Every record returned is one that was written, in order (a prefix, possibly skipping
        // none): corruption ends the scan, it never invents or reorders records.
        for (i, f) in scan.frames.iter().enumerate() {
            prop_assert_eq!(f.seq, i as u64 + 1);
            prop_assert_eq!(&f.body, &b[i]);
            prop_assert_eq!(f.kind, Kind::Event);
        }
        prop_assert!(scan.valid_len <= bytes.len() as u64);
        if scan.damage.is_none() {
            prop_assert_eq!(scan.valid_len, bytes.len() as u64);
        }
    }

    #[test]
    fn opening_a_damaged_spool_replays_exactly_the_good_records(b in bodies(), d in damage(), case in any::<u64>()) {
        let dir = TempDir(std::env::temp_dir().join(format!("fabraix-spool-prop-{}-{case}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let (mut bytes, _) = segment(&b);
        apply(&mut bytes, &d);
        std::fs::write(dir.0.join("00000000000000000001.seg"), &bytes).unwrap();
        let expected = scan_segment(&bytes);
        let (mut spool, report) = Spool::open(&dir.0, 1 << 20).unwrap();
        prop_assert_eq!(report.replay, expected.frames.len() as u64);
        prop_assert_eq!(report.damaged.len(), usize::from(expected.damage.is_some()));
        let mut got = Vec::new();
        while let Some(f) = spool.next_unread().unwrap() {
            got.push(f);
        }
        prop_assert_eq!(&got, &expected.frames);
        // New records go after the recovered ones and are read back too.
        let seq = spool.append(Kind::Event, b"{}").unwrap();
        prop_assert!(got.last().is_none_or(|f| seq > f.seq));
        prop_assert_eq!(spool.next_unread().unwrap().map(|f| f.seq), Some(seq));
    }
}
