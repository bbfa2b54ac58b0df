//! Segments written in advance. A spare segment is a file whose blocks
//! are already zeros on disk, fsynced, before any record goes into it. A
//! record written over them changes neither the file's size nor its
//! allocation, so the fsync that covers it (`fdatasync`) writes the data
//! alone and needs no commit of the file system's journal. Appending to a
//! file grows it, and on ext4 every such fsync commits the journal, which
//! is shared with every other writer on the disk (Kafka's logs,
//! ClickHouse's parts). PostgreSQL fills its WAL segments with zeros for
//! the same reason.
//!
//! A preparer thread keeps one spare ready in the log's directory, under a
//! name [`super::segments`] does not read (`spare-segment`); the syncer
//! renames it into the next segment's name when it switches segments, and
//! the preparer writes the next spare. A spare is only ever zeros, so one
//! left by a stop (or half written by a crash) is never read as records.
//! Without a spare (the first seconds of a run, a disk too full to write
//! one) segments are plain files that grow, as before.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

const READY: &str = "spare-segment";
const PARTIAL: &str = "spare-segment.partial";
/// Zeros are written and fsynced this much at a time, so that the disk's
/// queue never holds more than this ahead of the log's own fsyncs.
const CHUNK: usize = 256 * 1024;

/// The spare segment of one log directory (cheap to clone; the preparer
/// thread ends when every clone is dropped).
#[derive(Clone)]
pub(super) struct Spares {
    ready_path: PathBuf,
    ready: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
}

impl Spares {
    /// Start the preparer for spares of `bytes` in `dir`. A spare left by
    /// an earlier run is used if it has that size; otherwise one is
    /// written now, in the background.
    pub(super) fn start(dir: &Path, bytes: u64) -> Self {
        let ready_path = dir.join(READY);
        let kept = fs::metadata(&ready_path).is_ok_and(|m| m.is_file() && m.len() == bytes);
        if !kept {
            let _ = fs::remove_file(&ready_path);
        }
        let ready = Arc::new(AtomicBool::new(kept));
        let (wake, woken) = mpsc::channel();
        let preparer = Preparer {
            dir: dir.to_path_buf(),
            bytes,
            ready: ready.clone(),
        };
        let started = std::thread::Builder::new()
            .name("tollgate-wal-spare".into())
            .spawn(move || preparer.run(&woken));
        if let Err(error) = started {
            // Segments are then plain files, as without spares.
            tracing::warn!(%error, "cannot start the write-ahead log's spare segment thread");
        }
        Self {
            ready_path,
            ready,
            wake,
        }
    }

    /// Whether a spare is ready to be taken.
    pub(super) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Move the spare to `path` and open it for writing, then have the
    /// next one written. The caller makes the new name durable (an fsync
    /// of the directory) before a record in it is answered. `None` when no
    /// spare is ready.
    pub(super) fn take(&self, path: &Path) -> Option<File> {
        if !self.ready() {
            return None;
        }
        self.ready.store(false, Ordering::Release);
        let taken = fs::rename(&self.ready_path, path)
            .and_then(|()| OpenOptions::new().write(true).open(path));
        let _ = self.wake.send(());
        match taken {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot use the write-ahead log's spare segment");
                None
            }
        }
    }
}

/// The thread that writes spares.
struct Preparer {
    dir: PathBuf,
    bytes: u64,
    ready: Arc<AtomicBool>,
}

impl Preparer {
    /// Write a spare whenever none is ready: now, and after each one is
    /// taken. Ends when every [`Spares`] handle is dropped.
    fn run(self, woken: &mpsc::Receiver<()>) {
        loop {
            if !self.ready.load(Ordering::Acquire) {
                match self.write_spare() {
                    Ok(()) => self.ready.store(true, Ordering::Release),
                    Err(error) => {
                        let _ = fs::remove_file(self.dir.join(PARTIAL));
                        // Tried again at the next switch of segments.
                        tracing::warn!(dir = %self.dir.display(), %error, "cannot write a spare write-ahead log segment; the next segment grows as it is written");
                    }
                }
            }
            if woken.recv().is_err() {
                return;
            }
            while woken.try_recv().is_ok() {}
        }
    }

    /// Zeros, written and fsynced a chunk at a time under a name nothing
    /// reads, then renamed ready (and the name made durable).
    fn write_spare(&self) -> std::io::Result<()> {
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
            let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
            file.write_all(&zeros[..n])?;
            file.sync_data()?;
            left -= n as u64;
        }
        drop(file);
        fs::rename(&partial, self.dir.join(READY))?;
        sync_dir(&self.dir);
        Ok(())
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
            &line[start..end.max(start)]
        })
        .filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-spare-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn wait_ready(spares: &Spares) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spares.ready() {
            assert!(Instant::now() < deadline, "no spare written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A spare is all zeros at its size; taking it moves it to the
    /// segment's name and the next is written; a later start keeps a
    /// spare of the same size and replaces one of another.
    #[test]
    fn a_spare_is_zeros_taken_under_the_segments_name_and_replaced() {
        let dir = temp_dir();
        let bytes = 3 * CHUNK as u64 + 17;
        let spares = Spares::start(&dir, bytes);
        wait_ready(&spares);
        let segment = dir.join("0000000000000001.wal");
        let file = spares.take(&segment).expect("a spare was ready");
        assert_eq!(file.metadata().unwrap().len(), bytes);
        let written = fs::read(&segment).unwrap();
        assert!(written.iter().all(|b| *b == 0));
        assert_eq!(lines(&written).count(), 0);
        // The next spare is written after a take.
        wait_ready(&spares);
        assert_eq!(fs::metadata(dir.join(READY)).unwrap().len(), bytes);
        assert!(!dir.join(PARTIAL).exists());
        // The segment listing never shows a spare.
        let listed: Vec<u64> = super::super::segments(&dir)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(listed, [1]);
        drop(spares);
        assert!(
            Spares::start(&dir, bytes).ready(),
            "a spare of the same size is kept"
        );
        assert!(
            !Spares::start(&dir, bytes + 1).ready(),
            "a spare of another size is not"
        );
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
