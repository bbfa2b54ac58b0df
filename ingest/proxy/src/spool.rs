//! The durable event spool: an append-only NDJSON file of events Kafka has
//! not acknowledged yet, and a small position file saying how much of it has
//! been replayed. Written only by the emitter task, so no locking. Appends are
//! fsynced before the emitter moves on, so an event in the spool survives a
//! crash; replay goes strictly in file order.
//!
//! Before each replay batch is sent, a third file records where the batch
//! starts and when it was sent. A run killed after Kafka stored the batch
//! but before the position moved leaves it behind, and the next run checks
//! that batch against the events topic instead of sending it twice
//! ([`Spool::sent_since`]).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tollgate_contract::Event;

const DATA: &str = "events.ndjson";
const POSITION: &str = "events.pos";
/// `<position> <unix ms>`: the replay batch starting at or before
/// `position` was handed to Kafka at that time.
const SENDING: &str = "events.sending";
/// How much of the file's end is searched for the last complete line.
const TORN_TAIL_SCAN: u64 = 1024 * 1024;

pub struct Spool {
    dir: PathBuf,
    /// Byte offset of the first event not yet replayed.
    position: u64,
    /// Byte length of the data file.
    len: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("event spool {path}: {source}")]
pub struct SpoolError {
    path: String,
    #[source]
    source: std::io::Error,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    /// Open (or create) the spool in `dir`, keeping whatever an earlier run
    /// left unreplayed. A torn last line (crash mid-append) is cut off.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let data = dir.join(DATA);
        let mut len = match fs::metadata(&data) {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if len > 0 {
            // Only the tail can be torn; events are far smaller than this.
            let tail_start = len.saturating_sub(TORN_TAIL_SCAN);
            let mut file = File::open(&data).map_err(io(&data))?;
            file.seek(SeekFrom::Start(tail_start)).map_err(io(&data))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail).map_err(io(&data))?;
            let good = tail
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| tail_start + i as u64 + 1)
                .unwrap_or(tail_start);
            if good < len {
                tracing::error!(path = %data.display(), cut = len - good, "event spool ends in a torn line; cutting it off");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&data)
                    .map_err(io(&data))?;
                file.set_len(good).map_err(io(&data))?;
                len = good;
            }
        }
        let pos_path = dir.join(POSITION);
        let position = fs::read_to_string(&pos_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        Ok(Self {
            dir: dir.to_path_buf(),
            position,
            len,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether events are waiting to be replayed.
    pub fn has_pending(&self) -> bool {
        self.position < self.len
    }

    pub fn pending_bytes(&self) -> u64 {
        self.len - self.position
    }

    /// Append events and fsync.
    pub fn append(&mut self, events: &[Event]) -> Result<(), SpoolError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(DATA);
        let mut buf = Vec::new();
        for event in events {
            // An Event always serializes; a failure here would be a bug, and
            // the event still goes to the log rather than vanish.
            match serde_json::to_vec(event) {
                Ok(line) => {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                }
                Err(err) => {
                    tracing::error!(%err, event = ?event, "cannot encode event for the spool")
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(&buf).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Up to `max` events from the replay position, each with the position
    /// just after it, and the position after everything read (unreadable
    /// lines included).
    pub fn read_batch(&self, max: usize) -> Result<(Vec<(Event, u64)>, u64), SpoolError> {
        let path = self.dir.join(DATA);
        let mut file = File::open(&path).map_err(io(&path))?;
        file.seek(SeekFrom::Start(self.position))
            .map_err(io(&path))?;
        let mut reader = BufReader::new(file);
        let mut events = Vec::new();
        let mut end = self.position;
        let mut line = String::new();
        while events.len() < max && end < self.len {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io(&path))?;
            if read == 0 {
                break;
            }
            end += read as u64;
            match serde_json::from_str::<Event>(line.trim_end()) {
                Ok(event) => events.push((event, end)),
                Err(err) => {
                    tracing::error!(%err, offset = end - read as u64, line = %line.trim_end(), "unreadable line in the event spool; skipped")
                }
            }
        }
        Ok((events, end))
    }

    /// The ids of the events waiting to be replayed.
    pub fn pending_ids(&self) -> Result<std::collections::HashSet<uuid::Uuid>, SpoolError> {
        let mut ids = std::collections::HashSet::new();
        if !self.has_pending() {
            return Ok(ids);
        }
        let mut at = self.position;
        while at < self.len {
            let probe = Self {
                dir: self.dir.clone(),
                position: at,
                len: self.len,
            };
            let (events, next) = probe.read_batch(4096)?;
            ids.extend(events.into_iter().map(|(e, _)| e.event_id));
            if next <= at {
                break;
            }
            at = next;
        }
        Ok(ids)
    }

    /// Record that everything before `position` is on Kafka. When nothing is
    /// left the files are removed, so the spool does not grow forever.
    pub fn advance(&mut self, position: u64) -> Result<(), SpoolError> {
        self.position = position.min(self.len);
        if self.position >= self.len {
            for name in [DATA, POSITION, SENDING] {
                let path = self.dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).map_err(io(&path))?;
                }
            }
            self.position = 0;
            self.len = 0;
            return Ok(());
        }
        self.replace(POSITION, &self.position.to_string())
    }

    /// Record that the batch at the replay position is being handed to
    /// Kafka now (`at_ms`, Unix milliseconds). A batch handed over again
    /// from the same position keeps the earlier time: what the first try
    /// stored carries that time. Not fsynced: it is there for a killed
    /// process, not for a lost machine.
    pub fn sending(&self, at_ms: i64) -> Result<(), SpoolError> {
        let at_ms = match self.marker() {
            Some((position, earlier)) if position == self.position => earlier.min(at_ms),
            _ => at_ms,
        };
        self.replace(SENDING, &format!("{} {at_ms}", self.position))
    }

    /// When an earlier run handed Kafka a batch that the replay position
    /// has not moved past (Unix milliseconds): its events from the position
    /// on (at most one batch) may be on Kafka already. `None` when no batch
    /// was in flight.
    pub fn sent_since(&self) -> Option<i64> {
        let (position, at_ms) = self.marker()?;
        (self.has_pending() && position <= self.position).then_some(at_ms)
    }

    /// The marker's position and time, if there is a readable one.
    fn marker(&self) -> Option<(u64, i64)> {
        let text = fs::read_to_string(self.dir.join(SENDING)).ok()?;
        let (position, at_ms) = text.trim().split_once(' ')?;
        Some((position.parse().ok()?, at_ms.parse().ok()?))
    }

    /// Replace the small file `name` with `text` (write, then rename).
    fn replace(&self, name: &str, text: &str) -> Result<(), SpoolError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        fs::write(&tmp, text).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tollgate_contract::SCHEMA_VERSION;

    /// A minimal event of `team` (also the write-ahead log's tests').
    pub(crate) fn event(team: &str) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: uuid::Uuid::now_v7(),
            kind: tollgate_contract::EventKind::CallCompleted,
            occurred_at: chrono::Utc::now(),
            org_id: "o".into(),
            team_id: team.into(),
            user_id: String::new(),
            api_key_id: String::new(),
            call: None,
            admin: None,
            tags: Default::default(),
            reported_cost: None,
        }
    }

    #[test]
    fn append_replay_advance_and_reopen() {
        let dir = tempfile_dir();
        let mut spool = Spool::open(&dir).unwrap();
        assert!(!spool.has_pending());
        let events: Vec<Event> = (0..5).map(|i| event(&format!("t{i}"))).collect();
        spool.append(&events).unwrap();
        let (batch, pos) = spool.read_batch(2).unwrap();
        let batch: Vec<Event> = batch.into_iter().map(|(e, _)| e).collect();
        assert_eq!(batch, events[..2]);
        assert_eq!(
            spool.pending_ids().unwrap(),
            events.iter().map(|e| e.event_id).collect()
        );
        spool.advance(pos).unwrap();
        assert_eq!(spool.pending_ids().unwrap().len(), 3);
        drop(spool);
        // A torn line from a crash is cut off on reopen.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(DATA))
            .unwrap();
        f.write_all(b"{\"schema_ver").unwrap();
        let mut spool = Spool::open(&dir).unwrap();
        let (batch, pos) = spool.read_batch(10).unwrap();
        let batch: Vec<Event> = batch.into_iter().map(|(e, _)| e).collect();
        assert_eq!(batch, events[2..]);
        spool.advance(pos).unwrap();
        assert!(!spool.has_pending());
        assert!(!dir.join(DATA).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_in_flight_at_a_crash_is_reported_until_passed() {
        let dir = tempfile_dir();
        let mut spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.sent_since(), None);
        let events: Vec<Event> = (0..4).map(|i| event(&format!("t{i}"))).collect();
        spool.append(&events).unwrap();
        assert_eq!(spool.sent_since(), None, "nothing sent yet");
        spool.sending(1_000).unwrap();
        let (batch, _) = spool.read_batch(2).unwrap();
        // Killed before the position moved: the next run sees the batch.
        drop(spool);
        let mut spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.sent_since(), Some(1_000));
        // Part of it acknowledged: the rest may still be on Kafka.
        spool.advance(batch[0].1).unwrap();
        let spool2 = Spool::open(&dir).unwrap();
        assert_eq!(spool2.sent_since(), Some(1_000));
        // The next batch is marked at its own position and time; handed
        // over again from there, it keeps the time of the first try.
        spool.sending(2_000).unwrap();
        assert_eq!(Spool::open(&dir).unwrap().sent_since(), Some(2_000));
        spool.sending(3_000).unwrap();
        assert_eq!(Spool::open(&dir).unwrap().sent_since(), Some(2_000));
        // An empty spool leaves no marker behind.
        let (_, end) = spool.read_batch(10).unwrap();
        spool.advance(end).unwrap();
        assert_eq!(files_in(&dir), Vec::<String>::new());
        assert_eq!(Spool::open(&dir).unwrap().sent_since(), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_marker_ahead_of_the_position_or_unreadable_is_ignored() {
        let dir = tempfile_dir();
        let mut spool = Spool::open(&dir).unwrap();
        spool.append(&[event("a"), event("b")]).unwrap();
        fs::write(dir.join(SENDING), "999999 5").unwrap();
        assert_eq!(spool.sent_since(), None, "a marker past the position");
        fs::write(dir.join(SENDING), "garbage").unwrap();
        assert_eq!(spool.sent_since(), None);
        fs::write(dir.join(SENDING), "0 -7").unwrap();
        assert_eq!(spool.sent_since(), Some(-7));
        let _ = fs::remove_dir_all(&dir);
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-spool-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
