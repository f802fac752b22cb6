//! The node's local records log: an append-only sequence of records (one JSON document a line)
//! in segment files under `data_dir/records/`, the source every sink and the usage ledger read
//! from their own cursor.
//!
//! Invariants:
//! - One writer task owns the active segment. Producers hand it a line through a bounded queue
//!   and never wait: a full queue sheds the line and counts it ([`RecordLog::shed`]).
//! - Group commit: the writer writes what it has and fsyncs at most every `fsync_interval`, so
//!   a kill -9 loses at most the lines of the last interval; [`RecordLog::close`] loses none.
//!   [`RecordLog::durable`] is the count of lines known to be on disk.
//! - A line's sequence number is its position: a segment is named after the sequence number of
//!   its first line (`00000000000000000042.jsonl`), so a cursor is one number and needs no index.
//! - A segment rolls when it passes `segment_bytes` or `segment_age`; a closed segment is
//!   compressed with zstd (`.jsonl.zst`, written aside, fsynced, then renamed) and retention
//!   deletes the oldest closed segments by age and total size, never the active one.
//! - After a crash the tail of the last segment may hold a torn line: opening the log cuts it
//!   off, so no reader ever sees half a record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PLAIN: &str = ".jsonl";
const COMPRESSED: &str = ".jsonl.zst";
/// Lines taken off the queue per write.
const BATCH: usize = 1024;

/// Where and how the log keeps its segments.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub dir: PathBuf,
    /// Longest time a written line waits for its fsync.
    pub fsync_interval: Duration,
    /// A segment rolls past this size…
    pub segment_bytes: u64,
    /// …or this age.
    pub segment_age: Duration,
    /// Closed segments beyond this total size are deleted, oldest first…
    pub retain_bytes: u64,
    /// …and so are those older than this.
    pub retain_age: Duration,
    /// Lines the queue holds before it sheds.
    pub queue: usize,
}

impl LogSettings {
    /// The defaults under `dir`: fsync every 50 ms, 64 MiB or one hour a segment, 10 GiB and
    /// 7 days kept, 16,384 lines queued.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            fsync_interval: Duration::from_millis(50),
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            retain_bytes: 10 << 30,
            retain_age: Duration::from_secs(7 * 24 * 3600),
            queue: 16_384,
        }
    }
}

/// A running log: the producers' end of the writer's queue.
pub struct RecordLog {
    queue: mpsc::Sender<Bytes>,
    shed: Arc<AtomicU64>,
    durable: watch::Receiver<u64>,
    writer: JoinHandle<io::Result<()>>,
}

impl RecordLog {
    /// Opens the log in `settings.dir` (created if missing; a torn last line is cut off) and
    /// starts its writer.
    pub async fn open(settings: LogSettings) -> io::Result<Self> {
        let dir = settings.dir.clone();
        let active = tokio::task::spawn_blocking(move || Active::recover(&dir))
            .await
            .map_err(io::Error::other)??;
        let (queue, lines) = mpsc::channel(settings.queue.max(1));
        let (durable_tx, durable) = watch::channel(active.next);
        let writer = tokio::spawn(write_loop(settings, active, lines, durable_tx));
        Ok(Self {
            queue,
            shed: Arc::new(AtomicU64::new(0)),
            durable,
            writer,
        })
    }

