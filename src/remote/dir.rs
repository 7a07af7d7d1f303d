//! [`DirRemote`]: a remote cache in a directory, typically on a filesystem several machines
//! mount (NFS, Lustre, CephFS). Layout:
//!
//! ```text
//! <remote>/
//!   azimuth-remote                 marks the directory as a remote (refuses to write elsewhere)
//!   v1/objects/ab/cdef…            verified objects, mode 0444 (the local store's naming)
//!   v1/runs/<key>.json             run records; the first one stored for a key stays
//!   v1/uploads/<digest>/data       an unfinished upload: chunks are written at their offsets
//!   v1/uploads/<digest>/<i>-<chunk digest>   empty markers of the chunks written, any machine's
//! ```
//!
//! An upload writes each chunk straight into `data` at its offset, then creates the chunk's
//! marker; finishing hashes `data` once, and only if it has the object's digest and size is it
//! fsynced, made read-only and renamed into `objects/`. So the bytes cross the filesystem once,
//! and nothing unverified ever becomes an object: a marker whose bytes were lost in a crash
//! fails the final digest check, which removes the upload so the next push starts clean. Two
//! machines uploading one object write identical bytes at identical offsets. Records appear by
//! `link` of a complete, fsynced temporary file, which lets exactly one of two racing writers
//! win; the marker file appears by `rename` of a fresh temporary file.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Remote;
use crate::fingerprint::CACHE_FORMAT;
use crate::hash::Digest;

const MARKER: &str = "azimuth-remote";

/// A remote cache in a directory.
pub struct DirRemote {
    root: PathBuf,
    v: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name unique across hosts, processes and threads.
fn unique(prefix: &str) -> String {
    format!(
        ".{prefix}.{}.{}.{}",
        crate::store::hostname(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to a fresh temporary file in `dir` and fsyncs it; returns its path.
fn temp_file(dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let tmp = dir.join(unique(prefix));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

impl DirRemote {
    /// Opens (creating if needed) the remote at `root`. A non-empty directory that is not a
    /// remote is refused, so a typo cannot scatter objects into someone's data.
    pub fn open(root: &Path) -> io::Result<DirRemote> {
        let marker = root.join(MARKER);
        if !marker.is_file() {
            fs::create_dir_all(root)?;
            if fs::read_dir(root)?.next().is_some() {
                return Err(io::Error::other(format!(
                    "`{}` is not empty and has no `{MARKER}` file, so it is not an Azimuth remote; \
                     give an empty (or new) directory, or an existing remote",
                    root.display()
                )));
            }
            let tmp = temp_file(
                root,
                MARKER,
                b"An Azimuth remote cache (see README.md, \"Sharing a cache\").\n",
            )?;
            fs::rename(&tmp, &marker)?;
        }
        let v = root.join(format!("v{CACHE_FORMAT}"));
        for sub in ["objects", "runs", "uploads", "tmp"] {
            fs::create_dir_all(v.join(sub))?;
        }
        Ok(DirRemote {
            root: root.to_path_buf(),
            v,
        })
    }

    fn object_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.v.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    fn upload_dir(&self, d: &Digest) -> PathBuf {
        self.v.join("uploads").join(d.hex())
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.v.join("runs").join(format!("{}.json", key.hex()))
    }
}

impl Remote for DirRemote {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn object_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.object_path(d)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_object_at(&self, d: &Digest, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        fs::File::open(self.object_path(d))?.read_exact_at(buf, offset)
    }

    fn upload_chunks(&self, d: &Digest) -> io::Result<BTreeMap<u64, Digest>> {
        let mut out = BTreeMap::new();
        // Markers without `data` (an uploader that died while finishing, or one finishing now)
        // vouch for nothing: the chunks are sent again.
        if !self.upload_dir(d).join("data").is_file() {
            return Ok(out);
        }
        let entries = match fs::read_dir(self.upload_dir(d)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some((i, hex)) = name.split_once('-') {
                if let (Ok(i), Some(cd)) = (i.parse::<u64>(), Digest::parse(&format!("b3:{hex}")))
                {
                    out.insert(i, cd);
                }
            }
        }
        Ok(out)
    }

    fn put_chunk(
        &self,
        d: &Digest,
        index: u64,
        offset: u64,
        chunk: &Digest,
        bytes: &[u8],
    ) -> io::Result<()> {
        let dir = self.upload_dir(d);
        fs::create_dir_all(&dir)?;
        let data = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("data"))?;
        data.write_all_at(bytes, offset)?;
        drop(data);
        // The marker says "these bytes are there"; the final digest check is what trusts them.
        let tmp = temp_file(&dir, "marker", b"")?;
        fs::rename(&tmp, dir.join(format!("{index}-{}", chunk.hex()))).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    fn finish_upload(&self, d: &Digest, size: u64, _chunks: &[Digest]) -> io::Result<()> {
        let dest = self.object_path(d);
        let dir = self.upload_dir(d);
        if dest.is_file() {
            let _ = crate::fsutil::remove_all(&dir);
            return Ok(());
        }
        let data = dir.join("data");
        // Moved aside first, so that no other uploader writes into the file being verified.
        let tmp = self.v.join("tmp").join(unique(&d.hex()));
        match fs::rename(&data, &tmp) {
            Ok(()) => {}
            Err(_) if dest.is_file() => return Ok(()),
            // Another uploader of the same object is verifying it: wait for its verdict.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_secs(600) {
                    if dest.is_file() {
                        return Ok(());
                    }
                    if !dir.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                return if dest.is_file() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "another upload of {d} was finishing and did not complete; push again"
                    )))
                };
            }
            Err(e) => return Err(e),
        }
        let result = (|| {
            let file = fs::File::open(&tmp)?;
            let len = file.metadata()?.len();
            let (got, _) = crate::hash::hash_file(&tmp)?;
            if got != *d || len != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the uploaded bytes of {d} are {len} bytes with digest {got}, not {size} \
                         bytes with digest {d}; the upload was removed, push again"
                    ),
                ));
            }
            file.sync_all()?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))?;
            fs::create_dir_all(dest.parent().expect("objects have a parent"))?;
            fs::rename(&tmp, &dest)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            let _ = crate::fsutil::remove_all(&dir);
            return Err(e);
        }
        let _ = crate::fsutil::remove_all(&dir);
        Ok(())
    }

    fn get_record(&self, key: &Digest) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.record_path(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_record(&self, key: &Digest, bytes: &[u8]) -> io::Result<bool> {
        let dest = self.record_path(key);
        if dest.is_file() {
            return Ok(false);
        }
        let tmp = temp_file(dest.parent().expect("runs has a parent"), "record", bytes)?;
        let linked = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
}
