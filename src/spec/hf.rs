//! Model ids that resolve inside the local Hugging Face hub cache, without any network access:
//! the `{hf: ORG/NAME, revision: REV}` external input of `pipeline.yaml`.
//!
//! The cache root is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
//! else `~/.cache/huggingface/hub` (the hub library's own order). A model `ORG/NAME` lives in
//! `models--ORG--NAME/`; a branch or tag name is turned into a commit by the file
//! `refs/<revision>`, and the files of that commit are `snapshots/<commit>/` (symlinks into
//! `blobs/`, followed when hashing). A 40-hex revision names a snapshot directly. The resolved
//! snapshot directory becomes an ordinary external input, tracked by content; this is the one
//! place where resolving a pipeline reads files other than the pipeline itself.

use std::path::{Path, PathBuf};

/// Checks the shape of a model id: `ORG/NAME`, each part non-empty and made of ASCII letters,
/// digits, `-`, `_` and `.`.
pub fn check_repo_id(repo: &str) -> Result<(), String> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((org, name)) if ok_part(org) && ok_part(name) => Ok(()),
        _ => Err(format!(
            "`{repo}` is not a Hugging Face model id; expected `ORG/NAME`, e.g. `Qwen/Qwen3-4B-Instruct-2507`"
        )),
    }
}

/// The hub cache root from the environment (see the module doc).
pub fn hub_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// Why a model did not resolve: the message, and a hint saying how to get it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotCached {
    pub message: String,
    pub hint: String,
}

/// The snapshot directory of `repo` at `revision` inside the hub cache `root`.
pub fn snapshot_dir(root: &Path, repo: &str, revision: &str) -> Result<PathBuf, NotCached> {
    let entry = root.join(format!("models--{}", repo.replace('/', "--")));
    let hint = format!(
        "download it once on a machine with access to the hub (`hf download {repo}`, or \
         `huggingface-cli download {repo}`), or point HF_HOME / HF_HUB_CACHE at a cache that has it; \
         Azimuth itself never downloads"
    );
    if !entry.is_dir() {
        return Err(NotCached {
            message: format!(
                "model `{repo}` is not in the local Hugging Face cache (no `{}`)",
                entry.display()
            ),
            hint,
        });
    }
    let commit = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        let refs = entry.join("refs").join(revision);
        match std::fs::read_to_string(&refs) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                return Err(NotCached {
                    message: format!(
                        "model `{repo}` is cached, but revision `{revision}` is not (`{}`: {e})",
                        refs.display()
                    ),
                    hint: format!(
                        "use a revision that is cached (see `{}`), or {hint}",
                        entry.join("refs").display()
                    ),
                })
            }
        }
    };
    let snap = entry.join("snapshots").join(&commit);
    if !snap.is_dir() {
        return Err(NotCached {
            message: format!(
                "model `{repo}` revision `{revision}` names commit {commit}, but `{}` does not exist \
                 (an interrupted download?)",
                snap.display()
            ),
            hint,
        });
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_checked() {
        assert!(check_repo_id("Qwen/Qwen3-4B-Instruct-2507").is_ok());
        assert!(check_repo_id("HuggingFaceTB/SmolLM2-135M").is_ok());
        for bad in ["Qwen", "/x", "a/", "a/b/c", "a/..", "a b/c"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshots_resolve_through_refs_or_commit_and_missing_ones_say_how_to_get_them() {
        let root = tempfile::tempdir().unwrap();
        let e = snapshot_dir(root.path(), "Org/M", "main").unwrap_err();
        assert!(
            e.message.contains("not in the local Hugging Face cache"),
            "{e:?}"
        );
        assert!(e.hint.contains("hf download Org/M"), "{e:?}");

        let entry = root.path().join("models--Org--M");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(entry.join("refs")).unwrap();
        std::fs::create_dir_all(entry.join("snapshots").join(commit)).unwrap();
        std::fs::write(entry.join("refs/main"), format!("{commit}\n")).unwrap();
        let snap = entry.join("snapshots").join(commit);
        assert_eq!(snapshot_dir(root.path(), "Org/M", "main").unwrap(), snap);
        assert_eq!(snapshot_dir(root.path(), "Org/M", commit).unwrap(), snap);
        let e = snapshot_dir(root.path(), "Org/M", "v2").unwrap_err();
        assert!(e.message.contains("revision `v2` is not"), "{e:?}");
        std::fs::write(
            entry.join("refs/v3"),
            "ffffffffffffffffffffffffffffffffffffffff",
        )
        .unwrap();
        let e = snapshot_dir(root.path(), "Org/M", "v3").unwrap_err();
        assert!(e.message.contains("interrupted download"), "{e:?}");
    }
}
