//! Remote caches: a store that several machines share, behind one small interface ([`Remote`]),
//! and the transfers between it and the local [`Store`](crate::store::Store).
//!
//! A remote holds what the local store holds, minus everything machine-specific: objects (named
//! by their BLAKE3 digest) and run records (named by key). The same rules apply: an object is
//! only ever visible complete and verified, and a record is written only after every object it
//! names is in the remote. So a push that dies at any instant leaves at worst unfinished upload
//! chunks (reused by the next push of the same object, from any machine) and never a record a
//! reader would trust without its data.
//!
//! - Objects move in chunks ([`chunk_bytes`], 8 MiB by default), several at once on a small
//!   dedicated thread pool. Uploads are resumable: each chunk is stored under its index and its
//!   own digest, so the next attempt skips the chunks already there. Downloads land in a
//!   temporary file, are verified against the object's digest, then renamed into the store.
//! - Reads are lazy: a key missing locally is looked up in the remote (only the record, a few
//!   KiB), and its objects are fetched when something reads them (a workspace copy, a stage's
//!   input, `cache path`), not before; `run --lazy` leaves outputs nobody reads in the remote.
//! - [`dir::DirRemote`] is a directory (a shared filesystem: NFS, Lustre, a mounted bucket). An
//!   S3-compatible backend maps onto the same methods: `object_size` = HEAD, `read_object_at` =
//!   ranged GET, chunks = multipart upload parts (resumed with ListParts; the offset is implied
//!   by the part number), `finish_upload` = CompleteMultipartUpload, `put_record` = PUT with
//!   If-None-Match.

pub mod dir;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::hash::Digest;

/// A shared store of objects and run records. Every method is safe to call from several
/// threads, processes and machines at once.
pub trait Remote: Send + Sync {
    /// Where it is, for messages (`/shared/azimuth-cache`).
    fn location(&self) -> String;
    /// The size of an object, or `None` when the remote does not have it.
    fn object_size(&self, d: &Digest) -> io::Result<Option<u64>>;
    /// Fills `buf` with the object's bytes from `offset`.
    fn read_object_at(&self, d: &Digest, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The chunks of an unfinished upload of `d` already stored: index → the chunk's digest.
    fn upload_chunks(&self, d: &Digest) -> io::Result<BTreeMap<u64, Digest>>;
    /// Stores chunk `index` (the bytes at `offset` of the object) of an upload of `d`
    /// (idempotent; recorded as done only once its bytes are written).
    fn put_chunk(
        &self,
        d: &Digest,
        index: u64,
        offset: u64,
        chunk: &Digest,
        bytes: &[u8],
    ) -> io::Result<()>;
    /// Joins the chunks (`chunks[i]` is chunk i's digest) into the object, checks that the
    /// result has digest `d` and `size` bytes, and makes it visible. If the object exists
    /// already, it only clears what this upload left.
    fn finish_upload(&self, d: &Digest, size: u64, chunks: &[Digest]) -> io::Result<()>;
    /// The record of `key` (its JSON bytes), if the remote has one.
    fn get_record(&self, key: &Digest) -> io::Result<Option<Vec<u8>>>;
    /// Stores the record of `key` unless one exists; `false` when one did (it is kept: the
    /// first result computed for a key is the one everybody gets).
    fn put_record(&self, key: &Digest, bytes: &[u8]) -> io::Result<bool>;
}

/// Opens the remote named by `spec`: a directory path (created if missing). Other schemes
/// (`s3://…`) are refused with a message until a backend exists.
pub fn open(spec: &str) -> Result<Arc<dyn Remote>, String> {
    if let Some((scheme, _)) = spec.split_once("://") {
        if scheme != "file" {
            return Err(format!(
                "remote `{spec}`: `{scheme}://` remotes are not supported yet; use a directory on \
                 a shared filesystem (e.g. --remote /shared/azimuth-cache)"
            ));
        }
    }
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    dir::DirRemote::open(Path::new(path))
        .map(|r| Arc::new(r) as Arc<dyn Remote>)
        .map_err(|e| format!("cannot open remote cache `{path}`: {e}"))
}

/// Bytes per transferred chunk: `AZIMUTH_CHUNK_BYTES` (at least 4 KiB), else 8 MiB.
pub fn chunk_bytes() -> u64 {
    std::env::var("AZIMUTH_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(8 << 20, |n| n.max(4096))
}

/// Chunks moved at once.
const PARALLEL_CHUNKS: usize = 8;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(PARALLEL_CHUNKS)
            .thread_name(|i| format!("azimuth-transfer-{i}"))
            .build()
            .expect("a thread pool")
    })
}

/// What an upload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// The remote had the object already.
    pub present: bool,
    /// Chunks sent now, and chunks an earlier, interrupted upload had left.
    pub sent: u64,
    pub reused: u64,
}

/// Uploads the local file `path` (whose digest is `d`) unless the remote has it: in chunks,
/// several at once, skipping the chunks an interrupted upload left.
pub fn upload(remote: &dyn Remote, d: &Digest, path: &Path) -> io::Result<Uploaded> {
    upload_chunked(remote, d, path, chunk_bytes())
}

