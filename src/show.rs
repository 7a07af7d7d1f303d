//! `azimuth show`: what an artifact is and where it came from, without reading its data.
//!
//! Provenance comes from the run record that produced it (stage, params, input digests, time,
//! duration, host); the content view from header-only readers: safetensors and GGUF headers
//! (`inspect`), HDF5 trees (the stages crate, which links HDF5), directory manifests, and the
//! first lines of small text files.

use std::fmt::Write as _;
use std::io::Read;
use std::time::Duration;

use crate::cli::resolve_artifact;
use crate::fingerprint::StageIdentity;
use crate::inspect::{self, FileFormat};
use crate::output::{human_bytes, human_duration, Printer, WireContent, WireShow, JSON_VERSION};
use crate::spec::{format_value, Pipeline};
use crate::store::{format_time, ArtifactKind, RunRecord, Store};

pub fn render_record(r: &RunRecord) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "stage     {}", r.instance);
    let _ = writeln!(s, "key       {}", r.key);
    let _ = writeln!(
        s,
        "finished  {} on {} after {}",
        format_time(r.finished_at),
        r.host,
        human_duration(Duration::from_millis(r.duration_ms))
    );
    match &r.ingredients.stage {
        StageIdentity::Builtin { name, version } => {
            let _ = writeln!(s, "runs      built-in {name} v{version}");
        }
        StageIdentity::Cmd { argv } => {
            let _ = writeln!(s, "runs      {}", argv.join(" "));
        }
    }
    if !r.ingredients.params.is_empty() {
        let _ = writeln!(s, "params");
        for (k, v) in &r.ingredients.params {
            let _ = writeln!(s, "  {k} = {}", format_value(v));
        }
    }
    if !r.ingredients.inputs.is_empty() {
        let _ = writeln!(s, "inputs");
        for (k, ds) in &r.ingredients.inputs {
            for d in ds {
                let _ = writeln!(s, "  {k} ← {d}");
            }
        }
    }
    for (k, v) in &r.ingredients.env {
        let _ = writeln!(s, "env       {k} = {}", v.as_deref().unwrap_or("(unset)"));
    }
    for (k, v) in &r.ingredients.toolchain {
        let _ = writeln!(s, "toolchain {k} = {v}");
    }
    let _ = writeln!(s, "outputs");
    for (k, e) in &r.outputs {
        let kind = if e.kind == ArtifactKind::Dir {
            " (directory)"
        } else {
            ""
        };
        let _ = writeln!(s, "  {k} → {} {}{kind}", e.digest, human_bytes(e.size));
    }
    if let Some(l) = r.log {
        let _ = writeln!(s, "log       {l}");
    }
    s
}

pub fn show(
    store: &Store,
    pipeline: Option<&Pipeline>,
    artifact: &str,
    printer: &Printer,
) -> Result<(), String> {
    let (entry, record) = resolve_artifact(store, pipeline, artifact)?;
    let path = store
        .artifact_path(&entry)
        .map_err(|e| format!("cannot open {}: {e}", entry.digest))?;
    let mut content = String::new();
    let json_content;
    if entry.kind == ArtifactKind::Dir {
        let m = store
            .read_manifest(&entry.digest)
            .map_err(|e| e.to_string())?;
        let _ = writeln!(content, "directory of {} file(s):", m.entries.len());
        for e in &m.entries {
            let _ = writeln!(
                content,
                "  {}  {}  {}",
                e.path,
                human_bytes(e.size),
                e.digest
            );
        }
        json_content = WireContent::Directory { manifest: m };
    } else {
        let format =
            inspect::sniff(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match format {
            FileFormat::Safetensors => {
                let info = inspect::read_safetensors(&path).map_err(|e| e.to_string())?;
                content = inspect::render_safetensors(&info);
                json_content = WireContent::Safetensors { header: info };
            }
            FileFormat::Gguf => {
                let info = inspect::read_gguf(&path).map_err(|e| e.to_string())?;
                content = inspect::render_gguf(&info);
                json_content = WireContent::Gguf { header: info };
            }
            FileFormat::Hdf5 => {
                #[cfg(feature = "builtin-stages")]
                {
                    let tree = azimuth_stage_api::inspect::hdf5_tree(&path)?;
                    content = azimuth_stage_api::inspect::render_hdf5_tree(&tree);
                    json_content = WireContent::Hdf5 {
                        tree: serde_json::to_value(&tree).expect("HDF5 trees serialize"),
                    };
                }
                #[cfg(not(feature = "builtin-stages"))]
                {
                    content = "HDF5 file (this azimuth was built without HDF5 support: feature `builtin-stages`)\n".into();
                    json_content = WireContent::Binary;
                }
            }
            FileFormat::Png => {
                let info = inspect::read_png(&path).map_err(|e| e.to_string())?;
                let _ = writeln!(
                    content,
                    "PNG image, {} x {} px, {}-bit {}",
                    info.width, info.height, info.bit_depth, info.color
                );
                json_content = WireContent::Png { image: info };
            }
            FileFormat::Json | FileFormat::Text => {
                let mut head = String::new();
                let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                let _ = f.by_ref().take(4096).read_to_string(&mut head);
                let lines: Vec<&str> = head.lines().take(20).collect();
                let _ = writeln!(
                    content,
                    "{} file; first {} line(s):",
                    if format == FileFormat::Json {
                        "JSON"
                    } else {
                        "text"
                    },
                    lines.len()
                );
                for l in lines {
                    let _ = writeln!(content, "  │ {l}");
                }
                json_content = if format == FileFormat::Json {
                    WireContent::Json
                } else {
                    WireContent::Text
                };
            }
            FileFormat::Binary => {
                let _ = writeln!(content, "binary file (no known header)");
                json_content = WireContent::Binary;
            }
        }
    }
    if printer.json {
        printer.json_doc(&WireShow {
            version: JSON_VERSION,
            digest: entry.digest.to_string(),
            size: entry.size,
            kind: entry.kind,
            path: path.display().to_string(),
            record: record.as_ref(),
            content: json_content,
        });
        return Ok(());
    }
    let mut s = String::new();
    let _ = writeln!(s, "artifact  {}  {}", entry.digest, human_bytes(entry.size));
    let _ = writeln!(s, "path      {}", path.display());
    match &record {
        Some(r) => s.push_str(&render_record(r)),
        None => s.push_str("provenance unknown (no run record names this object)\n"),
    }
    s.push('\n');
    s.push_str(&content);
    printer.out_raw(&s);
    Ok(())
}
