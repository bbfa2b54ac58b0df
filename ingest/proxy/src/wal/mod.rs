//! The write-ahead log of the proxy's events: nothing the proxy sent
//! upstream is lost to a SIGKILL or a power loss (`docs/proxy.md`,
//! "Durability").
//!
//! Three kinds of record, one JSON line each, in numbered segment files
//! under `<proxy.spool_dir>/wal/`:
//!
//! - `started`: written before an attempt is forwarded upstream. It holds
//!   the event a replay produces if the attempt never finishes (an
//!   `ai.call.failed` with error `proxy_interrupted` and the estimated
//!   input), under the event id the attempt's final event will carry.
//! - `event`: a final event, written before it enters the queue to Kafka.
//!   It supersedes the attempt's `started` record (same `event_id`).
//! - `done`: the event ids Kafka (or the outage spool) acknowledged.
//!
//! Each append writes its own record, with one `write` under a lock held
//! for that write only, so no append waits for another thread to write it.
//! A syncer thread does the fsyncs, without the lock (group commit). With
//! `proxy.durability = "fsync"` an append returns after the fsync that
//! covers it, and the syncer starts one as soon as an append waits: the
//! appends written during an fsync share the next one. With `"batch"` an
//! append returns after its `write` (the kernel has it: a SIGKILL loses
//! nothing, a power loss at most the last interval) and the syncer fsyncs
//! at most once per `proxy.wal_fsync_interval_ms`, the cadence too of
//! records nobody waits for (`done`). A segment is deleted once every
//! record in it, and in every older one, is done. [`recover`] reads what a
//! crashed run left.
//!
//! Segments are files written in advance with zeros where a spare is
//! ready: a record overwrites zeros at the segment's offset, so its fsync
//! writes no file size or allocation (on a journaled ext4, no commit of
//! the journal). Spares are written, and done segments deleted, by a
//! housekeeping thread ([`housekeeper`]).

mod housekeeper;
pub mod on_kafka;
pub mod recover;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::config::Durability;
use crate::metrics::ProxyMetrics;
use housekeeper::{sync_dir, Housekeeper};
use tollgate_contract::Event;

/// A segment is closed (and a new one opened) past this size.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".wal";

