//! Content digests: BLAKE3 over files, byte strings and directory trees, plus the memo that makes
//! a no-op run cost stat calls instead of bytes.
//!
//! - [`Digest`] prints as `b3:<64 hex>` wherever users see it, so the algorithm can change later.
//! - [`hash_file`] streams in constant memory: large files are memory-mapped 16 MiB at a time and
//!   hashed with BLAKE3's multi-threaded tree mode (`update_rayon`), small ones read through a
//!   buffer; resident memory stays bounded whatever the file size.
//! - A directory's digest is the digest of its [`TreeManifest`]: the sorted list of relative paths,
//!   digests, sizes and executable bits, so it never depends on listing order or absolute paths.
//! - [`StatMemo`] remembers digests by file identity (device, inode, size, mtime_ns, ctime_ns):
//!   an unchanged file is never read twice, and `touch` costs exactly one re-hash.
//!
//! Never hashed: absolute paths, mtimes, owners.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Files at least this large are memory-mapped and hashed on several threads.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// Large files are mapped one window at a time, so the file-backed pages a hash touches never add
/// more than this to the process's resident memory, whatever the file's size.
const MMAP_WINDOW: u64 = 16 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }

    /// Parses `b3:<hex>` or bare 64-digit hex.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("b3:").unwrap_or(s);
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| Digest(*h.as_bytes()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b3:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b3:{}", self.short())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a b3 digest: {s}")))
    }
}

/// Makes a progress callback (bytes done so far) for hashing one large file; see
/// [`StatMemo::progress`].
pub type ProgressFactory = Box<dyn Fn(&Path, u64) -> Box<dyn FnMut(u64)>>;

/// Files at least this large report hashing progress.
const PROGRESS_THRESHOLD: u64 = 256 << 20;

/// Hashes one file's content; returns the digest and the number of bytes hashed.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    hash_file_with(path, None)
}

/// [`hash_file`], reporting bytes done after each window to `progress`.
pub fn hash_file_with(
    path: &Path,
    mut progress: Option<&mut dyn FnMut(u64)>,
) -> io::Result<(Digest, u64)> {
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        let mut offset = 0;
        while offset < len {
            let n = MMAP_WINDOW.min(len - offset);
            // SAFETY: a read-only private mapping; the store and workspace never write objects in
            // place, and a file truncated by someone else mid-hash fails the re-stat check in
            // `StatMemo::file_digest` (or `cache verify`), it cannot make the digest lie silently.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(offset)
                    .len(n as usize)
                    .map(&file)?
            };
            let _ = map.advise(memmap2::Advice::Sequential);
            hasher.update_rayon(&map);
            offset += n;
            if let Some(p) = progress.as_mut() {
                p(offset);
            }
        }
    } else {
        let mut buf = Vec::with_capacity(len as usize);
        (&file).take(MMAP_THRESHOLD).read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok((Digest(*hasher.finalize().as_bytes()), len))
}

/// The identity of a file's current content as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// One file of a directory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative, `/`-separated.
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    pub exec: bool,
}

/// A directory's content, canonically serialized; its digest is the directory's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeManifest {
    pub format: u32,
    pub entries: Vec<TreeEntry>,
}

impl TreeManifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&self.to_bytes())
    }

    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Lists a directory tree's regular files (sorted by relative path). Symlinks are refused when