    /// Appends one record (`line`: a JSON document without its newline). Never waits: when
    /// the queue is full, or the writer has stopped, the line is shed and counted.
    pub fn append(&self, line: Bytes) -> bool {
        let queued = self.queue.try_send(line).is_ok();
        if !queued {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Lines shed since the log opened.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// The number of lines on disk and fsynced (the sequence number of the next one).
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Follows the count of durable lines; closed when the writer stops.
    pub fn durable_watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Waits until `count` lines are durable (or the writer stopped).
    pub async fn wait_durable(&self, count: u64) {
        let mut durable = self.durable.clone();
        let _ = durable.wait_for(|d| *d >= count).await;
    }

    /// Writes and fsyncs everything queued, then stops the writer.
    pub async fn close(self) -> io::Result<()> {
        drop(self.queue);
        self.writer.await.map_err(io::Error::other)?
    }
}

/// The segment being written.
struct Active {
    dir: PathBuf,
    /// Sequence number of its first line.
    base: u64,
    /// Sequence number of the next line.
    next: u64,
    file: File,
    bytes: u64,
    /// When it was opened, for its age.
    opened: Instant,
}

impl Active {
    /// Reopens the last plain segment (cutting a torn line), or starts the first one after the
    /// last compressed one.
    fn recover(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let segments = segments(dir)?;
        match segments.last() {
            Some(last) if !last.compressed => {
                let (lines, good) = count_whole_lines(&last.path)?;
                let file = OpenOptions::new().read(true).write(true).open(&last.path)?;
                file.set_len(good)?;
                file.sync_data()?;
                let mut active = Self::at(dir, last.base, file)?;
                active.next = last.base + lines;
                active.bytes = good;
                Ok(active)
            }
            Some(last) => {
                let lines = count_whole_lines_in(decoder(&last.path)?)?.0;
                Self::create(dir, last.base + lines)
            }
            None => Self::create(dir, 0),
        }
    }

    fn create(dir: &Path, base: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, base, false))?;
        // The new name must survive a crash too.
        File::open(dir)?.sync_all()?;
        Self::at(dir, base, file)
    }

    fn at(dir: &Path, base: u64, mut file: File) -> io::Result<Self> {
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))?;
        Ok(Self {
            dir: dir.to_owned(),
            base,
            next: base,
            file,
            bytes: 0,
            opened: Instant::now(),
        })
    }
}

async fn write_loop(
    settings: LogSettings,
    mut active: Active,
    mut lines: mpsc::Receiver<Bytes>,
    durable: watch::Sender<u64>,
) -> io::Result<()> {
    let mut written = active.next;
    let mut last_sync = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let unsynced = written > *durable.borrow();
        let sync_at = last_sync + settings.fsync_interval;
        let roll_at = active.opened + settings.segment_age;
        let received = tokio::select! {
            n = lines.recv_many(&mut batch, BATCH) => n,
            () = tokio::time::sleep_until(sync_at), if unsynced => 0,
            () = tokio::time::sleep_until(roll_at) => 0,
        };
        let closing = received == 0 && lines.is_closed() && lines.is_empty();
        let mut buf = Vec::new();
        for line in batch.drain(..) {
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        written += received as u64;
        let sync = closing || Instant::now() >= sync_at;
        let roll =
            active.bytes + buf.len() as u64 >= settings.segment_bytes || Instant::now() >= roll_at;
        active = tokio::task::spawn_blocking(move || -> io::Result<Active> {
            if !buf.is_empty() {
                active.file.write_all(&buf)?;
                active.bytes += buf.len() as u64;
            }
            if sync || roll {
                active.file.sync_data()?;
            }
            Ok(active)
        })
        .await
        .map_err(io::Error::other)??;
        active.next = written;
        if sync || roll {
            last_sync = Instant::now();
            durable.send_replace(written);
        }
        if roll && active.next > active.base {
            let closed = active.base;
            let dir = active.dir.clone();
            let retention = settings.clone();
            active = tokio::task::spawn_blocking(move || -> io::Result<Active> {
                let next = Active::create(&dir, written)?;
                compress(&dir, closed)?;
                retain(&dir, &retention)?;
                Ok(next)
            })
            .await
            .map_err(io::Error::other)??;
        } else if roll {
            active.opened = Instant::now();
        }
        if closing {
            return Ok(());
        }
    }
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub compressed: bool,
}

fn segment_path(dir: &Path, base: u64, compressed: bool) -> PathBuf {
    let suffix = if compressed { COMPRESSED } else { PLAIN };
    dir.join(format!("{base:020}{suffix}"))
}

/// The log's segments, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (stem, compressed) = if let Some(stem) = name.strip_suffix(COMPRESSED) {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(PLAIN) {
            (stem, false)
        } else {
            continue;
        };
        if let Ok(base) = stem.parse::<u64>() {
            found.push(Segment {
                base,
                path,
                compressed,
            });
        }
    }
    found.sort_by_key(|s| (s.base, s.compressed));
    // A segment compressed while its plain file was still there (a crash between the rename
    // and the delete) counts once, compressed.
    found.dedup_by(|later, earlier| {
        later.base == earlier.base && {
            let _ = fs::remove_file(&earlier.path);
            earlier.path.clone_from(&later.path);
            earlier.compressed = true;
            true
        }
    });
    Ok(found)
}

