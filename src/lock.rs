//! Kernel advisory locks (`flock`) that die with their process: no stale lock ever needs a manual
//! unlock after a crash or `kill -9`.
//!
//! A lock file's content names its holder (pid, host, what it is doing), written after the lock
//! is taken, so a waiting process can say who it waits for. Read-only commands take no locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

fn flock(file: &File, mode: Mode, block: bool) -> io::Result<bool> {
    let mut op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    };
    if !block {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) if !block => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl FileLock {
    /// Takes the lock if it is free right now.
    pub fn try_acquire(path: &Path, mode: Mode) -> io::Result<Option<FileLock>> {
        let file = open(path)?;
        Ok(flock(&file, mode, false)?.then(|| FileLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// Waits for the lock, calling `on_wait(holder)` once if it is busy, up to `timeout`.
    pub fn acquire(
        path: &Path,
        mode: Mode,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> io::Result<FileLock> {
        if let Some(l) = Self::try_acquire(path, mode)? {
            return Ok(l);
        }
        on_wait(&holder(path));
        let start = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(l) = Self::try_acquire(path, mode)? {
                return Ok(l);
            }
            if start.elapsed() >= timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "gave up after {:.0?} waiting for `{}`, held by {}",
                        timeout,
                        path.display(),
                        holder(path)
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Records who holds the lock (only meaningful for exclusive locks).
    pub fn describe(&mut self, what: &str) {
        let host = crate::store::hostname();
        let text = format!("pid {} on {host}: {what}\n", std::process::id());
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = self.file.write_all(text.as_bytes());
    }
}

/// What the holder of a lock wrote about itself.
pub fn holder(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let s = s.trim();
    if s.is_empty() {
        "another azimuth process".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_releases_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let mut a = FileLock::try_acquire(&p, Mode::Exclusive).unwrap().unwrap();
        a.describe("testing");
        assert!(FileLock::try_acquire(&p, Mode::Exclusive)
            .unwrap()
            .is_none());
        assert!(FileLock::try_acquire(&p, Mode::Shared).unwrap().is_none());
        assert!(holder(&p).contains("testing"));
        drop(a);
        assert!(FileLock::try_acquire(&p, Mode::Exclusive)
            .unwrap()
            .is_some());
    }

    #[test]
    fn shared_locks_coexist_and_waiting_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let _a = FileLock::try_acquire(&p, Mode::Shared).unwrap().unwrap();
        let _b = FileLock::try_acquire(&p, Mode::Shared).unwrap().unwrap();
        let mut waited = false;
        let e = FileLock::acquire(&p, Mode::Exclusive, Duration::from_millis(50), |_| {
            waited = true
        })
        .unwrap_err();
        assert!(waited);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