/// [`upload`] with a given chunk size.
pub fn upload_chunked(
    remote: &dyn Remote,
    d: &Digest,
    path: &Path,
    chunk: u64,
) -> io::Result<Uploaded> {
    if remote.object_size(d)?.is_some() {
        return Ok(Uploaded {
            present: true,
            ..Uploaded::default()
        });
    }
    let file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    let count = size.div_ceil(chunk).max(1);
    let have = remote.upload_chunks(d)?;
    let results: Vec<io::Result<(Digest, bool)>> = pool().install(|| {
        (0..count)
            .into_par_iter()
            .map(|i| {
                let offset = i * chunk;
                let len = chunk.min(size - offset.min(size)) as usize;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)?;
                let cd = Digest::of_bytes(&buf);
                if have.get(&i) == Some(&cd) {
                    return Ok((cd, true));
                }
                remote.put_chunk(d, i, offset, &cd, &buf)?;
                Ok((cd, false))
            })
            .collect()
    });
    let mut chunks = Vec::with_capacity(count as usize);
    let mut out = Uploaded::default();
    for r in results {
        match r {
            Ok((cd, reused)) => {
                chunks.push(cd);
                if reused {
                    out.reused += 1;
                } else {
                    out.sent += 1;
                }
            }
            // Another machine finished the same object meanwhile (and removed the upload under
            // us): that is success, and finishing below clears what our chunks re-created.
            Err(_) if remote.object_size(d)?.is_some() => out.present = true,
            Err(e) => return Err(e),
        }
    }
    match remote.finish_upload(d, size, &chunks) {
        Ok(()) => Ok(out),
        // Another machine finished the same object first (and took the upload with it).
        Err(_) if remote.object_size(d)?.is_some() => {
            out.present = true;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// Downloads object `d` into `dest` (which must not exist yet; the caller renames it into
/// place): in chunks, several at once, then verifies the digest. Returns the size.
pub fn download(remote: &dyn Remote, d: &Digest, dest: &Path) -> io::Result<u64> {
    download_chunked(remote, d, dest, chunk_bytes())
}

/// [`download`] with a given chunk size.
pub fn download_chunked(
    remote: &dyn Remote,
    d: &Digest,
    dest: &Path,
    chunk: u64,
) -> io::Result<u64> {
    let size = remote.object_size(d)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("the remote `{}` has no object {d}", remote.location()),
        )
    })?;
    let file = fs::File::create(dest)?;
    file.set_len(size)?;
    let count = size.div_ceil(chunk);
    pool().install(|| {
        (0..count).into_par_iter().try_for_each(|i| {
            let offset = i * chunk;
            let len = chunk.min(size - offset) as usize;
            let mut buf = vec![0u8; len];
            remote.read_object_at(d, offset, &mut buf)?;
            file.write_all_at(&buf, offset)
        })
    })?;
    file.sync_all()?;
    drop(file);
    let (got, _) = crate::hash::hash_file(dest)?;
    if got != *d {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "object {d} from the remote `{}` has digest {got}: the remote copy is damaged; \
                 remove it there and push it again",
                remote.location()
            ),
        ));
    }
    Ok(size)
}

/// What pushing one record did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The remote had a record for the key already (nothing was sent).
    pub already: bool,
    /// Objects sent, objects the remote had, chunks sent and chunks reused from an earlier try.
    pub objects_sent: u64,
    pub objects_present: u64,
    pub chunks_sent: u64,
    pub chunks_reused: u64,
    pub bytes: u64,
}

/// Every object a record names: its outputs (directory manifests and their files) and its log.
pub fn record_objects(
    store: &crate::store::Store,
    r: &crate::store::RunRecord,
) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for e in r.outputs.values() {
        out.extend(store.output_objects(e)?);
    }
    out.extend(r.log);
    out.sort_unstable_by_key(|d| d.0);
    out.dedup();
    Ok(out)
}

/// Pushes a record and every object it names (objects first, the record last). A record the
/// remote already has is left alone.
pub fn push_record(
    store: &crate::store::Store,
    remote: &dyn Remote,
    r: &crate::store::RunRecord,
) -> io::Result<Pushed> {
    let mut p = Pushed::default();
    if remote.get_record(&r.key)?.is_some() {
        p.already = true;
        return Ok(p);
    }
    for d in record_objects(store, r)? {
        let path = store.ensure_object(&d)?;
        let u = upload(remote, &d, &path)?;
        if u.present {
            p.objects_present += 1;
        } else {
            p.objects_sent += 1;
            p.chunks_sent += u.sent;
            p.chunks_reused += u.reused;
            p.bytes += fs::metadata(&path)?.len();
        }
    }
    let bytes = fs::read(store.record_path(&r.key))?;
    if !remote.put_record(&r.key, &bytes)? {
        p.already = true;
    }
    Ok(p)
}

