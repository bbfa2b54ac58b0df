//! The log's file chores, done by a thread of their own so that neither
//! an append (under the writer's lock) nor the syncer (whose fsyncs
//! appends wait for) waits for them: spare segments written in advance,
//! and segments deleted once done.
//!
//! **Spares.** A spare segment is a file whose blocks are already zeros
//! on disk, fsynced, before any record goes into it. A record written over
//! them changes neither the file's size nor its allocation, so the fsync
//! that covers it (`fdatasync`) writes the data alone. Appending to a
//! file grows it, and every such fsync also writes the file's size and
//! new blocks: on a journaled ext4 a commit of the journal, which is
//! shared with every other writer on the disk (Kafka's logs, ClickHouse's
//! parts). PostgreSQL fills its WAL segments with zeros for the same
//! reason. One spare is kept ready in the log's directory, under a name
//! [`super::segments`] does not read (`spare-segment`); the syncer renames
//! it into the next segment's name when it switches segments, and the next
//! spare is written. A spare is only ever zeros, so one left by a stop (or
//! half written by a crash) is never read as records. Without a spare (the
//! first moments of a run, a disk too full to write one) segments are
//! plain files that grow, as before.
//!
//! **Deletes.** Deleting a done segment of 18 MiB took 5–9 ms on the
//! development machine's disk (mounted with `discard`), which under the
//! writer's lock held every append that long. Segments are deleted oldest
//! first; one that cannot be deleted is tried again, with every newer one
//! after it, at the next delete (a segment is only deleted while every
//! older one is).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

const READY: &str = "spare-segment";
const PARTIAL: &str = "spare-segment.partial";
/// Zeros are written and fsynced this much at a time, so that the disk's
/// queue never holds more than this ahead of the log's own fsyncs.
const CHUNK: usize = 256 * 1024;

/// What the thread is asked to do.
enum Chore {
    /// Write a spare if none is ready.
    Prepare,
    /// Delete these done segments, oldest first.
    Delete(Vec<PathBuf>),
    /// End, once every chore asked before is done (the queue is in order).
    Stop,
}

/// The handle of one log directory's housekeeping thread, owned by the
/// writer. [`Housekeeper::stop`] ends the thread after its last deletes.
pub(super) struct Housekeeper {
    ready_path: PathBuf,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    chores: mpsc::Sender<Chore>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeper {
    /// Start the thread for spares of `bytes` in `dir`. A spare left by an
    /// earlier run is used if it has that size; otherwise one is written
    /// now, in the background.
    pub(super) fn start(dir: &Path, bytes: u64) -> Self {
        let ready_path = dir.join(READY);
        let kept = fs::metadata(&ready_path).is_ok_and(|m| m.is_file() && m.len() == bytes);
        if !kept {
            let _ = fs::remove_file(&ready_path);
        }
        let ready = Arc::new(AtomicBool::new(kept));
        let stopping = Arc::new(AtomicBool::new(false));
        let (chores, queue) = mpsc::channel();
        let worker = Worker {
            dir: dir.to_path_buf(),
            bytes,
            ready: ready.clone(),
            stopping: stopping.clone(),
            undeleted: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-wal-files".into())
            .spawn(move || worker.run(&queue));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                // Segments are then plain files, and done ones stay until
                // the next start reads and deletes them.
                tracing::warn!(%error, "cannot start the write-ahead log's housekeeping thread");
                None
            }
        };
        let _ = chores.send(Chore::Prepare);
        Self {
            ready_path,
            ready,
            stopping,
            chores,
            thread,
        }
    }

    /// Whether a spare is ready to be taken.
    pub(super) fn spare_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Move the spare to `path` and open it for writing, then have the
    /// next one written. The caller makes the new name durable (an fsync
    /// of the directory) before a record in it is answered. `None` when no
    /// spare is ready.
    pub(super) fn take_spare(&self, path: &Path) -> Option<File> {
        if !self.spare_ready() {
            return None;
        }
        self.ready.store(false, Ordering::Release);
        let taken = fs::rename(&self.ready_path, path)
            .and_then(|()| OpenOptions::new().write(true).open(path));
        let _ = self.chores.send(Chore::Prepare);
        match taken {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot use the write-ahead log's spare segment");
                None
            }
        }
    }

    /// Delete these done segments (oldest first), in the background.
    pub(super) fn delete(&self, done: Vec<PathBuf>) {
        if !done.is_empty() {
            let _ = self.chores.send(Chore::Delete(done));
        }
    }

    /// The thread, to be joined once it has done what it was asked (a
    /// spare being written is given up); `None` if it was taken before
    /// or never started.
    pub(super) fn stop(&mut self) -> Option<JoinHandle<()>> {
        // A spare being written is given up at once; the deletes asked
        // before are done before the thread reads the stop.
        self.stopping.store(true, Ordering::Release);
        let _ = self.chores.send(Chore::Stop);
        self.thread.take()
    }
}

