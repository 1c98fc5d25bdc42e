//! Writing a backup's files back: each chunk is fetched, checked, decoded
//! into a reused buffer and written at its offset in one blocking-pool task,
//! with several chunks of a file, and several files, in flight at once.
//! The order ([`plan`]): the largest files first, then the small one-chunk
//! files in runs whose chunks lie back to back in a pack, one ranged read a
//! run.
//!
//! Files of `DIRECT_MIN` bytes and more are written with `O_DIRECT` where the
//! file system allows it (Linux): the bytes go to the disk once, without
//! being copied into the page cache and written back later, which on a
//! 2-core machine leaves the CPU to decompression and leaves little for the
//! final `syncfs` to flush. A file system that refuses `O_DIRECT` (tmpfs on
//! older kernels, some network file systems) gets ordinary writes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::io;
use crate::chunk::ChunkRef;
use crate::jobs::{JobError, Progress};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::BackupFile;

/// Alignment `O_DIRECT` needs for offsets, lengths and buffers (the largest
/// logical block size in common use).
const ALIGN: usize = 4096;
/// Smaller files go through the page cache: one synchronous disk write per
/// tiny file would cost more than the copy it saves.
const DIRECT_MIN: u64 = 1 << 20;
/// Files of one run written at once (their bytes are already fetched).
const RUN_FILES_IN_FLIGHT: usize = 4;

pub(super) struct FileWriter {
    /// The backup, for errors.
    id: String,
    reader: ChunkReader,
    /// Chunks fetched but not yet written, across all files.
    slots: Semaphore,
    in_flight: usize,
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Cleared after the first refusal of `O_DIRECT`.
    direct: AtomicBool,
    /// The work handed to the blocking pool (creating, writing, finishing
    /// files): it goes on when the task that started it is aborted, so it
    /// is tracked, and [`FileWriter::settle`] waits for it.
    writes: TaskTracker,
}

impl FileWriter {
    pub(super) fn new(id: String, reader: ChunkReader, in_flight: usize) -> Self {
        FileWriter {
            id,
            reader,
            slots: Semaphore::new(in_flight.max(1)),
            in_flight: in_flight.max(1),
            buffers: Mutex::new(Vec::new()),
            direct: AtomicBool::new(cfg!(target_os = "linux")),
            writes: TaskTracker::new(),
        }
    }

    /// Wait until every write started on the blocking pool has ended (the
    /// restore's workers were stopped first): nothing is written after it.
    pub(super) async fn settle(&self) {
        self.writes.close();
        self.writes.wait().await;
    }