/// `follow_links` is false (outputs must be self-contained), followed otherwise.
pub fn walk_tree(dir: &Path, follow_links: bool) -> io::Result<Vec<(String, fs::Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        for entry in fs::read_dir(&abs)? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|n| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {n:?} in `{}` is not UTF-8", abs.display()),
                )
            })?;
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let mut meta = fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                if !follow_links {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("`{}` is a symbolic link; outputs must contain only regular files and directories", path.display()),
                    ));
                }
                meta = fs::metadata(&path)?;
            }
            if meta.is_dir() {
                stack.push((path, child_rel));
            } else if meta.is_file() {
                out.push((child_rel, meta));
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("`{}` is not a regular file", path.display()),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct MemoEntry {
    id: FileId,
    digest: Digest,
}

/// Digests remembered by file identity, persisted between runs (`cache/v1/statcache.json`).
#[derive(Default)]
pub struct StatMemo {
    entries: HashMap<(u64, u64), MemoEntry>,
    changed: bool,
    /// Bytes actually read during this process (for `-v` and tests of the no-op path).
    pub bytes_hashed: u64,
    /// Called before hashing a file of 256 MiB or more (a progress bar on a terminal).
    pub progress: Option<ProgressFactory>,
}

impl std::fmt::Debug for StatMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatMemo")
            .field("entries", &self.entries.len())
            .field("bytes_hashed", &self.bytes_hashed)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct MemoFile {
    format: u32,
    entries: Vec<MemoEntry>,
}

impl StatMemo {
    /// Loads the memo; a missing or unreadable file is an empty memo (it is only a cache).
    pub fn load(path: &Path) -> StatMemo {
        let entries = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<MemoFile>(&b).ok())
            .filter(|m| m.format == 1)
            .map(|m| {
                m.entries
                    .into_iter()
                    .map(|e| ((e.id.dev, e.id.ino), e))
                    .collect()
            })
            .unwrap_or_default();
        StatMemo {
            entries,
            changed: false,
            bytes_hashed: 0,
            progress: None,
        }
    }

    /// Writes the memo atomically if it changed.
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut entries: Vec<MemoEntry> = self.entries.values().copied().collect();
        entries.sort_by_key(|e| (e.id.dev, e.id.ino));
        let bytes = serde_json::to_vec(&MemoFile { format: 1, entries }).expect("memo serializes");
        crate::fsutil::write_atomic(path, &bytes)?;
        self.changed = false;
        Ok(())
    }

    /// The digest of a file, hashing it only if its identity changed since it was last hashed.
    pub fn file_digest(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<Digest> {
        let id = FileId::of(meta);
        if let Some(e) = self.entries.get(&(id.dev, id.ino)) {
            if e.id == id {
                return Ok(e.digest);
            }
        }
        let (digest, size) = match &self.progress {
            Some(factory) if id.size >= PROGRESS_THRESHOLD => {
                let mut cb = factory(path, id.size);
                hash_file_with(path, Some(&mut *cb))?
            }
            _ => hash_file(path)?,
        };
        self.bytes_hashed += size;
        // Re-stat: a file that changed while we read it must not be remembered under the old id.
        let after = FileId::of(&fs::metadata(path)?);
        if after == id {
            self.entries
                .insert((id.dev, id.ino), MemoEntry { id, digest });
            self.changed = true;
        }
        Ok(digest)
    }

    /// Records a digest computed elsewhere (e.g. while committing an output).
    pub fn remember(&mut self, meta: &fs::Metadata, digest: Digest) {
        let id = FileId::of(meta);
        self.entries
            .insert((id.dev, id.ino), MemoEntry { id, digest });
        self.changed = true;
    }

    /// The digest of a directory tree (files hashed through the memo).
    pub fn tree(&mut self, dir: &Path, follow_links: bool) -> io::Result<TreeManifest> {
        let mut entries = Vec::new();
        for (rel, meta) in walk_tree(dir, follow_links)? {
            let digest = self.file_digest(&dir.join(&rel), &meta)?;
            entries.push(TreeEntry {
                path: rel,
                digest,
                size: meta.len(),
                exec: meta.mode() & 0o111 != 0,
            });
        }
        Ok(TreeManifest { format: 1, entries })
    }

    /// The digest of a file or directory.
    pub fn path_digest(&mut self, path: &Path) -> io::Result<Digest> {
        let meta = fs::metadata(path)?;
        if meta.is_dir() {
            Ok(self.tree(path, true)?.digest())
        } else {
            self.file_digest(path, &meta)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_digest_matches_blake3_for_small_and_mmapped_files() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 5, (1 << 20) + 17] {
            let p = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            fs::write(&p, &data).unwrap();
            assert_eq!(
                hash_file(&p).unwrap(),
                (Digest::of_bytes(&data), len as u64)
            );
        }
    }

    #[test]
    fn memo_rehashes_only_when_identity_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs::write(&p, b"hello").unwrap();
        let mut memo = StatMemo::default();
        let d1 = memo.path_digest(&p).unwrap();
        assert_eq!(memo.bytes_hashed, 5);
        assert_eq!(memo.path_digest(&p).unwrap(), d1);
        assert_eq!(
            memo.bytes_hashed, 5,
            "unchanged file must not be read again"
        );
        // A touch changes the identity: one re-hash, same digest.
        let t = fs::FileTimes::new()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5));
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(t)
            .unwrap();
        assert_eq!(memo.path_digest(&p).unwrap(), d1);
        assert_eq!(memo.bytes_hashed, 10);
        // Persisted and reloaded.
        let mp = dir.path().join("memo.json");
        memo.save(&mp).unwrap();
        let mut again = StatMemo::load(&mp);
        assert_eq!(again.path_digest(&p).unwrap(), d1);
        assert_eq!(again.bytes_hashed, 0);
    }

    #[test]
    fn tree_digest_ignores_location_and_listing_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (root, order) in [(a.path(), ["z", "a/b", "m"]), (b.path(), ["m", "z", "a/b"])] {
            for name in order {
                let p = root.join("t").join(name);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, name.as_bytes()).unwrap();
            }
        }
        let mut memo = StatMemo::default();
        let da = memo.path_digest(&a.path().join("t")).unwrap();
        let db = memo.path_digest(&b.path().join("t")).unwrap();
        assert_eq!(da, db);
        fs::write(b.path().join("t/m"), b"changed").unwrap();
        assert_ne!(memo.path_digest(&b.path().join("t")).unwrap(), da);
    }

    #[test]
    fn digests_print_and_parse_with_prefix() {
        let d = Digest::of_bytes(b"x");
        let s = d.to_string();
        assert!(s.starts_with("b3:") && s.len() == 67);
        assert_eq!(Digest::parse(&s), Some(d));
        assert_eq!(Digest::parse(&d.hex()), Some(d));
        assert_eq!(Digest::parse("b3:zz"), None);
    }
}