/// The housekeeping thread's state.
struct Worker {
    dir: PathBuf,
    bytes: u64,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// Done segments not yet deleted, oldest first.
    undeleted: VecDeque<PathBuf>,
}

impl Worker {
    /// Do the chores in order until asked to stop (or every handle is gone).
    fn run(mut self, queue: &mpsc::Receiver<Chore>) {
        while let Ok(chore) = queue.recv() {
            match chore {
                // A spare asked before a stop gives up at its next chunk.
                Chore::Prepare => self.prepare(),
                Chore::Delete(done) => {
                    self.undeleted.extend(done);
                    self.delete_in_order();
                }
                Chore::Stop => return,
            }
        }
    }

    /// Write a spare if none is ready.
    fn prepare(&self) {
        if self.ready.load(Ordering::Acquire) || self.stopping.load(Ordering::Acquire) {
            return;
        }
        match self.write_spare() {
            Ok(true) => self.ready.store(true, Ordering::Release),
            Ok(false) => {
                let _ = fs::remove_file(self.dir.join(PARTIAL));
            }
            Err(error) => {
                let _ = fs::remove_file(self.dir.join(PARTIAL));
                // Tried again at the next switch of segments.
                tracing::warn!(dir = %self.dir.display(), %error, "cannot write a spare write-ahead log segment; the next segment grows as it is written");
            }
        }
    }

    /// Delete the undeleted segments oldest first, up to the first that
    /// cannot be deleted (tried again, with those after it, next time).
    fn delete_in_order(&mut self) {
        while let Some(path) = self.undeleted.front() {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "cannot delete a write-ahead log segment");
                    return;
                }
            }
            self.undeleted.pop_front();
        }
    }

    /// Zeros, written and fsynced a chunk at a time under a name nothing
    /// reads, then renamed ready (and the name made durable). `false` when
    /// a stop came first.
    fn write_spare(&self) -> std::io::Result<bool> {
        self.check_room()?;
        let partial = self.dir.join(PARTIAL);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&partial)?;
        let zeros = vec![0u8; CHUNK];
        let mut left = self.bytes;
        while left > 0 {
            if self.stopping.load(Ordering::Acquire) {
                return Ok(false);
            }
            let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
            file.write_all(&zeros[..n])?;
            file.sync_data()?;
            left -= n as u64;
        }
        drop(file);
        fs::rename(&partial, self.dir.join(READY))?;
        sync_dir(&self.dir);
        Ok(true)
    }

    /// A spare is written only while the disk keeps as much again free
    /// for records: on a nearly full disk it would take the room the
    /// log's own records need (and a full disk refuses calls).
    fn check_room(&self) -> std::io::Result<()> {
        let stats = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        let free = stats
            .blocks_available()
            .saturating_mul(stats.fragment_size());
        let needed = self.bytes.saturating_mul(2);
        if free < needed {
            return Err(std::io::Error::other(format!(
                "{free} bytes free, a spare needs {needed} (its size twice)"
            )));
        }
        Ok(())
    }
}