fn decoder(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    if path.to_string_lossy().ends_with(COMPRESSED) {
        Ok(Box::new(zstd::stream::read::Decoder::new(file)?))
    } else {
        Ok(Box::new(file))
    }
}

fn count_whole_lines(path: &Path) -> io::Result<(u64, u64)> {
    count_whole_lines_in(File::open(path)?)
}

/// Whole lines in `read` and the bytes they take (a last line without its newline is torn).
fn count_whole_lines_in(read: impl Read) -> io::Result<(u64, u64)> {
    let mut reader = BufReader::new(read);
    let (mut lines, mut bytes) = (0, 0);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok((lines, bytes));
        }
        lines += 1;
        bytes += n as u64;
    }
}

/// Compresses the closed segment `base`: written aside, fsynced, renamed, then the plain one
/// deleted.
fn compress(dir: &Path, base: u64) -> io::Result<()> {
    let plain = segment_path(dir, base, false);
    let packed = segment_path(dir, base, true);
    let aside = packed.with_extension("zst.tmp");
    {
        let mut encoder = zstd::stream::write::Encoder::new(File::create(&aside)?, 3)?;
        io::copy(&mut File::open(&plain)?, &mut encoder)?;
        encoder.finish()?.sync_all()?;
    }
    fs::rename(&aside, &packed)?;
    File::open(dir)?.sync_all()?;
    fs::remove_file(&plain)
}

/// Deletes the oldest closed segments past the retention's age or total size; never the last
/// segment (the active one).
fn retain(dir: &Path, settings: &LogSettings) -> io::Result<()> {
    let segments = segments(dir)?;
    let Some((_active, closed)) = segments.split_last() else {
        return Ok(());
    };
    let mut sizes = Vec::with_capacity(closed.len());
    for segment in closed {
        let meta = fs::metadata(&segment.path)?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        sizes.push((meta.len(), age));
    }
    let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
    for (segment, (len, age)) in closed.iter().zip(sizes) {
        if total <= settings.retain_bytes && age <= settings.retain_age {
            break;
        }
        fs::remove_file(&segment.path)?;
        total -= len;
    }
    Ok(())
}

/// Reads the log from sequence number `from` on: every whole line with its number, across
/// plain and compressed segments, one segment open at a time. Blocking: run it off the async
/// threads. Lines deleted by retention are skipped (the first line read may be past `from`);
/// lines written after the reader opened the active segment may or may not be seen.
pub fn read_from(dir: &Path, from: u64) -> io::Result<LogReader> {
    let mut segments = segments(dir)?;
    // The segment holding `from`: the last whose base is not past it.
    let start = segments.iter().rposition(|s| s.base <= from).unwrap_or(0);
    segments.drain(..start);
    Ok(LogReader {
        segments: segments.into(),
        current: None,
        from,
    })
}

/// The lines of the log from a sequence number on; see [`read_from`].
pub struct LogReader {
    segments: std::collections::VecDeque<Segment>,
    /// The open segment and the number of its next line.
    current: Option<(BufReader<Box<dyn Read>>, u64)>,
    from: u64,
}