/// Fetches every object a record names that is not here yet; returns (objects, bytes) fetched.
pub fn pull_record(
    store: &crate::store::Store,
    r: &crate::store::RunRecord,
) -> io::Result<(u64, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for d in record_objects(store, r)? {
        if !store.has_object(&d) {
            let path = store.ensure_object(&d)?;
            n += 1;
            bytes += fs::metadata(path)?.len();
        }
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> (tempfile::TempDir, dir::DirRemote) {
        let t = tempfile::tempdir().unwrap();
        let r = dir::DirRemote::open(&t.path().join("remote")).unwrap();
        (t, r)
    }

    /// Sizes around chunk boundaries survive the round trip byte for byte.
    #[test]
    fn objects_round_trip_in_chunks_of_any_alignment() {
        let (t, r) = remote();
        for size in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 50_000] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let d = Digest::of_bytes(&bytes);
            let src = t.path().join(format!("src-{size}"));
            fs::write(&src, &bytes).unwrap();
            let up = upload_chunked(&r, &d, &src, 4096).unwrap();
            assert!(!up.present);
            assert_eq!(up.sent, (size as u64).div_ceil(4096).max(1));
            assert_eq!(r.object_size(&d).unwrap(), Some(size as u64));
            assert!(upload_chunked(&r, &d, &src, 4096).unwrap().present);
            let dest = t.path().join(format!("dest-{size}"));
            assert_eq!(download_chunked(&r, &d, &dest, 4096).unwrap(), size as u64);
            assert_eq!(fs::read(&dest).unwrap(), bytes);
        }
    }

    /// Chunks an interrupted upload left are reused; a chunk that does not match is re-sent.
    #[test]
    fn uploads_resume_from_the_chunks_already_there() {
        let (t, r) = remote();
        let bytes: Vec<u8> = (0..10 * 4096).map(|i| (i % 253) as u8).collect();
        let d = Digest::of_bytes(&bytes);
        let src = t.path().join("src");
        fs::write(&src, &bytes).unwrap();
        for i in [0u64, 3, 7] {
            let c = &bytes[i as usize * 4096..(i as usize + 1) * 4096];
            r.put_chunk(&d, i, i * 4096, &Digest::of_bytes(c), c).unwrap();
        }
        // A stray chunk under a wrong digest is not trusted.
        r.put_chunk(&d, 1, 4096, &Digest::of_bytes(b"junk"), b"junk").unwrap();
        assert_eq!(r.object_size(&d).unwrap(), None, "chunks alone are not an object");
        let up = upload_chunked(&r, &d, &src, 4096).unwrap();
        assert_eq!((up.reused, up.sent), (3, 7));
        let dest = t.path().join("dest");
        download_chunked(&r, &d, &dest, 4096).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(r.upload_chunks(&d).unwrap().is_empty(), "the chunks are cleaned up");
    }

    /// A damaged remote object is caught by the digest check, and chunks that do not join to
    /// the digest never become an object.
    #[test]
    fn damaged_data_is_refused() {
        let (t, r) = remote();
        let bytes = vec![5u8; 9000];
        let d = Digest::of_bytes(&bytes);
        let c0 = Digest::of_bytes(&bytes[..4096]);
        r.put_chunk(&d, 0, 0, &c0, &bytes[..4096]).unwrap();
        let wrong = vec![6u8; 4904];
        r.put_chunk(&d, 1, 4096, &Digest::of_bytes(&wrong), &wrong).unwrap();
        let err = r
            .finish_upload(&d, 9000, &[c0, Digest::of_bytes(&wrong)])
            .unwrap_err();
        assert!(err.to_string().contains("push again"), "{err}");
        assert_eq!(r.object_size(&d).unwrap(), None);

        let src = t.path().join("src");
        fs::write(&src, &bytes).unwrap();
        upload_chunked(&r, &d, &src, 4096).unwrap();
        let hex = d.hex();
        let obj = t.path().join("remote/v1/objects").join(&hex[..2]).join(&hex[2..]);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
        let mut damaged = bytes.clone();
        damaged[4500] ^= 1;
        fs::write(&obj, &damaged).unwrap();
        let err = download_chunked(&r, &d, &t.path().join("dest"), 4096).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    /// The first record stored for a key stays; later ones are refused, not merged.
    #[test]
    fn the_first_record_for_a_key_wins() {
        let (_t, r) = remote();
        let key = Digest::of_bytes(b"key");
        assert!(r.get_record(&key).unwrap().is_none());
        assert!(r.put_record(&key, b"first").unwrap());
        assert!(!r.put_record(&key, b"second").unwrap());
        assert_eq!(r.get_record(&key).unwrap().unwrap(), b"first");
    }

    /// A directory that holds other things is not taken for a remote.
    #[test]
    fn a_foreign_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("thesis.tex"), "x").unwrap();
        let err = open(&t.path().display().to_string()).err().unwrap();
        assert!(err.contains("not an Azimuth remote"), "{err}");
        let err = open("s3://bucket/cache").err().unwrap();
        assert!(err.contains("not supported yet"), "{err}");
    }
}
