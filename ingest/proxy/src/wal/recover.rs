//! Reading what an earlier run left in the write-ahead log: every final
//! event not marked done, and for every attempt that has a `started`
//! record but no final event, the interrupted attempt's event. Read before
//! the new run's writer starts; the segments are deleted once their events
//! are safe in the outage spool ([`super::super::emitter`] does both).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{segments, Record};
use tollgate_contract::Event;

/// An event to deliver after a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredEvent {
    pub event: Event,
    /// When its record was written (Unix ms).
    pub at_ms: i64,
    /// From a `started` record whose attempt never ended: never sent to
    /// Kafka. A final event (`false`) may have reached Kafka before the
    /// crash, unacknowledged.
    pub interrupted: bool,
}

/// What the earlier runs left.
#[derive(Debug, Default)]
pub struct Recovered {
    /// In log order, each event id once.
    pub events: Vec<RecoveredEvent>,
    /// The segments read, to delete once the events are safe.
    pub segments: Vec<PathBuf>,
    /// Lines that were not records (a torn last write).
    pub unreadable: u64,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Delete the segments read.
    pub fn remove_segments(&self) -> std::io::Result<()> {
        for path in &self.segments {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Read every segment in `dir`, oldest first.
pub fn read(dir: &Path) -> std::io::Result<Recovered> {
    let mut order: Vec<Uuid> = Vec::new();
    let mut found: HashMap<Uuid, RecoveredEvent> = HashMap::new();
    let mut done: HashSet<Uuid> = HashSet::new();
    let mut out = Recovered::default();
    for (_, path) in segments(dir)? {
        let bytes = fs::read(&path)?;
        for line in lines(&bytes) {
            match serde_json::from_slice::<Record>(line) {
                Ok(Record::Started { at_ms, event }) => {
                    let event = event.into_owned();
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        found.entry(event.event_id)
                    {
                        order.push(event.event_id);
                        slot.insert(RecoveredEvent {
                            event,
                            at_ms,
                            interrupted: true,
                        });
                    }
                }
                Ok(Record::Event { at_ms, event }) => {
                    let event = event.into_owned();
                    let id = event.event_id;
                    if !found.contains_key(&id) {
                        order.push(id);
                    }
                    found.insert(
                        id,
                        RecoveredEvent {
                            event,
                            at_ms,
                            interrupted: false,
                        },
                    );
                }
                Ok(Record::Done { ids }) => done.extend(ids.iter()),
                Err(err) => {
                    out.unreadable += 1;
                    tracing::warn!(path = %path.display(), %err, "unreadable write-ahead log line (a torn last write); skipped");
                }
            }
        }
        out.segments.push(path);
    }
    out.events = order
        .into_iter()
        .filter(|id| !done.contains(id))
        .filter_map(|id| found.remove(&id))
        .collect();
    Ok(out)
}

/// The records of a segment's bytes: its lines, without the zeros of a
/// spare segment's unwritten tail (a record is JSON, which never holds a
/// zero byte). A torn write may leave zeros before or after the part of a
/// line that reached the disk; what remains is then not a record, and the
/// reader counts it unreadable.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .map(|line| {
            let start = line.iter().position(|b| *b != 0).unwrap_or(line.len());
            let end = line.iter().rposition(|b| *b != 0).map_or(start, |i| i + 1);
            &line[start..end]
        })
        .filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io::Write;

    use super::super::tests::{event, temp_dir};
    use super::*;

    fn line(record: &Record) -> String {
        format!("{}\n", serde_json::to_string(record).unwrap())
    }

    #[test]
    fn finals_supersede_started_done_removes_and_a_torn_line_and_zeros_are_skipped() {
        let dir = temp_dir();
        let (a, b, c, d) = (event("a"), event("b"), event("c"), event("d"));
        let mut a_final = a.clone();
        a_final.team_id = "a-final".into();
        let first = [
            Record::Started {
                at_ms: 1,
                event: Cow::Borrowed(&a),
            },
            Record::Started {
                at_ms: 2,
                event: Cow::Borrowed(&b),
            },
            Record::Event {
                at_ms: 3,
                event: Cow::Borrowed(&c),
            },
        ];
        let second = [
            Record::Event {
                at_ms: 4,
                event: Cow::Borrowed(&a_final),
            },
            Record::Event {
                at_ms: 5,
                event: Cow::Borrowed(&d),
            },
            Record::Done {
                ids: Cow::Owned(vec![c.event_id]),
            },
        ];
        // The first segment was a spare: zeros follow its records.
        let mut spare = first.iter().map(line).collect::<String>().into_bytes();
        spare.extend_from_slice(&[0u8; 4096]);
        fs::write(dir.join("0000000000000001.wal"), spare).unwrap();
        let mut f = fs::File::create(dir.join("0000000000000002.wal")).unwrap();
        f.write_all(second.iter().map(line).collect::<String>().as_bytes())
            .unwrap();
        f.write_all(b"{\"t\":\"event\",\"at_ms\":6,\"ev").unwrap();
        f.write_all(&[0u8; 100]).unwrap();
        let recovered = read(&dir).unwrap();
        assert_eq!(recovered.unreadable, 1);
        assert_eq!(recovered.segments.len(), 2);
        let got: Vec<(String, bool)> = recovered
            .events
            .iter()
            .map(|r| (r.event.team_id.clone(), r.interrupted))
            .collect();
        // a: its final event wins over its started record, in a's place;
        // b: started only, so interrupted; c: done; d: final, not done.
        assert_eq!(
            got,
            [
                ("a-final".to_string(), false),
                ("b".to_string(), true),
                ("d".to_string(), false),
            ]
        );
        recovered.remove_segments().unwrap();
        assert!(read(&dir).unwrap().segments.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    /// Lines are read without the zeros around them: a spare's unwritten
    /// tail, or a torn write's.
    #[test]
    fn lines_leave_out_the_zeros_of_an_unwritten_tail() {
        let bytes = b"{\"a\":1}\n{\"b\":2}\n\0\0\0\0\0\0\0\0";
        assert_eq!(
            lines(bytes).collect::<Vec<_>>(),
            [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]
        );
        let torn = b"{\"a\":1}\n\0\0{\"b\"\0\0\0\n\0\0\0";
        assert_eq!(
            lines(torn).collect::<Vec<_>>(),
            [&b"{\"a\":1}"[..], &b"{\"b\""[..]]
        );
        assert_eq!(lines(b"\0\0\0").count(), 0);
        assert_eq!(lines(b"").count(), 0);
    }
}
