//! The content-addressed store: the only module that knows the layout of `cache/`.
//!
//! ```text
//! cache/                      (default ./cache; --cache-dir or AZIMUTH_CACHE_DIR moves it)
//!   .gitignore                "*" so the store never lands in git
//!   CACHEDIR.TAG              tells backup tools to skip it
//!   v1/                       format version (fingerprint::CACHE_FORMAT); a bump makes old data invisible
//!     objects/ab/cdef…        read-only blobs named by BLAKE3 of their content; a directory output is
//!                             stored as its files plus a tree manifest blob (hash::TreeManifest)
//!     runs/<key>.json         run record: key ingredients, output digests and sizes, log digest,
//!                             duration, time, host. Written last: the commit point of a stage
//!     stages/<instance>.json  pointer to the last record of an instance (the `why` baseline)
//!     trees/<hex>/            read-only checkouts of directory artifacts, for stage inputs
//!     tmp/<run>/              staging: stages write here; outputs are renamed into objects/
//!     failed/<instance>.log   log of the last failed attempt of an instance
//!     locks/store.lock        shared by `run`, exclusive for `gc`
//!     locks/keys/<key>.lock   single-flight: one process computes a key at a time
//!     statcache.json          digests by file identity (hash::StatMemo)
//! ```
//!
//! A remote cache (`crate::remote`) may stand behind the store: records missing here are looked
//! up there, and objects are fetched on first read (`ensure_object`).
//!
//! Invariants: an object's name is the digest of its bytes, and objects are never modified in
//! place (mode 0444). A record is written only after every object it names is in place, so a crash
//! at any instant leaves at worst orphan objects (collected by `gc`), never a record pointing at
//! missing or partial data. Staging directories are locked by their run; a staging directory whose
//! lock is free belongs to a dead run and is removed by the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fingerprint::{KeyRecord, CACHE_FORMAT};
use crate::fsutil::{remove_all, write_atomic};
use crate::hash::{hash_file, walk_tree, Digest, StatMemo, TreeEntry, TreeManifest};
use crate::lock::{FileLock, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    File,
    Dir,
}

/// One output of a run, as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEntry {
    pub digest: Digest,
    /// Bytes (for directories: the sum of their files).
    pub size: u64,
    pub kind: ArtifactKind,
}

/// What a successful run left behind; its presence means "this key is computed".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub key: Digest,
    pub instance: String,
    pub ingredients: KeyRecord,
    pub outputs: BTreeMap<String, OutputEntry>,
    /// Captured stdout+stderr of the stage.
    pub log: Option<Digest>,
    pub duration_ms: u64,
    /// Seconds since the Unix epoch when the run finished.
    pub finished_at: u64,
    pub host: String,
    pub azimuth_version: String,
}

/// The last run of an instance, and the identity of each workspace copy it materialized (so a
/// later run can tell its own files from files the user changed or put there).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pointer {
    pub key: Digest,
    #[serde(default)]
    pub materialized: BTreeMap<String, Stamp>,
}

/// What `stat` says about a file azimuth wrote into the workspace (ctime is left out: adding a
/// hard link to the same object elsewhere changes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = fs::symlink_metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