/// Make the names in `dir` durable (a created or renamed segment must
/// survive a power loss).
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn temp_dir() -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("tollgate-spare-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Segment files numbered `numbers` in `dir`, each holding a line.
    fn segment_files(
        dir: &Path,
        numbers: std::ops::RangeInclusive<u64>,
    ) -> std::io::Result<Vec<PathBuf>> {
        numbers
            .map(|n| {
                let path = dir.join(format!("{n:016}.wal"));
                fs::write(&path, b"{}\n").map(|()| path)
            })
            .collect()
    }

    /// The thread's state for spares of `bytes` in `dir`, run by hand.
    fn worker(dir: &Path, bytes: u64) -> Worker {
        Worker {
            dir: dir.to_path_buf(),
            bytes,
            ready: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(AtomicBool::new(false)),
            undeleted: VecDeque::new(),
        }
    }

    fn wait_ready(housekeeper: &Housekeeper) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !housekeeper.spare_ready() {
            assert!(Instant::now() < deadline, "no spare written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A spare is all zeros at its size; taking it moves it to the
    /// segment's name and the next is written; a later start keeps a
    /// spare of the same size and replaces one of another.
    #[test]
    fn a_spare_is_zeros_taken_under_the_segments_name_and_replaced() -> TestResult {
        let dir = temp_dir()?;
        let bytes = 3 * CHUNK as u64 + 17;
        let housekeeper = Housekeeper::start(&dir, bytes);
        wait_ready(&housekeeper);
        let segment = dir.join("0000000000000001.wal");
        let file = housekeeper
            .take_spare(&segment)
            .ok_or("no spare was ready")?;
        assert_eq!(file.metadata()?.len(), bytes);
        let written = fs::read(&segment)?;
        assert!(written.iter().all(|b| *b == 0));
        assert_eq!(super::super::recover::lines(&written).count(), 0);
        // The next spare is written after a take.
        wait_ready(&housekeeper);
        assert_eq!(fs::metadata(dir.join(READY))?.len(), bytes);
        assert!(!dir.join(PARTIAL).exists());
        // The segment listing never shows a spare.
        let listed: Vec<u64> = super::super::segments(&dir)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(listed, [1]);
        drop(housekeeper);
        assert!(
            Housekeeper::start(&dir, bytes).spare_ready(),
            "a spare of the same size is kept"
        );
        assert!(
            !Housekeeper::start(&dir, bytes + 1).spare_ready(),
            "a spare of another size is not"
        );
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Done segments are deleted oldest first; one that cannot be deleted
    /// holds back every newer one until a later delete gets past it.
    #[test]
    fn segments_are_deleted_in_order_and_a_failure_holds_back_the_newer() -> TestResult {
        let dir = temp_dir()?;
        let stuck = dir.join("0000000000000001.wal");
        fs::create_dir(&stuck)?;
        fs::write(stuck.join("keeps-it"), b"x")?;
        let newer = segment_files(&dir, 2..=3)?;
        let mut worker = worker(&dir, 1024);
        worker.undeleted.push_back(stuck.clone());
        worker.undeleted.extend(newer.iter().cloned());
        worker.delete_in_order();
        assert!(newer.iter().all(|p| p.exists()), "deleted past a failure");
        assert_eq!(worker.undeleted.len(), 3);
        // Once it can go, the next delete takes it and those after it.
        fs::remove_dir_all(&stuck)?;
        worker.delete_in_order();
        assert!(newer.iter().all(|p| !p.exists()));
        assert!(worker.undeleted.is_empty());
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    /// No spare is begun on a disk without twice its size free: it would
    /// take the room the log's records need.
    #[test]
    fn no_spare_is_begun_without_twice_its_room() -> TestResult {
        let dir = temp_dir()?;
        let worker = worker(&dir, 1 << 60);
        let refused = match worker.write_spare() {
            Ok(written) => return Err(format!("a spare was written: {written}").into()),
            Err(refused) => refused,
        };
        assert!(refused.to_string().contains("a spare needs"), "{refused}");
        assert!(!dir.join(PARTIAL).exists(), "a spare was begun");
        worker.prepare();
        assert!(!worker.ready.load(Ordering::Acquire));
        assert!(!dir.join(READY).exists());
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    /// A stop does the deletes asked before it, then the thread ends.
    #[test]
    fn a_stop_deletes_what_was_asked_before_it() -> TestResult {
        let dir = temp_dir()?;
        let done = segment_files(&dir, 1..=3)?;
        let mut housekeeper = Housekeeper::start(&dir, 1024);
        housekeeper.delete(done.clone());
        let thread = housekeeper.stop().ok_or("the thread did not run")?;
        thread.join().map_err(|_| "the thread panicked")?;
        assert!(done.iter().all(|p| !p.exists()));
        assert!(housekeeper.stop().is_none(), "stopped once");
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}