/// One line of the log. The proxy writes records that borrow their event
/// (no copy of it per record); [`recover`] reads them owned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record<'a> {
    /// An attempt about to be forwarded; `event` is what a replay emits if
    /// no final event follows.
    Started { at_ms: i64, event: Cow<'a, Event> },
    /// A final event on its way to Kafka.
    Event { at_ms: i64, event: Cow<'a, Event> },
    /// Events Kafka (or the spool) acknowledged.
    Done { ids: Cow<'a, [Uuid]> },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("the write-ahead log's writer has stopped")]
    Stopped,
}

/// What the writer does with one request.
enum Track {
    Started(Uuid),
    Event(Uuid),
    Done(Vec<Uuid>),
}

/// An append's answer: sent once its record is as durable as the mode
/// promises.
type Reply = oneshot::Sender<Result<(), WalError>>;

/// The handle the proxy appends through (cheap to clone). The caller
/// writes its own record (a `write` into the page cache, under a lock held
/// for that write only), so an append never waits for another thread
/// unless it waits for an fsync. The syncer thread fsyncs, and ends after
/// a last fsync when every handle is dropped.
#[derive(Clone)]
pub struct Wal {
    writer: Arc<Mutex<Writer>>,
    /// Wakes the syncer: an append waits for an fsync, or the log went
    /// from synced to written.
    wake: mpsc::Sender<()>,
    writable: Arc<AtomicBool>,
    /// Closed when the syncer thread ends.
    stopped: watch::Receiver<()>,
}

/// Resolves once the log's syncer thread has ended: its last fsync is
/// made, the done segments are deleted, and a clean stop's last segment is
/// gone. It does not keep the log open; the thread ends when every [`Wal`]
/// handle is dropped.
pub struct WalStopped(watch::Receiver<()>);

impl WalStopped {
    pub async fn wait(mut self) {
        // Nothing is ever sent: the channel only closes, with the thread.
        while self.0.changed().await.is_ok() {}
    }
}

/// The log's settings.
#[derive(Debug, Clone, Copy)]
pub struct WalSettings {
    pub durability: Durability,
    pub fsync_interval: Duration,
    /// Past this size a segment is closed ([`SEGMENT_BYTES`]; smaller in
    /// tests).
    pub segment_bytes: u64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn io_error(path: &Path, err: &std::io::Error) -> WalError {
    WalError::Io {
        path: path.display().to_string(),
        reason: err.to_string(),
    }
}

/// The writer's state, whoever holds its lock (a poisoned lock still
/// guards consistent state: every change under it is a whole write).
fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wal {
    /// Start the writer on a new segment in `dir`, numbered after every
    /// segment already there (those are [`recover`]'s).
    pub fn start(
        dir: &Path,
        settings: WalSettings,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let next = segments(dir)
            .map_err(|e| io_error(dir, &e))?
            .last()
            .map_or(1, |(n, _)| n + 1);
        let writer = Writer::open(dir, next, settings, metrics)?;
        let writable = writer.writable.clone();
        let writer = Arc::new(Mutex::new(writer));
        let (wake, woken) = mpsc::channel();
        let syncer = writer.clone();
        let (running, stopped) = watch::channel(());
        std::thread::Builder::new()
            .name("tollgate-wal".into())
            .spawn(move || {
                sync_until_stopped(&syncer, &woken);
                // Dropped here, or by a panic's unwinding: either way the
                // thread is over.
                drop(running);
            })
            .map_err(|e| io_error(dir, &e))?;
        Ok(Self {
            writer,
            wake,
            writable,
            stopped,
        })
    }

    /// What to await, once every handle is dropped, for the syncer thread
    /// to end (a process that exits at once would cut its last fsync and
    /// deletes short).
    pub fn stopped(&self) -> WalStopped {
        WalStopped(self.stopped.clone())
    }

    /// Whether the last write succeeded (a full disk makes it false until
    /// a write succeeds again).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Append the `started` record of an attempt; returns once it is as
    /// durable as the durability mode promises.
    pub async fn started(&self, event: &Event) -> Result<(), WalError> {
        let record = Record::Started {
            at_ms: now_ms(),
            event: Cow::Borrowed(event),
        };
        self.append(&record, Track::Started(event.event_id)).await
    }

    /// Append a final event; returns once it is as durable as the mode
    /// promises.
    pub async fn event(&self, event: &Event) -> Result<(), WalError> {
        let record = Record::Event {
            at_ms: now_ms(),
            event: Cow::Borrowed(event),
        };
        self.append(&record, Track::Event(event.event_id)).await
    }

    /// Record that these events are on Kafka or in the spool (not waited
    /// for: losing a `done` costs a check on Kafka at the next start).
    pub fn done(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        if let Some(line) = encode(&Record::Done {
            ids: Cow::Borrowed(&ids),
        }) {
            self.write(&line, Track::Done(ids), None);
        }
    }

    async fn append(&self, record: &Record<'_>, track: Track) -> Result<(), WalError> {
        let line = encode(record).ok_or(WalError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.write(&line, track, Some(reply));
        answer.await.unwrap_or(Err(WalError::Stopped))
    }

    fn write(&self, line: &[u8], track: Track, reply: Option<Reply>) {
        let wake = lock(&self.writer).write(line, track, reply);
        if wake && self.wake.send(()).is_err() {
            // The syncer is gone (only a panic ends it while handles
            // live): no fsync will come, so no append may wait for one.
            for reply in lock(&self.writer).waiting.drain(..) {
                let _ = reply.send(Err(WalError::Stopped));
            }
        }
    }
}

fn encode(record: &Record<'_>) -> Option<Vec<u8>> {
    match serde_json::to_vec(record) {
        Ok(mut line) => {
            line.push(b'\n');
            Some(line)
        }
        Err(err) => {
            tracing::error!(%err, "cannot encode a write-ahead log record");
            None
        }
    }
}

/// The numbered segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}{SEGMENT_SUFFIX}"))
}

/// The syncer thread: fsync when an append waits for it (at once: the
/// appends written during an fsync share the next one) or when the
/// interval since the last is over and something was written; delete the
/// segments that are done. Ends, after a last fsync, when every [`Wal`]
/// handle is dropped.
fn sync_until_stopped(writer: &Mutex<Writer>, woken: &mpsc::Receiver<()>) {
    loop {
        let wait = lock(writer).next_sync_in();
        let stopped = match wait {
            None => woken.recv().is_err(),
            Some(wait) => matches!(
                woken.recv_timeout(wait),
                Err(mpsc::RecvTimeoutError::Disconnected)
            ),
        };
        if stopped {
            break;
        }
        while woken.try_recv().is_ok() {}
        rotate_if_full(writer);
        let due = lock(writer).take_sync();
        if let Some(due) = due {
            // The fsync runs without the lock: appends go on meanwhile.
            due.run();
            let mut writer = lock(writer);
            writer.synced();
            writer.collect();
        }
    }
    let (housekeeping, current) = {
        let mut writer = lock(writer);
        if writer.dirty {
            writer.sync();
        }
        writer.collect();
        let current = writer
            .open_ids
            .is_empty()
            .then(|| segment_path(&writer.dir, writer.number));
        (writer.housekeeper.stop(), current)
    };
    // The done segments go before the stop ends (no segment of a clean
    // stop is left for the next start to read).
    if let Some(thread) = housekeeping {
        let _ = thread.join();
    }
    // A clean stop with nothing outstanding leaves no segment behind.
    if let Some(current) = current {
        let _ = fs::remove_file(current);
    }
}

/// Continue in a new segment once the current one is full, or once a
/// spare is ready while the current one is a plain file. A spare is
/// renamed into the next segment's name under the lock (so that no other
/// switch can take that name meanwhile), and the name is made durable
/// without it, before any fsync of the new segment answers an append (the
/// syncer does both). Without a spare the new file is created (and its
/// name made durable) without the lock. The switch is made under the lock,
/// and the old segment's last fsync, which answers every append that waits
/// for one (their records are all in it), runs without the lock again.
/// Appends never do this work themselves.
fn rotate_if_full(writer: &Mutex<Writer>) {
    let next = {
        let w = lock(writer);
        w.switch_due().then(|| (w.number + 1, w.dir.clone()))
    };
    let Some((number, dir)) = next else {
        return;
    };
    let path = segment_path(&dir, number);
    let with_spare = {
        let mut w = lock(writer);
        // Meanwhile a failed write may have moved on already (`rotate`).
        if w.number + 1 != number {
            return;
        }
        let spare = w.housekeeper.take_spare(&path);
        spare.map(|file| w.switch_to(number, file, true))
    };
    let old = match with_spare {
        Some(old) => {
            sync_dir(&dir);
            old
        }
        None => {
            if !lock(writer).full() {
                // Due for a spare that could not be used.
                return;
            }
            let file = match create_segment(&path) {
                Ok(file) => file,
                Err(error) => {
                    // Appends go on in the full segment; the next wake tries again.
                    tracing::error!(%error, "cannot open a new write-ahead log segment");
                    return;
                }
            };
            let mut w = lock(writer);
            if w.number + 1 != number {
                return;
            }
            w.switch_to(number, file, false)
        }
    };
    old.run();
    let mut writer = lock(writer);
    writer.synced();
    writer.collect();
}

/// An fsync taken from the writer: the segment, and the appends it
/// answers.
struct DueSync {
    file: Arc<File>,
    path: PathBuf,
    waiting: Vec<Reply>,
    metrics: Arc<ProxyMetrics>,
}

impl DueSync {
    /// Fsync, count it, then answer the appends (so an append that got its
    /// answer finds its fsync counted).
    fn run(self) {
        let answer = self
            .file
            .sync_data()
            .map_err(|err| io_error(&self.path, &err));
        ProxyMetrics::inc(&self.metrics.wal_fsyncs);
        if let Err(error) = &answer {
            ProxyMetrics::inc(&self.metrics.wal_write_errors);
            tracing::error!(%error, "cannot fsync the write-ahead log");
        }
        for reply in self.waiting {
            let _ = reply.send(answer.clone());
        }
    }
}

/// The log's state, behind the [`Wal`]'s lock.
struct Writer {
    dir: PathBuf,
    settings: WalSettings,
    metrics: Arc<ProxyMetrics>,
    writable: Arc<AtomicBool>,
    file: Arc<File>,
    number: u64,
    /// Where the next record is written (the records' bytes so far).
    len: u64,
    /// Whether the segment was a spare (zeros on disk past `len`).
    spare: bool,
    /// Writes the spares and deletes the done segments.
    housekeeper: Housekeeper,
    /// Records written since the last fsync began.
    dirty: bool,
    last_sync: Instant,
    /// Appends waiting for the next fsync (durability `fsync`).
    waiting: Vec<Reply>,
    /// Which segment holds each event not yet done.
    open_ids: HashMap<Uuid, u64>,
    /// Records not yet done, and bytes, per live segment of this run.
    live: BTreeMap<u64, (u64, u64)>,
}

impl Writer {
    fn open(
        dir: &Path,
        number: u64,
        settings: WalSettings,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, WalError> {
        let path = segment_path(dir, number);
        let housekeeper = Housekeeper::start(dir, spare_bytes(settings.segment_bytes));
        let (file, spare) = match housekeeper.take_spare(&path) {
            Some(file) => {
                sync_dir(dir);
                (file, true)
            }
            None => (create_segment(&path)?, false),
        };
        let mut live = BTreeMap::new();
        live.insert(number, (0, 0));
        count_segment(&metrics, spare);
        ProxyMetrics::set(&metrics.wal_writable, 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            settings,
            metrics,
            writable: Arc::new(AtomicBool::new(true)),
            file: Arc::new(file),
            number,
            len: 0,
            spare,
            housekeeper,
            dirty: false,
            last_sync: Instant::now()
                .checked_sub(settings.fsync_interval)
                .unwrap_or_else(Instant::now),
            waiting: Vec::new(),
            open_ids: HashMap::new(),
            live,
        })
    }

    /// Write one record with one `write` at the segment's offset. With
    /// durability `fsync` its reply waits for the next fsync; otherwise it
    /// is answered now.
    /// Returns whether the syncer must be woken: an append waits for an
    /// fsync, nothing was waiting to be synced before, or the segment is
    /// full ([`rotate_if_full`]).
    fn write(&mut self, line: &[u8], track: Track, reply: Option<Reply>) -> bool {
        if let Err(err) = self.file.write_all_at(line, self.len) {
            let error = io_error(&segment_path(&self.dir, self.number), &err);
            ProxyMetrics::inc(&self.metrics.wal_write_errors);
            if self.writable.swap(false, Ordering::Relaxed) {
                tracing::error!(%error, "cannot write the write-ahead log; calls are refused or served unprotected (proxy.wal_unwritable) until it can be written again");
            }
            ProxyMetrics::set(&self.metrics.wal_writable, 0);
            // Cut off what was half written, so the next record starts a
            // line (and with it a spare's zeros: a spare is taken next).
            if self.file.set_len(self.len).is_ok() {
                self.spare = false;
            } else {
                self.rotate();
            }
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
            return false;
        }
        if !self.writable.swap(true, Ordering::Relaxed) {
            let path = segment_path(&self.dir, self.number);
            tracing::warn!(path = %path.display(), "the write-ahead log can be written again");
        }
        ProxyMetrics::set(&self.metrics.wal_writable, 1);
        self.len += line.len() as u64;
        ProxyMetrics::inc(&self.metrics.wal_records);
        let number = self.number;
        if let Some(seg) = self.live.get_mut(&number) {
            seg.1 = self.len;
        }
        match track {
            Track::Started(id) => self.track(id, number),
            Track::Event(id) => {
                self.close(id);
                self.track(id, number);
            }
            Track::Done(ids) => ids.iter().for_each(|id| self.close(*id)),
        }
        let mut wake = !self.dirty;
        if let Some(reply) = reply {
            match self.settings.durability {
                Durability::Fsync => {
                    self.waiting.push(reply);
                    wake = true;
                }
                _ => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        self.dirty = true;
        wake || self.switch_due()
    }

    /// Whether the segment is full.
    fn full(&self) -> bool {
        self.len >= self.settings.segment_bytes
    }

    /// Whether to continue in a new segment ([`rotate_if_full`]): this one
    /// is full, or it is a plain file and a spare is ready.
    fn switch_due(&self) -> bool {
        self.full() || (!self.spare && self.housekeeper.spare_ready())
    }

    /// How long the syncer may sleep: `None` while nothing is written
    /// (until woken), zero when an append waits for an fsync, else what is
    /// left of the interval.
    fn next_sync_in(&self) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        if !self.waiting.is_empty() {
            return Some(Duration::ZERO);
        }
        Some(
            (self.last_sync + self.settings.fsync_interval)
                .saturating_duration_since(Instant::now()),
        )
    }

    /// Whether to fsync now: something is written and an append waits for
    /// it (`fsync`: the appends that arrive during an fsync are written
    /// meanwhile and share the next one, so no timer delays them), or the
    /// interval since the last fsync is over (`batch`, and `done` records).
    fn sync_due(&self) -> bool {
        self.dirty
            && (!self.waiting.is_empty()
                || self.last_sync.elapsed() >= self.settings.fsync_interval)
    }

    /// The fsync due now, if one is: what is written so far is then
    /// counted as synced, and whatever is written after it waits for the
    /// next.
    fn take_sync(&mut self) -> Option<DueSync> {
        self.sync_due().then(|| self.cover())
    }

    /// What an fsync now covers: the segment as written so far, and every
    /// append waiting. What is written after it waits for the next.
    fn cover(&mut self) -> DueSync {
        self.dirty = false;
        DueSync {
            file: self.file.clone(),
            path: segment_path(&self.dir, self.number),
            waiting: std::mem::take(&mut self.waiting),
            metrics: self.metrics.clone(),
        }
    }

    /// Note when the last fsync ended (the interval counts from it).
    fn synced(&mut self) {
        self.last_sync = Instant::now();
    }

    /// Continue in segment `number` (`file`, just created, or a `spare`):
    /// what was written so far is the old segment's, and the returned
    /// fsync of it answers every append waiting.
    fn switch_to(&mut self, number: u64, file: File, spare: bool) -> DueSync {
        count_segment(&self.metrics, spare);
        let old = self.cover();
        self.file = Arc::new(file);
        self.number = number;
        self.len = 0;
        self.spare = spare;
        self.live.insert(number, (0, 0));
        old
    }

    /// Fsync now, holding the lock (at the stop).
    fn sync(&mut self) {
        self.cover().run();
        self.synced();
    }

    fn track(&mut self, id: Uuid, segment: u64) {
        self.open_ids.insert(id, segment);
        if let Some(seg) = self.live.get_mut(&segment) {
            seg.0 += 1;
        }
    }

    fn close(&mut self, id: Uuid) {
        if let Some(segment) = self.open_ids.remove(&id) {
            if let Some(seg) = self.live.get_mut(&segment) {
                seg.0 = seg.0.saturating_sub(1);
            }
        }
    }

    /// Continue in a new segment at once, holding the lock: after a write
    /// that failed half way and could not be cut off, so that the next
    /// record starts a line of its own.
    fn rotate(&mut self) {
        let number = self.number + 1;
        match create_segment(&segment_path(&self.dir, number)) {
            Ok(file) => {
                let old = self.switch_to(number, file, false);
                old.run();
                self.synced();
            }
            Err(error) => tracing::error!(%error, "cannot open a new write-ahead log segment"),
        }
    }

    /// Have the oldest segments whose records are all done deleted (by
    /// the housekeeping thread, in order: an unlink waits for the disk).
    fn collect(&mut self) {
        let mut done = Vec::new();
        while let Some((&oldest, &(open, _))) = self.live.iter().next() {
            if oldest == self.number || open > 0 {
                break;
            }
            done.push(segment_path(&self.dir, oldest));
            self.live.remove(&oldest);
        }
        self.housekeeper.delete(done);
        let bytes: u64 = self.live.values().map(|(_, b)| b).sum();
        ProxyMetrics::set(&self.metrics.wal_bytes, bytes);
    }
}

/// A plain segment file, for records written at their offsets. An
/// existing file of that number is opened as it is: a switch that lost a
/// race against [`Writer::rotate`] may create it after `rotate` did, while
/// `rotate`'s records go into it.
fn create_segment(path: &Path) -> Result<File, WalError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, &e))?;
    // The new file's name must survive a power loss too.
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(file)
}

/// Count a segment started, and whether it was a spare.
fn count_segment(metrics: &ProxyMetrics, spare: bool) {
    ProxyMetrics::inc(&metrics.wal_segments);
    if spare {
        ProxyMetrics::inc(&metrics.wal_spare_segments);
    }
}

/// A spare's size: a segment's, and room for the records written after
/// it is full and before the syncer switches.
fn spare_bytes(segment_bytes: u64) -> u64 {
    segment_bytes + segment_bytes / 8
}

#[cfg(test)]
mod tests {
    use super::*;
    pub(crate) use crate::spool::tests::event;

    /// The records in the segment at `path`, as the recovery reads them.
    fn records_in(path: &Path) -> Vec<Record<'static>> {
        recover::lines(&fs::read(path).unwrap())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// Every record in `dir`'s segments, oldest first.
    fn records_in_dir(dir: &Path) -> Vec<Record<'static>> {
        segments(dir)
            .unwrap()
            .iter()
            .flat_map(|(_, path)| records_in(path))
            .collect()
    }

    pub(crate) fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-wal-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn settings(durability: Durability) -> WalSettings {
        WalSettings {
            durability,
            fsync_interval: Duration::from_millis(2),
            segment_bytes: SEGMENT_BYTES,
        }
    }

    /// An interval no test waits out: only an append that waits makes an
    /// fsync after the first.
    fn hourly(durability: Durability) -> WalSettings {
        WalSettings {
            fsync_interval: Duration::from_secs(3600),
            ..settings(durability)
        }
    }

    /// What is written is what [`recover`] reads: a record written from
    /// a borrowed event reads back as the same record, owned.
    #[test]
    fn a_written_record_reads_back_as_itself() {
        let e = event("a");
        let ids = vec![e.event_id, Uuid::new_v4()];
        let records = [
            Record::Started {
                at_ms: 17,
                event: Cow::Borrowed(&e),
            },
            Record::Event {
                at_ms: -3,
                event: Cow::Borrowed(&e),
            },
            Record::Done {
                ids: Cow::Borrowed(&ids),
            },
        ];
        for record in records {
            let written = encode(&record).unwrap();
            assert_eq!(written.last(), Some(&b'\n'));
            let read: Record = serde_json::from_slice(&written).unwrap();
            assert!(matches!(
                &read,
                Record::Started {
                    event: Cow::Owned(_),
                    ..
                } | Record::Event {
                    event: Cow::Owned(_),
                    ..
                } | Record::Done { ids: Cow::Owned(_) }
            ));
            assert_eq!(read, record);
        }
    }

    #[tokio::test]
    async fn records_are_written_and_a_clean_stop_with_everything_done_leaves_nothing() {
        for durability in [Durability::Fsync, Durability::Batch] {
            let dir = temp_dir();
            let metrics = Arc::new(ProxyMetrics::default());
            let wal = Wal::start(&dir, settings(durability), metrics.clone()).unwrap();
            let a = event("a");
            let b = event("b");
            wal.started(&a).await.unwrap();
            wal.event(&a).await.unwrap();
            wal.event(&b).await.unwrap();
            // In one segment, or two if a spare was ready meanwhile.
            let records = records_in_dir(&dir);
            assert_eq!(records.len(), 3, "{records:?}");
            assert!(matches!(&records[0], Record::Started { event, .. } if **event == a));
            assert!(matches!(&records[2], Record::Event { event, .. } if **event == b));
            assert!(metrics.wal_records.get() == 3);
            wal.done(vec![a.event_id, b.event_id]);
            let stopped = wal.stopped();
            drop(wal);
            // The writer deletes its segments once it stops with nothing
            // open (a spare is left for the next start), before it reports
            // that it stopped.
            tokio::time::timeout(Duration::from_secs(60), stopped.wait())
                .await
                .expect("the writer did not stop");
            assert_eq!(segments(&dir).unwrap(), vec![]);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// The appends of `batch` wait for no fsync, and the interval holds
    /// their fsync back; those of `fsync` return after an fsync that covers
    /// them, which no interval delays.
    #[tokio::test]
    async fn only_fsync_appends_wait_for_an_fsync_and_no_timer_delays_it() {
        for durability in [Durability::Batch, Durability::Fsync] {
            let dir = temp_dir();
            let metrics = Arc::new(ProxyMetrics::default());
            let wal = Wal::start(&dir, hourly(durability), metrics.clone()).unwrap();
            // The first record is synced at once (no fsync happened yet)...
            wal.started(&event("first")).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while metrics.wal_fsyncs.get() < 1 {
                assert!(Instant::now() < deadline, "no first fsync");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // ...the interval's next one is an hour away; no append waits
            // for it (a minute stands for "not an hour").
            tokio::time::timeout(Duration::from_secs(60), wal.started(&event("second")))
                .await
                .expect("an append waited for the interval")
                .unwrap();
            assert_eq!(metrics.wal_records.get(), 2);
            // `batch` returned after its write, its fsync waits for the
            // hour; `fsync` returned after an fsync of its own.
            let fsyncs = if durability == Durability::Batch {
                1
            } else {
                2
            };
            assert_eq!(metrics.wal_fsyncs.get(), fsyncs);
            // A record no append waits for is left to the interval.
            wal.done(vec![Uuid::new_v4()]);
            while metrics.wal_records.get() < 3 {
                assert!(Instant::now() < deadline, "done record not written");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(metrics.wal_fsyncs.get(), fsyncs);
            drop(wal);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// The fsync runs without the lock, so records are written while it
    /// runs. With `fsync` such a record is not answered by the fsync that
    /// was already under way (it may not cover it) but by the next; with
    /// `batch` it is answered at once, whatever fsync is running.
    #[test]
    fn a_record_written_during_an_fsync_waits_for_the_next_one() {
        use tokio::sync::oneshot::error::TryRecvError;
        let line = |name: &str| {
            let e = event(name);
            let record = Record::Started {
                at_ms: 1,
                event: Cow::Borrowed(&e),
            };
            (encode(&record).unwrap(), e.event_id)
        };
        for durability in [Durability::Fsync, Durability::Batch] {
            let dir = temp_dir();
            let metrics = Arc::new(ProxyMetrics::default());
            let mut writer = Writer::open(&dir, 1, hourly(durability), metrics.clone()).unwrap();
            let (first, first_id) = line("first");
            let (reply, mut first_answer) = oneshot::channel();
            // Nothing was written before: the syncer is woken either way.
            assert!(writer.write(&first, Track::Started(first_id), Some(reply)));
            let running = writer.take_sync().expect("the first fsync is due");
            assert!(writer.take_sync().is_none(), "one fsync at a time");
            let (second, second_id) = line("second");
            let (reply, mut second_answer) = oneshot::channel();
            let wake = writer.write(&second, Track::Started(second_id), Some(reply));
            running.run();
            writer.synced();
            assert!(matches!(first_answer.try_recv(), Ok(Ok(()))));
            if durability == Durability::Fsync {
                assert!(wake, "an append waits: the syncer must know");
                assert!(matches!(second_answer.try_recv(), Err(TryRecvError::Empty)));
                // The next fsync is due at once (an append waits), not in an hour.
                assert_eq!(writer.next_sync_in(), Some(Duration::ZERO));
                writer.take_sync().expect("due").run();
                assert!(matches!(second_answer.try_recv(), Ok(Ok(()))));
            } else {
                assert!(matches!(second_answer.try_recv(), Ok(Ok(()))));
                // Written after the fsync began: left to the interval.
                assert!(writer.dirty && writer.take_sync().is_none());
            }
            assert_eq!(metrics.wal_records.get(), 2);
            assert_eq!(records_in(&segment_path(&dir, 1)).len(), 2);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// A full segment is closed by the syncer, not by an append: records
    /// go on into the next segment, every append is answered, and the old
    /// segment is deleted once all its records are done. (A burst of
    /// `batch` appends may overrun the size before the syncer switches.)
    #[tokio::test]
    async fn a_full_segment_is_continued_in_the_next_and_deleted_once_done() {
        let ids_in = |path: &Path| -> Vec<Uuid> {
            records_in(path)
                .into_iter()
                .map(|record| match record {
                    Record::Event { event, .. } => event.event_id,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        for durability in [Durability::Fsync, Durability::Batch] {
            let dir = temp_dir();
            let metrics = Arc::new(ProxyMetrics::default());
            let small = WalSettings {
                segment_bytes: 1024,
                ..settings(durability)
            };
            let wal = Wal::start(&dir, small, metrics.clone()).unwrap();
            let mut written = Vec::new();
            for i in 0..40 {
                let e = event(&format!("e{i}"));
                wal.event(&e).await.unwrap();
                written.push(e.event_id);
            }
            // Rotations happen on the syncer's wake: wait for a switch (the
            // next file exists a moment before appends go to it).
            let deadline = Instant::now() + Duration::from_secs(60);
            while lock(&wal.writer).number < 2 {
                assert!(Instant::now() < deadline, "no rotation");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A record after the switch is not in the first segment.
            let late = event("late");
            wal.event(&late).await.unwrap();
            written.push(late.event_id);
            let found = segments(&dir).unwrap();
            let first = found[0].clone();
            assert_eq!(first.0, 1);
            assert!(!ids_in(&first.1).contains(&late.event_id));
            // Every record is in exactly one segment, in order.
            let read: Vec<Uuid> = found.iter().flat_map(|(_, path)| ids_in(path)).collect();
            assert_eq!(read, written, "{durability:?}");
            assert_eq!(metrics.wal_records.get(), 41);
            // The first segment's events done: it goes, the others stay.
            wal.done(ids_in(&first.1));
            while segments(&dir).unwrap()[0].0 == first.0 {
                assert!(Instant::now() < deadline, "done segment not deleted");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(!segments(&dir).unwrap().is_empty());
            drop(wal);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// Without a syncer (it could only have panicked), an append that
    /// would wait for an fsync is answered with an error, not left waiting.
    #[tokio::test]
    async fn without_a_syncer_no_append_waits_for_an_fsync_forever() {
        let dir = temp_dir();
        let metrics = Arc::new(ProxyMetrics::default());
        let writer = Writer::open(&dir, 1, settings(Durability::Fsync), metrics).unwrap();
        let writable = writer.writable.clone();
        let (wake, woken) = mpsc::channel();
        drop(woken);
        let wal = Wal {
            writer: Arc::new(Mutex::new(writer)),
            wake,
            writable,
            stopped: watch::channel(()).1,
        };
        let answer = tokio::time::timeout(Duration::from_secs(60), wal.started(&event("a")))
            .await
            .expect("the append waited for an fsync nobody would run");
        assert!(matches!(answer, Err(WalError::Stopped)), "{answer:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_stop_with_open_records_keeps_them_for_the_next_start() {
        let dir = temp_dir();
        let wal = Wal::start(
            &dir,
            settings(Durability::Batch),
            Arc::new(ProxyMetrics::default()),
        )
        .unwrap();
        let a = event("a");
        wal.event(&a).await.unwrap();
        drop(wal);
        let found: Vec<u64> = segments(&dir).unwrap().iter().map(|(n, _)| *n).collect();
        let kept = recover::read(&dir).unwrap();
        assert_eq!(kept.events.len(), 1);
        assert_eq!(kept.events[0].event, a);
        // The next run starts a segment numbered after them.
        let wal = Wal::start(
            &dir,
            settings(Durability::Batch),
            Arc::new(ProxyMetrics::default()),
        )
        .unwrap();
        let numbers: Vec<u64> = segments(&dir).unwrap().iter().map(|(n, _)| *n).collect();
        let last = *found.last().unwrap();
        assert_eq!(numbers, [found, vec![last + 1]].concat());
        drop(wal);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A run starts on a plain segment and moves to a spare once one is
    /// written; records then overwrite the spare's zeros at their offsets
    /// (the file does not grow), and what a crash would leave reads back
    /// as every record, in order.
    #[tokio::test]
    async fn records_go_on_in_a_spare_over_its_zeros_and_read_back(
    ) -> Result<(), Box<dyn std::error::Error>> {
        for durability in [Durability::Fsync, Durability::Batch] {
            let dir = temp_dir();
            let metrics = Arc::new(ProxyMetrics::default());
            let wal = Wal::start(&dir, settings(durability), metrics.clone())?;
            let mut written = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            // Appends wake the syncer, which switches once the spare is ready.
            while !lock(&wal.writer).spare {
                assert!(Instant::now() < deadline, "never moved to a spare");
                let e = event(&format!("before{}", written.len()));
                wal.event(&e).await?;
                written.push(e);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for i in 0..50 {
                let e = event(&format!("after{i}"));
                wal.event(&e).await?;
                written.push(e);
            }
            let (number, len) = {
                let w = lock(&wal.writer);
                (w.number, w.len)
            };
            let path = segment_path(&dir, number);
            assert_eq!(
                fs::metadata(&path)?.len(),
                spare_bytes(SEGMENT_BYTES),
                "the spare grew"
            );
            assert!(len > 0 && len < SEGMENT_BYTES);
            assert_eq!(records_in(&path).len(), 50);
            // The plain first segment, then the spare (or more of both).
            let segments = metrics.wal_segments.get();
            let spares = metrics.wal_spare_segments.get();
            assert!(
                segments >= 2 && spares >= 1 && spares < segments,
                "{segments} {spares}"
            );
            // What a SIGKILL now would leave: every event, in order.
            let recovered = recover::read(&dir)?;
            assert_eq!(recovered.unreadable, 0);
            let events: Vec<Event> = recovered.events.into_iter().map(|r| r.event).collect();
            assert_eq!(events, written, "{durability:?}");
            drop(wal);
            let _ = fs::remove_dir_all(&dir);
        }
        Ok(())
    }
}
