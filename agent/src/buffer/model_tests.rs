//! The buffer against a model: random appends, acks, drops by the byte limit and crashes
//! (the file copied while the buffer is open, as a power cut leaves it, and opened anew)
//! give the same records, sequence numbers and drop counts as a plain list does. And the
//! damage a disk can do — a torn write, a truncated file, flipped bytes — is an error
//! naming the file, never a panic and never a record invented or silently renumbered.

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::*;

/// Small enough that a few appends cross it.
const MAX_BYTES: u64 = 2_000;

#[derive(Debug, Clone)]
enum Op {
    /// A batch of records, each `(is_event, body size)`.
    Append(Vec<(bool, u8)>),
    /// Acknowledge through the `n`th buffered record (past the end: everything).
    Ack(u8),
    /// The process dies; the buffer is opened again from what the disk holds.
    Crash,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 8 {
            0..=4 => {
                let n = usize::from(u8::arbitrary(g) % 5) + 1;
                Op::Append(
                    (0..n)
                        .map(|_| (u8::arbitrary(g) % 4 == 0, u8::arbitrary(g)))
                        .collect(),
                )
            }
            5 | 6 => Op::Ack(u8::arbitrary(g)),
            _ => Op::Crash,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match self {
            Op::Append(records) if records.len() > 1 => {
                Box::new(std::iter::once(Op::Append(records[..1].to_vec())))
            }
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// What the buffer should hold: `(seq, class, body size)` in order, and the counters.
#[derive(Debug, Default)]
struct Model {
    records: Vec<(u64, RecordClass, u64)>,
    last_seq: u64,
    dropped_metrics: u64,
    dropped_events: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.records.iter().map(|r| r.2 + RECORD_OVERHEAD).sum()
    }

    fn append(&mut self, batch: &[(bool, u8)]) {
        for &(event, size) in batch {
            self.last_seq += 1;
            let class = if event {
                RecordClass::Event
            } else {
                RecordClass::Metrics
            };
            self.records.push((self.last_seq, class, u64::from(size)));
        }
        // Over the limit: the oldest metrics first, events only when no metrics are left.
        for class in [RecordClass::Metrics, RecordClass::Event] {
            while self.bytes() > MAX_BYTES {
                let Some(i) = self.records.iter().position(|r| r.1 == class) else {
                    break;
                };
                self.records.remove(i);
                match class {
                    RecordClass::Metrics => self.dropped_metrics += 1,
                    RecordClass::Event => self.dropped_events += 1,
                }
            }
        }
    }

    fn ack(&mut self, n: u8) -> u64 {
        let through = self
            .records
            .get(usize::from(n))
            .map_or(self.last_seq, |r| r.0);
        self.records.retain(|r| r.0 > through);
        through
    }
}

fn limits() -> Limits {
    Limits {
        max_bytes: MAX_BYTES,
        ..Limits::default()
    }
}

fn records(batch: &[(bool, u8)], at_ms: u64) -> Vec<NewRecord> {
    batch
        .iter()
        .map(|&(event, size)| NewRecord {
            class: if event {
                RecordClass::Event
            } else {
                RecordClass::Metrics
            },
            at_ms,
            body: vec![b'x'; usize::from(size)],
        })
        .collect()
}

/// Whether `buffer` holds what `model` says; the first difference otherwise.
fn differs(buffer: &Buffer, model: &Model) -> Option<String> {
    let held: Vec<(u64, RecordClass, u64)> = buffer
        .peek(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| (r.seq, r.class, r.body.len() as u64))
        .collect();
    let stats = buffer.stats();
    let want = (
        model.records.len() as u64,
        model.bytes(),
        model.last_seq,
        model.dropped_metrics,
        model.dropped_events,
    );
    let got = (
        stats.records,
        stats.bytes,
        stats.last_seq,
        stats.dropped_metrics,
        stats.dropped_events,
    );
    if held != model.records {
        Some(format!("records {held:?}, model {:?}", model.records))
    } else if got != want {
        Some(format!(
            "(records, bytes, last_seq, dropped metrics, dropped events) {got:?}, model {want:?}"
        ))
    } else {
        None
    }
}

#[allow(clippy::needless_pass_by_value)] // quickcheck hands the case over by value
fn buffer_follows_the_model(ops: Vec<Op>) -> TestResult {
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().join("buffer-0.redb");
    let mut buffer = Buffer::open(&path, limits()).unwrap();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append(batch) => {
                let got = buffer.append(&records(batch, step as u64), step as u64);
                let first = model.last_seq + 1;
                model.append(batch);
                if got.unwrap() != (first..model.last_seq + 1) {
                    return TestResult::error(format!("step {step}: wrong sequence numbers"));
                }
            }
            Op::Ack(n) => {
                let through = model.ack(*n);
                buffer.ack(through).unwrap();
            }
            Op::Crash => {
                // The file as the disk holds it while the process still runs, opened anew.
                let copy = dir.path().join(format!("buffer-{}.redb", step + 1));
                std::fs::copy(&path, &copy).unwrap();
                drop(buffer);
                path = copy;
                buffer = Buffer::open(&path, limits()).unwrap();
            }
        }
        if let Some(difference) = differs(&buffer, &model) {
            return TestResult::error(format!("after step {step} ({op:?}): {difference}"));
        }
    }
    TestResult::passed()
}