    /// Run `f` on the blocking pool, tracked.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        self.writes
            .spawn_blocking(f)
            .await
            .map_err(|e| io::Error::other(format!("worker thread failed: {e}")))
    }

    /// Write small one-chunk files whose chunks lie back to back in a pack
    /// (a run of [`crate::pipeline::reader::runs`]): one ranged read for
    /// all of them, then each written as [`FileWriter::restore`] does.
    pub(super) async fn restore_run(
        self: &Arc<Self>,
        run: Vec<(PathBuf, &BackupFile)>,
        progress: &Progress,
    ) -> Result<(), JobError> {
        let chunks: Vec<ChunkRef> = run
            .iter()
            .filter_map(|(_, f)| f.stream.as_ref()?.chunks.first().copied())
            .collect();
        if chunks.len() != run.len() {
            // Not a run of one-chunk files after all: file by file.
            for (path, f) in run {
                self.restore(path, f, None, progress).await?;
                progress.units_done.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let stored = match self.reader.fetch_run(&chunks).await {
            Ok(stored) => stored,
            Err(e) => {
                // File by file: the error then names the file it is about.
                tracing::debug!("reading a run of {} files: {e}", run.len());
                for (path, f) in run {
                    self.restore(path, f, None, progress).await?;
                    progress.units_done.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
        };
        let writes: Vec<_> = run
            .into_iter()
            .zip(stored)
            .map(|((path, f), stored)| self.restore_fetched(path, f, stored, progress))
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(RUN_FILES_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    /// [`FileWriter::restore`] of a one-chunk file already fetched, counted
    /// as done.
    async fn restore_fetched(
        self: &Arc<Self>,
        path: PathBuf,
        f: &BackupFile,
        stored: bytes::Bytes,
        progress: &Progress,
    ) -> Result<(), JobError> {
        self.restore(path, f, Some(stored), progress).await?;
        progress.units_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write `f` at `path`: every byte checked against the manifest, the
    /// length checked before anything is written, the mode applied.
    /// `fetched`: the stored bytes of a one-chunk file, already read.
    pub(super) async fn restore(
        self: &Arc<Self>,
        path: PathBuf,
        f: &BackupFile,
        fetched: Option<bytes::Bytes>,
        progress: &Progress,
    ) -> Result<(), JobError> {
        let chunks: Vec<ChunkRef> = f
            .stream
            .as_ref()
            .map(|s| s.chunks.clone())
            .unwrap_or_default();
        let recorded: u64 = chunks.iter().map(|c| c.raw_len).sum();
        if recorded != f.size {
            return Err(JobError::Damaged {
                id: self.id.clone(),
                what: format!(
                    "{} has {recorded} bytes of chunks, the manifest records {}",
                    f.path, f.size
                ),
            });
        }
        let direct = f.size >= DIRECT_MIN && self.direct.load(Ordering::Relaxed);
        let me = self.clone();
        let p = path.clone();
        let out = self
            .blocking(move || Target::create(&me, p, direct))
            .await
            .map_err(io(format!("create {}", path.display())))??;
        let out = Arc::new(out);

        let mut offset = 0u64;
        let mut fetched = fetched.filter(|_| chunks.len() == 1);
        let pieces = chunks.into_iter().map(|c| {
            let at = offset;
            offset += c.raw_len;
            (c, at, fetched.take())
        });
        futures::stream::iter(pieces)
            .map(|(c, at, stored)| self.chunk(out.clone(), c, at, f.size, stored))
            .buffer_unordered(self.in_flight)
            .try_for_each(|n| {
                progress.add_bytes(n);
                futures::future::ready(Ok(()))
            })
            .await
            .map_err(|e| e.context(&f.path))?;

        let mode = f.mode;
        let size = f.size;
        self.blocking(move || out.finish(size, mode))
            .await
            .map_err(io(format!("write {}", path.display())))?
    }

    async fn chunk(
        self: &Arc<Self>,
        out: Arc<Target>,
        c: ChunkRef,
        at: u64,
        size: u64,
        fetched: Option<bytes::Bytes>,
    ) -> Result<u64, ChunkError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        self.reader
            .check_raw_len(&c)
            .map_err(ChunkError::Pipeline)?;
        let stored = match fetched {
            Some(b) => b,
            None => self.reader.fetch(&c).await.map_err(ChunkError::Pipeline)?,
        };
        let me = self.clone();
        self.blocking(move || {
            let need = c.raw_len as usize + 2 * ALIGN;
            let mut buf = me
                .buffers
                .lock()
                .expect("buffer pool")
                .pop()
                .unwrap_or_default();
            if buf.len() < need {
                buf.resize(need, 0);
            }
            let start = buf.as_ptr().align_offset(ALIGN);
            if start >= ALIGN {
                return Err(ChunkError::Io(io::Error::other("cannot align a buffer")));
            }
            let region = &mut buf[start..];
            let res = me
                .reader
                .decode_into(&c, &stored, region)
                .map_err(ChunkError::Pipeline)
                .and_then(|n| {
                    out.write(region, n, at, at + n as u64 == size)
                        .map_err(ChunkError::Io)?;
                    Ok(n as u64)
                });
            me.buffers.lock().expect("buffer pool").push(buf);
            res
        })
        .await
        .map_err(ChunkError::Io)?
    }
}

/// A one-chunk file of at most this many stored bytes is read together with
/// its neighbours in the pack (most of a data directory is such files).
const RUN_FILE_MAX: u64 = 1 << 20;

/// What a restore worker takes from the queue.
pub(super) enum Work {
    /// A file (path, index into the manifest's files).
    File(PathBuf, usize),
    /// Small one-chunk files whose chunks lie back to back in a pack.
    Run(Vec<(PathBuf, usize)>),
}

/// The order files are written in: the largest first, one by one; then the
/// small one-chunk files in runs, so that a data directory's thousands of
/// small files take one ranged read per run instead of one each.
pub(super) fn plan(
    m: &crate::repo::manifest::BackupManifest,
    files: Vec<(PathBuf, usize)>,
) -> std::collections::VecDeque<Work> {
    let one_chunk = |i: usize| {
        m.files[i]
            .stream
            .as_ref()
            .filter(|s| s.chunks.len() == 1 && s.chunks[0].stored_len <= RUN_FILE_MAX)
            .map(|s| s.chunks[0])
    };
    let (mut small, mut large): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|&(_, i)| one_chunk(i).is_some());
    large.sort_by_key(|&(_, i)| std::cmp::Reverse(m.files[i].size));
    let chunks: Vec<crate::chunk::ChunkRef> =
        small.iter().filter_map(|&(_, i)| one_chunk(i)).collect();
    let mut taken: Vec<Option<(PathBuf, usize)>> = small.drain(..).map(Some).collect();
    let runs = crate::pipeline::reader::runs(&chunks, crate::pipeline::reader::RUN_SPAN)
        .into_iter()
        .map(|run| Work::Run(run.into_iter().filter_map(|k| taken[k].take()).collect()));
    large
        .into_iter()
        .map(|(p, i)| Work::File(p, i))
        .chain(runs)
        .collect()
}

/// One file being written: the `O_DIRECT` descriptor when there is one, and
/// an ordinary one for what `O_DIRECT` cannot take.
struct Target {
    path: PathBuf,
    plain: File,
    direct: Option<File>,
}

impl Target {
    fn create(w: &FileWriter, path: PathBuf, direct: bool) -> Result<Target, JobError> {
        let plain = File::create(&path).map_err(io(format!("create {}", path.display())))?;
        let direct = if direct { open_direct(w, &path) } else { None };
        Ok(Target {
            path,
            plain,
            direct,
        })
    }

    /// Write `buf[..n]` at `at`. `buf` starts aligned and has room for `n`
    /// rounded up to `ALIGN`; the last chunk of a file may be padded with
    /// zeros past the end, which `finish` cuts off again.
    fn write(&self, buf: &mut [u8], n: usize, at: u64, last: bool) -> io::Result<()> {
        if let Some(d) = &self.direct {
            let aligned = at % ALIGN as u64 == 0;
            if aligned && (n % ALIGN == 0 || last) {
                let padded = n.div_ceil(ALIGN) * ALIGN;
                buf[n..padded].fill(0);
                match write_all_at(d, &buf[..padded], at) {
                    // Refused after all (some file systems accept the flag
                    // at open and not the write): the plain descriptor
                    // rewrites the range.
                    Err(e) if refuses_direct(&e) => {}
                    r => return r,
                }
            }
        }
        write_all_at(&self.plain, &buf[..n], at)
    }

    fn finish(&self, size: u64, mode: u32) -> Result<(), JobError> {
        let ctx = || format!("write {}", self.path.display());
        if self.direct.is_some() {
            // Cut the padding of the last chunk.
            self.plain.set_len(size).map_err(io(ctx()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = self
            .plain
            .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(w: &FileWriter, path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            // Only a refusal of the flag turns it off for the rest of the
            // restore; other errors (out of descriptors) recur on the plain
            // descriptor or pass.
            if refuses_direct(&e) && w.direct.swap(false, Ordering::Relaxed) {
                tracing::debug!("O_DIRECT refused ({e}); writing through the page cache");
            }
            None
        }
    }
}

fn refuses_direct(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &FileWriter, _: &Path) -> Option<File> {
    None
}

fn write_all_at(f: &File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, at)
}

enum ChunkError {
    Pipeline(crate::pipeline::PipelineError),
    Io(io::Error),
}

impl ChunkError {
    fn context(self, file: &str) -> JobError {
        match self {
            ChunkError::Pipeline(e) => JobError::pipeline(format!("restore {file}"))(e),
            ChunkError::Io(e) => io(format!("write {file}"))(e),
        }
    }
}
