//! Outputs in the workspace: `out/<stage>/<output>` (and `out/<stage>/<k=v,...>/<output>` for sweep
//! instances), hard links to store objects so notebooks open them in place with no copy.
//!
//! A workspace copy is *current* when it is the store's object (same inode, unchanged mtime) or
//! has the recorded content; *missing* when absent; otherwise *modified*. A modified output is
//! reported and never overwritten. Replacing is atomic: link to a temporary sibling, then rename.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{remove_all, temp_sibling};
use crate::hash::StatMemo;
use crate::store::{link_or_copy, ArtifactKind, OutputEntry, Stamp, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Current,
    Missing,
    Modified,
    /// A hard link to the object was written in place (possible as root, or after a chmod): the
    /// object changed with it, so the cached output is no longer what the stage produced.
    ModifiedInPlace,
}

/// Compares the workspace copy at `path` with a committed output; `stamp` is what azimuth
/// recorded when it put the copy there (if it did).
pub fn state(
    path: &Path,
    entry: &OutputEntry,
    store: &Store,
    memo: &mut StatMemo,
    stamp: Option<Stamp>,
) -> io::Result<CopyState> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CopyState::Missing),
        Err(e) => return Err(e),
    };
    match entry.kind {
        ArtifactKind::File => {
            if !meta.is_file() {
                return Ok(CopyState::Modified);
            }
            if let (Some(st), Ok(om)) = (stamp, fs::metadata(store.object_path(&entry.digest))) {
                let here = Stamp::of(path);
                if om.ino() == meta.ino()
                    && om.dev() == meta.dev()
                    && st.ino == meta.ino()
                    && here.is_some_and(|h| h.mtime_ns != st.mtime_ns || h.size != st.size)
                {
                    // Touched, or written through the link? Only the content can tell (hashed
                    // once: the memo remembers the new identity).
                    return Ok(
                        if meta.len() == entry.size
                            && memo.file_digest(path, &meta)? == entry.digest
                        {
                            CopyState::Current
                        } else {
                            CopyState::ModifiedInPlace
                        },
                    );
                }
            }
            Ok(
                if same_file_or_content(
                    path,
                    &meta,
                    &store.object_path(&entry.digest),
                    entry,
                    memo,
                )? {
                    CopyState::Current
                } else {
                    CopyState::Modified
                },
            )
        }
        ArtifactKind::Dir => {
            if !meta.is_dir() {
                return Ok(CopyState::Modified);
            }
            let manifest = store.read_manifest(&entry.digest)?;
            let files = crate::hash::walk_tree(path, false).map_err(|_| io::Error::other("tree"));
            let Ok(files) = files else {
                return Ok(CopyState::Modified);
            };
            if files.len() != manifest.entries.len() {
                return Ok(CopyState::Modified);
            }
            for ((rel, m), e) in files.iter().zip(&manifest.entries) {
                if *rel != e.path {
                    return Ok(CopyState::Modified);
                }
                let sub = OutputEntry {
                    digest: e.digest,
                    size: e.size,
                    kind: ArtifactKind::File,
                };
                if !same_file_or_content(
                    &path.join(rel),
                    m,
                    &store.object_path(&e.digest),
                    &sub,
                    memo,
                )? {
                    return Ok(CopyState::Modified);
                }
            }
            Ok(CopyState::Current)
        }
    }
}

fn same_file_or_content(
    path: &Path,
    meta: &fs::Metadata,
    object: &Path,
    entry: &OutputEntry,
    memo: &mut StatMemo,
) -> io::Result<bool> {
    if let Ok(om) = fs::metadata(object) {
        // A hard link to the object: current unless written in place (which would also have
        // changed the object; `cache verify` reports that).
        if om.dev() == meta.dev() && om.ino() == meta.ino() {
            return Ok(true);
        }
    }
    if meta.len() != entry.size {
        return Ok(false);
    }
    Ok(memo.file_digest(path, meta)? == entry.digest)
}

/// Puts the output at `path` (replacing a current or missing copy; the caller has checked that
/// it is not modified). Parent directories are created.
pub fn materialize(path: &Path, entry: &OutputEntry, store: &Store) -> io::Result<()> {
    let parent = path.parent().expect("workspace paths have a parent");
    fs::create_dir_all(parent)?;
    let tmp = temp_sibling(path);
    let result = match entry.kind {
        ArtifactKind::File => store
            .ensure_object(&entry.digest)
            .and_then(|object| link_or_copy(&object, &tmp)),
        ArtifactKind::Dir => store.link_tree(&entry.digest, &tmp),
    };
    if let Err(e) = result {
        let _ = remove_all(&tmp);
        return Err(e);
    }
    match entry.kind {
        ArtifactKind::File => fs::rename(&tmp, path),
        ArtifactKind::Dir => {
            // rename() cannot replace a non-empty directory: move the old one aside first.
            let old = if path.exists() {
                let aside = temp_sibling(path);
                fs::rename(path, &aside)?;
                Some(aside)
            } else {
                None
            };
            fs::rename(&tmp, path)?;
            if let Some(a) = old {
                remove_all(&a)?;
            }
            Ok(())
        }
    }
}

/// The workspace path of an output, relative to the pipeline root.
pub fn output_path(out_dir: &Path, declared: &str) -> PathBuf {
    out_dir.join(declared)
}