#[test]
fn appends_acks_limit_drops_and_crashes_match_the_model() {
    QuickCheck::new()
        .tests(48)
        .max_tests(48)
        .quickcheck(buffer_follows_the_model as fn(Vec<Op>) -> TestResult);
}

/// A buffer with a few committed records, closed; its path.
fn written(dir: &Path) -> PathBuf {
    let path = dir.join("buffer.redb");
    let buffer = Buffer::open(&path, Limits::default()).unwrap();
    for i in 0..50 {
        buffer.append(&records(&[(i % 7 == 0, 200)], i), i).unwrap();
    }
    buffer.ack(10).unwrap();
    path
}

/// Opening damaged bytes: an error that names the file, or records numbered as they
/// were written (11 to 50 were committed) with new ones after them — never a panic,
/// never a record numbered where a later one will be.
fn opens_or_names_the_file(path: &Path) {
    let opened = std::panic::catch_unwind(|| Buffer::open(path, Limits::default()))
        .expect("opening a damaged buffer never panics");
    match opened {
        Err(e) => assert!(
            e.to_string().contains(&path.display().to_string()),
            "the error names the file: {e}"
        ),
        Ok(buffer) => {
            if let Ok(held) = buffer.peek(usize::MAX, usize::MAX) {
                let seqs: Vec<u64> = held.iter().map(|r| r.seq).collect();
                assert!(seqs.iter().all(|s| (11..=50).contains(s)), "{seqs:?}");
                if let Ok(next) = buffer.append(&records(&[(false, 1)], 99), 99) {
                    assert!(
                        seqs.iter().all(|s| *s < next.start),
                        "{seqs:?} then {next:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_torn_write_at_the_end_of_the_file_is_an_error_or_the_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path());
    // The tail of the file half-written: its last page replaced by garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len.saturating_sub(4096)..] {
        *b ^= 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    opens_or_names_the_file(&path);
}

#[test]
fn a_truncated_file_is_an_error_or_the_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    for keep in [len / 2, len / 3, 4096, 100] {
        let copy = dir.path().join(format!("cut-{keep}.redb"));
        std::fs::copy(&path, &copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(keep)
            .unwrap();
        opens_or_names_the_file(&copy);
    }
}

#[test]
fn a_flipped_page_is_an_error_or_the_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path());
    let original = std::fs::read(&path).unwrap();
    for page in 0..original.len() / 4096 {
        let copy = dir.path().join(format!("flip-{page}.redb"));
        let mut bytes = original.clone();
        bytes[page * 4096 + 100] ^= 0xff;
        std::fs::write(&copy, &bytes).unwrap();
        opens_or_names_the_file(&copy);
    }
}