impl Iterator for LogReader {
    type Item = io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((reader, seq)) = self.current.as_mut() else {
                let segment = self.segments.pop_front()?;
                match decoder(&segment.path) {
                    Ok(read) => self.current = Some((BufReader::new(read), segment.base)),
                    // Deleted by retention since it was listed: go on with the next.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    let at = *seq;
                    *seq += 1;
                    if at >= self.from {
                        return Some(Ok((at, line)));
                    }
                }
                // The end of the segment (or a line still being written): the next one.
                Ok(_) => self.current = None,
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> LogSettings {
        LogSettings {
            fsync_interval: Duration::from_millis(5),
            ..LogSettings::new(dir.to_owned())
        }
    }

    fn line(i: u64) -> Bytes {
        Bytes::from(format!("{{\"n\":{i}}}"))
    }

    fn read_all(dir: &Path, from: u64) -> Vec<(u64, String)> {
        read_from(dir, from)
            .unwrap()
            .map(|l| {
                let (seq, bytes) = l.unwrap();
                (seq, String::from_utf8(bytes).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_are_numbered_in_order_and_read_back_from_any_cursor_across_compressed_segments()
    {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(LogSettings {
            segment_bytes: 100,
            ..settings(dir.path())
        })
        .await
        .unwrap();
        // In batches: a segment rolls after the batch that passes its size.
        for i in 0..50 {
            assert!(log.append(line(i)));
            if i % 5 == 4 {
                log.wait_durable(i + 1).await;
            }
        }
        assert_eq!(log.durable(), 50);
        log.close().await.unwrap();

        let all = segments(dir.path()).unwrap();
        assert!(all.len() > 3, "rolled by size: {all:?}");
        assert!(all[..all.len() - 1].iter().all(|s| s.compressed));
        assert!(
            !all.last().unwrap().compressed,
            "the active one stays plain"
        );
        let read = read_all(dir.path(), 0);
        assert_eq!(read.len(), 50);
        for (i, (seq, text)) in read.iter().enumerate() {
            assert_eq!(
                (*seq, text.as_str()),
                (i as u64, format!("{{\"n\":{i}}}").as_str())
            );
        }
        let tail = read_all(dir.path(), 37);
        assert_eq!(tail.first().unwrap().0, 37);
        assert_eq!(tail.len(), 13);
        assert!(read_all(dir.path(), 50).is_empty());
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_on_reopening_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(settings(dir.path())).await.unwrap();
        for i in 0..3 {
            log.append(line(i));
        }
        log.close().await.unwrap();
        // A crash in the middle of a write.
        let active = segments(dir.path()).unwrap().pop().unwrap();
        OpenOptions::new()
            .append(true)
            .open(&active.path)
            .unwrap()
            .write_all(b"{\"n\":3, \"tor")
            .unwrap();
        assert_eq!(
            read_all(dir.path(), 0).len(),
            3,
            "readers never see half a line"
        );

        let log = RecordLog::open(settings(dir.path())).await.unwrap();
        assert_eq!(log.durable(), 3);
        log.append(line(3));
        log.close().await.unwrap();
        let read = read_all(dir.path(), 0);
        assert_eq!(read.len(), 4);
        assert_eq!(read[3], (3, "{\"n\":3}".to_owned()));
    }

    #[tokio::test]
    async fn a_reopened_log_continues_after_its_compressed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let small = LogSettings {
            segment_bytes: 1,
            ..settings(dir.path())
        };
        let log = RecordLog::open(small.clone()).await.unwrap();
        for i in 0..4 {
            log.append(line(i));
            log.wait_durable(i + 1).await;
        }
        log.close().await.unwrap();
        let log = RecordLog::open(small).await.unwrap();
        log.append(line(4));
        log.close().await.unwrap();
        let seqs: Vec<u64> = read_all(dir.path(), 0)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn retention_deletes_the_oldest_closed_segments_and_never_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(LogSettings {
            segment_bytes: 1,
            retain_bytes: 0,
            ..settings(dir.path())
        })
        .await
        .unwrap();
        for i in 0..5 {
            log.append(line(i));
            log.wait_durable(i + 1).await;
        }
        log.close().await.unwrap();
        let left = segments(dir.path()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].base, 5, "only the active segment is left");
        assert!(!left[0].compressed);
        // A reader from the start finds what is left: nothing older survives.
        assert!(read_all(dir.path(), 0).is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_sheds_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(LogSettings {
            queue: 2,
            ..settings(dir.path())
        })
        .await
        .unwrap();
        // The writer runs on this same thread only when the test yields: the queue fills.
        let accepted = (0..10).filter(|i| log.append(line(*i))).count() as u64;
        assert_eq!(accepted, 2);
        assert_eq!(log.shed(), 8);
        log.close().await.unwrap();
        assert_eq!(read_all(dir.path(), 0).len(), 2);
    }
}