#[derive(Clone)]
pub struct Store {
    /// The directory users name (`cache/`).
    pub dir: PathBuf,
    /// `cache/v1`.
    v: PathBuf,
    /// A shared cache behind this one: records missing here are looked up there, and objects
    /// are fetched from it when read (see [`crate::remote`]).
    remote: Option<std::sync::Arc<dyn crate::remote::Remote>>,
    /// Leave outputs that only the remote has out of the workspace (`run --lazy`).
    lazy: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("remote", &self.remote.as_ref().map(|r| r.location()))
            .field("lazy", &self.lazy)
            .finish()
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-22T23:40:35Z` from Unix seconds (UTC; no time-zone database needed).
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A file name for an instance: `sim[sigma=1e-9]` stays readable, anything odd is %-escaped.
fn escape(instance: &str) -> String {
    let mut s = String::new();
    for b in instance.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.=,[]+".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl Store {
    /// The store at `dir` (not created until something is written).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            v: dir.join(format!("v{CACHE_FORMAT}")),
            remote: None,
            lazy: false,
        }
    }

    /// This store with `remote` behind it.
    pub fn with_remote(mut self, remote: std::sync::Arc<dyn crate::remote::Remote>) -> Store {
        self.remote = Some(remote);
        self
    }

    /// Whether outputs only the remote has stay out of the workspace.
    pub fn set_lazy(&mut self, lazy: bool) {
        self.lazy = lazy;
    }

    pub fn lazy(&self) -> bool {
        self.lazy
    }

    pub fn remote(&self) -> Option<&dyn crate::remote::Remote> {
        self.remote.as_deref()
    }

    /// Whether the object is here or in the remote (without fetching it).
    pub fn object_available(&self, d: &Digest) -> bool {
        self.has_object(d)
            || self
                .remote
                .as_ref()
                .is_some_and(|r| matches!(r.object_size(d), Ok(Some(_))))
    }

    /// The local path of an object, fetching it from the remote first if only the remote has
    /// it (chunked, verified, then renamed into place).
    pub fn ensure_object(&self, d: &Digest) -> io::Result<PathBuf> {
        let path = self.object_path(d);
        if path.is_file() {
            return Ok(path);
        }
        let Some(remote) = &self.remote else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("object {d} is not in the cache"),
            ));
        };
        fs::create_dir_all(self.v.join("tmp"))?;
        let tmp = crate::fsutil::temp_sibling(&self.v.join("tmp").join(format!("fetch-{}", d.hex())));
        let fetched = crate::remote::download(remote.as_ref(), d, &tmp);
        match fetched {
            Ok(size) => {
                tracing::info!(object = %d, size, remote = %remote.location(), "fetched");
                self.adopt_file(&tmp, d)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Whether an output's objects are all local (an output only the remote has is `false`).
    pub fn output_local(&self, e: &OutputEntry) -> bool {
        match e.kind {
            ArtifactKind::File => self.has_object(&e.digest),
            ArtifactKind::Dir => {
                self.has_object(&e.digest)
                    && self
                        .read_manifest(&e.digest)
                        .is_ok_and(|m| m.entries.iter().all(|x| self.has_object(&x.digest)))
            }
        }
    }

    /// Creates the layout if needed.
    pub fn init(&self) -> io::Result<()> {
        for sub in [
            "objects",
            "runs",
            "stages",
            "tmp",
            "locks/keys",
            "trees",
            "failed",
        ] {
            fs::create_dir_all(self.v.join(sub))?;
        }
        let gi = self.dir.join(".gitignore");
        if !gi.exists() {
            write_atomic(&gi, b"*\n!.gitignore\n")?;
        }
        let tag = self.dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomic(&tag, b"Signature: 8a477f597d28d172789f06886806bc55\n# This is Azimuth's cache; see README.md.\n")?;
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.v.is_dir()
    }

    pub fn object_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.v.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    pub fn has_object(&self, d: &Digest) -> bool {
        self.object_path(d).is_file()
    }

    pub fn statcache_path(&self) -> PathBuf {
        self.v.join("statcache.json")
    }

    pub fn failed_log_path(&self, instance: &str) -> PathBuf {
        self.v
            .join("failed")
            .join(format!("{}.log", escape(instance)))
    }

    /// Moves a staged file into the store under `digest` (a rename: no bytes are copied). If the
    /// object already exists the staged copy is dropped. Returns the object's path.
    pub fn adopt_file(&self, staged: &Path, digest: &Digest) -> io::Result<PathBuf> {
        let dest = self.adopt_staged(staged, digest)?;
        if staged.exists() {
            fs::remove_file(staged)?;
        }
        Ok(dest)
    }

    /// [`Store::adopt_file`] for a file inside a stage's staging directory: a duplicate of an
    /// existing object is left where it is, to go with the staging directory (removed off the
    /// scheduler's thread; deleting a large file takes a while).
    fn adopt_staged(&self, staged: &Path, digest: &Digest) -> io::Result<PathBuf> {
        let dest = self.object_path(digest);
        if dest.is_file() {
            return Ok(dest);
        }
        fs::create_dir_all(dest.parent().expect("objects have a parent"))?;
        fs::set_permissions(staged, fs::Permissions::from_mode(0o444))?;
        fs::rename(staged, &dest)?;
        Ok(dest)
    }

    /// Stores bytes (logs, manifests) as an object.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        let d = Digest::of_bytes(bytes);
        let dest = self.object_path(&d);
        if !dest.is_file() {
            let tmp = self
                .v
                .join("tmp")
                .join(format!(".put-{}-{}", std::process::id(), d.short()));
            fs::create_dir_all(tmp.parent().expect("tmp has a parent"))?;
            fs::write(&tmp, bytes)?;
            self.adopt_file(&tmp, &d)?;
        }
        Ok(d)
    }

    /// Hashes a staged output (file or directory) and moves it into the store. `staged` must lie
    /// in a staging directory (see [`Store::adopt_staged`]).
    pub fn commit_output(&self, staged: &Path, memo: &mut StatMemo) -> io::Result<OutputEntry> {
        let meta = fs::symlink_metadata(staged)?;
        if meta.is_file() {
            let (digest, size) = hash_file(staged)?;
            let obj = self.adopt_staged(staged, &digest)?;
            memo.remember(&fs::metadata(&obj)?, digest);
            Ok(OutputEntry {
                digest,
                size,
                kind: ArtifactKind::File,
            })
        } else if meta.is_dir() {
            let files = walk_tree(staged, false)?;
            let hashed: Vec<io::Result<TreeEntry>> = files
                .par_iter()
                .map(|(rel, m)| {
                    let (digest, size) = hash_file(&staged.join(rel))?;
                    Ok(TreeEntry {
                        path: rel.clone(),
                        digest,
                        size,
                        exec: m.mode() & 0o111 != 0,
                    })
                })
                .collect();
            let entries = hashed.into_iter().collect::<io::Result<Vec<_>>>()?;
            for e in &entries {
                self.adopt_staged(&staged.join(&e.path), &e.digest)?;
            }
            let manifest = TreeManifest { format: 1, entries };
            let digest = self.put_bytes(&manifest.to_bytes())?;
            Ok(OutputEntry {
                digest,
                size: manifest.total_size(),
                kind: ArtifactKind::Dir,
            })
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is neither a file nor a directory", staged.display()),
            ))
        }
    }

    pub fn read_manifest(&self, d: &Digest) -> io::Result<TreeManifest> {
        let bytes = fs::read(self.ensure_object(d)?)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tree manifest {d}: {e}"),
            )
        })
    }

    /// Every object an output needs (the manifest and its files for directories).
    pub fn output_objects(&self, e: &OutputEntry) -> io::Result<Vec<Digest>> {
        match e.kind {
            ArtifactKind::File => Ok(vec![e.digest]),
            ArtifactKind::Dir => {
                let m = self.read_manifest(&e.digest)?;
                Ok(std::iter::once(e.digest)
                    .chain(m.entries.iter().map(|x| x.digest))
                    .collect())
            }
        }
    }

    /// Whether every object of a record is here or in the remote (a directory's manifest is
    /// fetched to know its files).
    pub fn record_complete(&self, r: &RunRecord) -> Result<(), String> {
        for (name, e) in &r.outputs {
            let objs = self.output_objects(e).map_err(|_| name.clone())?;
            if objs.iter().any(|d| !self.object_available(d)) {
                return Err(name.clone());
            }
        }
        Ok(())
    }

    /// A path at which a stage can read an artifact: the object itself for files, a read-only
    /// checkout under `trees/` (made once, atomically) for directories.
    pub fn artifact_path(&self, e: &OutputEntry) -> io::Result<PathBuf> {
        match e.kind {
            ArtifactKind::File => self.ensure_object(&e.digest),
            ArtifactKind::Dir => {
                let dest = self.v.join("trees").join(e.digest.hex());
                if dest.is_dir() {
                    return Ok(dest);
                }
                let tmp = self.v.join("tmp").join(format!(
                    ".tree-{}-{}",
                    std::process::id(),
                    e.digest.short()
                ));
                let _ = remove_all(&tmp);
                self.link_tree(&e.digest, &tmp)?;
                fs::create_dir_all(dest.parent().expect("trees has a parent"))?;
                match fs::rename(&tmp, &dest) {
                    Ok(()) => Ok(dest),
                    Err(_) if dest.is_dir() => {
                        remove_all(&tmp)?;
                        Ok(dest)
                    }
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Builds a directory of hard links (copies across filesystems) to a tree's objects.
    pub fn link_tree(&self, manifest: &Digest, dest: &Path) -> io::Result<()> {
        let m = self.read_manifest(manifest)?;
        fs::create_dir_all(dest)?;
        for e in &m.entries {
            let p = dest.join(&e.path);
            fs::create_dir_all(p.parent().expect("entries are inside the tree"))?;
            link_or_copy(&self.ensure_object(&e.digest)?, &p)?;
        }
        Ok(())
    }

    pub fn record_path(&self, key: &Digest) -> PathBuf {
        self.v.join("runs").join(format!("{}.json", key.hex()))
    }

    /// The record of `key`: from this store, else from the remote (copied here; its objects are
    /// fetched only when read).
    pub fn read_record(&self, key: &Digest) -> Option<RunRecord> {
        let parse = |bytes: &[u8]| {
            serde_json::from_slice::<RunRecord>(bytes)
                .ok()
                .filter(|r| r.format == CACHE_FORMAT && r.key == *key)
        };
        if let Ok(bytes) = fs::read(self.record_path(key)) {
            return parse(&bytes);
        }
        let remote = self.remote.as_ref()?;
        let bytes = match remote.get_record(key) {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!(remote = %remote.location(), %key, "cannot read a record: {e}");
                return None;
            }
        };
        let record = parse(&bytes)?;
        if self.exists() {
            // A cache of the remote's answer; losing it only costs another lookup.
            let _ = write_atomic(&self.record_path(key), &bytes);
        }
        Some(record)
    }


    /// The commit point of a stage: written only after all its objects are in place.
    pub fn write_record(&self, r: &RunRecord) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(r).expect("records serialize");
        bytes.push(b'\n');
        write_atomic(&self.record_path(&r.key), &bytes)
    }

    fn pointer_path(&self, instance: &str) -> PathBuf {
        self.v
            .join("stages")
            .join(format!("{}.json", escape(instance)))
    }

    pub fn read_pointer(&self, instance: &str) -> Option<Pointer> {
        serde_json::from_slice(&fs::read(self.pointer_path(instance)).ok()?).ok()
    }

    pub fn write_pointer(&self, instance: &str, pointer: &Pointer) -> io::Result<()> {
        let bytes = serde_json::to_vec(pointer).expect("pointers serialize");
        write_atomic(&self.pointer_path(instance), &bytes)
    }

    /// The last recorded run of an instance (through its pointer).
    pub fn last_record(&self, instance: &str) -> Option<RunRecord> {
        self.read_record(&self.read_pointer(instance)?.key)
    }

    pub fn all_records(&self) -> Vec<RunRecord> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.v.join("runs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(d) = name.strip_suffix(".json").and_then(Digest::parse) {
                    if let Some(r) = self.read_record(&d) {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (a.instance.as_str(), a.finished_at).cmp(&(b.instance.as_str(), b.finished_at))
        });
        out
    }

    pub fn all_pointers(&self) -> Vec<(String, Pointer)> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.v.join("stages")) {
            for e in rd.flatten() {
                if let Ok(p) =
                    serde_json::from_slice::<Pointer>(&fs::read(e.path()).unwrap_or_default())
                {
                    out.push((e.file_name().to_string_lossy().into_owned(), p));
                }
            }
        }
        out
    }

    /// Every object digest in the store.
    pub fn all_objects(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        if let Ok(fan) = fs::read_dir(self.v.join("objects")) {
            for f in fan.flatten() {
                let prefix = f.file_name().to_string_lossy().into_owned();
                if let Ok(rd) = fs::read_dir(f.path()) {
                    for e in rd.flatten() {
                        if let Some(d) =
                            Digest::parse(&format!("{prefix}{}", e.file_name().to_string_lossy()))
                        {
                            out.push(d);
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Resolves a digest prefix (with or without `b3:`) among objects, like git does.
    pub fn resolve_prefix(&self, prefix: &str) -> Result<Digest, String> {
        let p = prefix
            .strip_prefix("b3:")
            .unwrap_or(prefix)
            .to_ascii_lowercase();
        if p.len() < 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{prefix}` is not a digest prefix (at least 4 hex digits, optionally after `b3:`)"
            ));
        }
        let dir = self.v.join("objects").join(&p[..2]);
        let mut hits = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let full = format!("{}{}", &p[..2], e.file_name().to_string_lossy());
                if full.starts_with(&p) {
                    if let Some(d) = Digest::parse(&full) {
                        hits.push(d);
                    }
                }
            }
        }
        match hits.len() {
            0 => Err(format!(
                "no object in `{}` starts with `{prefix}`",
                self.dir.display()
            )),
            1 => Ok(hits[0]),
            n => {
                hits.sort();
                let list: Vec<String> = hits
                    .iter()
                    .take(5)
                    .map(|d| format!("b3:{}", &d.hex()[..16]))
                    .collect();
                Err(format!(
                    "`{prefix}` is ambiguous: {n} objects match ({}); give more digits",
                    list.join(", ")
                ))
            }
        }
    }

    /// A fresh staging directory for one stage attempt, locked for as long as the handle lives.
    pub fn staging(&self, instance: &str) -> io::Result<Staging> {
        let base = self.v.join("tmp");
        fs::create_dir_all(&base)?;
        for attempt in 0u32.. {
            let dir = base.join(format!(
                "{}-{}-{}",
                escape(instance),
                std::process::id(),
                attempt
            ));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    let lock = FileLock::try_acquire(&dir.join(".lock"), Mode::Exclusive)?
                        .expect("a directory we just created is not locked by anyone");
                    fs::create_dir(dir.join("work"))?;
                    return Ok(Staging { dir, _lock: lock });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("attempts are unbounded")
    }

    /// Removes staging directories left by dead runs (their lock is free). Returns how many.
    /// A staging directory of `instance` left by a dead run that `keep` accepts (a Slurm job
    /// computing the same key), locked for this run.
    pub fn adopt_staging(&self, instance: &str, keep: impl Fn(&Path) -> bool) -> Option<Staging> {
        let prefix = format!("{}-", escape(instance));
        let rd = fs::read_dir(self.v.join("tmp")).ok()?;
        for e in rd.flatten() {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            // `<instance>-<pid>-<attempt>`: the rest is two numbers (another instance's name
            // may share the prefix).
            if rest.split('-').count() != 2 || !rest.split('-').all(|p| p.parse::<u64>().is_ok())
            {
                continue;
            }
            if !dir.is_dir() || !keep(&dir) {
                continue;
            }
            if let Ok(Some(lock)) = FileLock::try_acquire(&dir.join(".lock"), Mode::Exclusive) {
                return Some(Staging { dir, _lock: lock });
            }
        }
        None
    }

    pub fn clean_stale_staging(&self) -> usize {
        let mut n = 0;
        if let Ok(rd) = fs::read_dir(self.v.join("tmp")) {
            for e in rd.flatten() {
                let p = e.path();
                let stale = if p.is_dir() {
                    // A dead run's Slurm job may still be running, or done and waiting to be
                    // committed: a later run adopts it (`adopt_staging`). Kept for a week.
                    let slurm_job_kept = fs::metadata(p.join("slurm.json"))
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| {
                            t.elapsed().unwrap_or_default() < Duration::from_secs(7 * 86400)
                        });
                    !slurm_job_kept
                        && matches!(
                            FileLock::try_acquire(&p.join(".lock"), Mode::Exclusive),
                            Ok(Some(_))
                        )
                } else {
                    // Loose temp files (`.put-*`, `.tree-*`) of dead processes.
                    e.metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .is_some_and(|t| {
                            t.elapsed().unwrap_or_default() > Duration::from_secs(3600)
                        })
                };
                if stale && remove_all(&p).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    pub fn store_lock_path(&self) -> PathBuf {
        self.v.join("locks").join("store.lock")
    }

    pub fn key_lock_path(&self, key: &Digest) -> PathBuf {
        self.v
            .join("locks")
            .join("keys")
            .join(format!("{}.lock", key.hex()))
    }

    /// Re-hashes every object and checks every record; returns one line per problem.
    pub fn verify(&self) -> (usize, Vec<String>) {
        let objects = self.all_objects();
        let mut problems: Vec<String> = objects
            .par_iter()
            .filter_map(|d| {
                let p = self.object_path(d);
                match hash_file(&p) {
                    Ok((got, _)) if got == *d => None,
                    Ok((got, _)) => Some(format!(
                        "corrupt object {d}: its content hashes to {got} ({})",
                        p.display()
                    )),
                    Err(e) => Some(format!("unreadable object {d}: {e}")),
                }
            })
            .collect();
        if let Ok(rd) = fs::read_dir(self.v.join("runs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(key) = name.strip_suffix(".json").and_then(Digest::parse) else {
                    problems.push(format!("stray file in runs/: {name}"));
                    continue;
                };
                let Some(r) = self.read_record(&key) else {
                    problems.push(format!("unreadable run record {}", e.path().display()));
                    continue;
                };
                if r.ingredients.key() != key {
                    problems.push(format!(
                        "run record {} of `{}`: its ingredients hash to another key",
                        key.short(),
                        r.instance
                    ));
                }
                for (out, entry) in &r.outputs {
                    match self.output_objects(entry) {
                        Ok(objs) => {
                            // A record pulled from a remote may leave its objects there (lazy).
                            for d in objs.iter().filter(|d| !self.object_available(d)) {
                                problems.push(format!("run record {} of `{}`: output `{out}` needs missing object {d}", key.short(), r.instance));
                            }
                        }
                        Err(err) => problems.push(format!(
                            "run record {} of `{}`: output `{out}`: {err}",
                            key.short(),
                            r.instance
                        )),
                    }
                }
                if let Some(l) = r.log {
                    if !self.object_available(&l) {
                        problems.push(format!(
                            "run record {} of `{}`: log object {l} is missing",
                            key.short(),
                            r.instance
                        ));
                    }
                }
            }
        }
        problems.sort();
        (objects.len(), problems)
    }

    /// Deletes records not in `keep_keys` (and older than `keep_days`), then every object and tree
    /// no kept record needs, and every staging leftover. Returns (records, objects, bytes) freed.
    pub fn gc(
        &self,
        keep_keys: &BTreeSet<Digest>,
        keep_days: Option<u64>,
        dry_run: bool,
    ) -> io::Result<GcReport> {
        let now = now_secs();
        let mut report = GcReport::default();
        let mut live: BTreeSet<Digest> = BTreeSet::new();
        for r in self.all_records() {
            let young = keep_days.is_some_and(|d| now.saturating_sub(r.finished_at) < d * 86_400);
            if keep_keys.contains(&r.key) || young {
                for e in r.outputs.values() {
                    live.extend(self.output_objects(e).unwrap_or_else(|_| vec![e.digest]));
                }
                live.extend(r.log);
            } else {
                report.records += 1;
                if !dry_run {
                    fs::remove_file(self.record_path(&r.key))?;
                }
            }
        }
        for d in self.all_objects() {
            if !live.contains(&d) {
                let p = self.object_path(&d);
                report.objects += 1;
                report.bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    fs::remove_file(&p)?;
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.v.join("trees")) {
            for e in rd.flatten() {
                let keep = Digest::parse(&e.file_name().to_string_lossy())
                    .is_some_and(|d| live.contains(&d));
                if !keep {
                    report.trees += 1;
                    if !dry_run {
                        remove_all(&e.path())?;
                    }
                }
            }
        }
        if !dry_run {
            report.staging = self.clean_stale_staging();
            // Pointers to records that no longer exist explain nothing.
            for (file, p) in self.all_pointers() {
                if !self.record_path(&p.key).exists() {
                    let _ = fs::remove_file(self.v.join("stages").join(file));
                }
            }
        }
        // Older format versions of the store are invisible to this build.
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('v')
                    && name[1..].parse::<u32>().is_ok_and(|n| n != CACHE_FORMAT)
                    && e.path().is_dir()
                {
                    report.old_formats.push(name);
                    if !dry_run {
                        remove_all(&e.path())?;
                    }
                }
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub records: usize,
    pub objects: usize,
    pub bytes: u64,
    pub trees: usize,
    pub staging: usize,
    pub old_formats: Vec<String>,
}

/// A staging directory; `work/` inside it is the stage's working directory.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    _lock: FileLock,
}

impl Staging {
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_all(&self.dir);
    }
}

/// Hard-links `src` at `dest` (replacing nothing: `dest` must not exist); copies if the two are on
/// different filesystems or links are not allowed.
pub fn link_or_copy(src: &Path, dest: &Path) -> io::Result<()> {
    match fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
            ) =>
        {
            fs::copy(src, dest)?;
            fs::set_permissions(dest, fs::Permissions::from_mode(0o444))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_391_235), "2026-11-22T23:47:15Z");
    }

    #[test]
    fn a_duplicate_output_is_left_to_its_staging_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        store.init().unwrap();
        let first = store.staging("a").unwrap();
        let f = first.work().join("out.bin");
        fs::write(&f, b"same").unwrap();
        let e = store.commit_output(&f, &mut StatMemo::default()).unwrap();
        let second = store.staging("a").unwrap();
        let g = second.work().join("out.bin");
        fs::write(&g, b"same").unwrap();
        assert_eq!(
            store.commit_output(&g, &mut StatMemo::default()).unwrap(),
            e
        );
        assert!(g.exists(), "the duplicate goes with the staging directory");
        let staging_dir = second.dir.clone();
        drop(second);
        assert!(!staging_dir.exists());
        assert_eq!(fs::read(store.object_path(&e.digest)).unwrap(), b"same");
    }

    #[test]
    fn committing_a_file_renames_it_into_a_read_only_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        store.init().unwrap();
        let st = store.staging("a").unwrap();
        let f = st.work().join("out.bin");
        fs::write(&f, b"payload").unwrap();
        let mut memo = StatMemo::default();
        let e = store.commit_output(&f, &mut memo).unwrap();
        assert_eq!(e.digest, Digest::of_bytes(b"payload"));
        assert!(!f.exists(), "staged file is moved, not copied");
        let obj = store.object_path(&e.digest);
        assert_eq!(fs::read(&obj).unwrap(), b"payload");
        assert_eq!(
            fs::metadata(&obj).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[test]
    fn directories_commit_as_manifests_and_check_out_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        store.init().unwrap();
        let st = store.staging("a").unwrap();
        let d = st.work().join("plots");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("a.txt"), b"A").unwrap();
        fs::write(d.join("sub/b.txt"), b"B").unwrap();
        let e = store.commit_output(&d, &mut StatMemo::default()).unwrap();
        assert_eq!((e.kind, e.size), (ArtifactKind::Dir, 2));
        let out = store.artifact_path(&e).unwrap();
        assert_eq!(fs::read(out.join("sub/b.txt")).unwrap(), b"B");
        assert_eq!(store.output_objects(&e).unwrap().len(), 3);
    }

    #[test]
    fn prefixes_resolve_uniquely_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        store.init().unwrap();
        let d = store.put_bytes(b"one").unwrap();
        assert_eq!(store.resolve_prefix(&d.hex()[..8]).unwrap(), d);
        assert_eq!(
            store
                .resolve_prefix(&format!("b3:{}", &d.hex()[..8]))
                .unwrap(),
            d
        );
        assert!(store
            .resolve_prefix("zz")
            .unwrap_err()
            .contains("not a digest prefix"));
        let other = if d.hex().starts_with('0') {
            "1111"
        } else {
            "0000"
        };
        assert!(store
            .resolve_prefix(other)
            .unwrap_err()
            .contains("no object"));
    }

    #[test]
    fn stale_staging_of_dead_runs_is_removed_but_live_staging_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        store.init().unwrap();
        let live = store.staging("live").unwrap();
        let dead = store.v.join("tmp/dead-1-0");
        fs::create_dir_all(dead.join("work")).unwrap();
        fs::write(dead.join(".lock"), b"").unwrap();
        assert_eq!(store.clean_stale_staging(), 1);
        assert!(live.dir.exists() && !dead.exists());
    }
}
