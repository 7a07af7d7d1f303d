//! Helpers the stage tests share: a `StageContext` from (port, file) pairs, a one-tensor W file,
//! and the real checkpoints that `scripts/fetch-models.sh` brings (skipped with a note when absent,
//! a failure when `AZIMUTH_REQUIRE_MODELS` is set, as in scripts/test.sh and CI).

use std::path::{Path, PathBuf};

use azimuth_stages::StageContext;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

/// A context for stage instance `instance`: one file per input port, one path per output.
pub fn ctx(
    instance: &str,
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, PathBuf)],
    threads: usize,
) -> StageContext {
    StageContext {
        instance: instance.into(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_path_buf()]))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    }
}

/// Writes a safetensors file holding one tensor `W`.
pub fn write_w(path: &Path, dtype: Dtype, shape: [usize; 2], data: &[u8]) {
    let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
    safetensors::tensor::serialize_to_file([("W", view)], None, path).unwrap();
}

/// Where `scripts/fetch-models.sh` puts the real checkpoints.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/models")
}

/// Whether a fetched file is there; skipped with a note if not, except where
/// `AZIMUTH_REQUIRE_MODELS` is set (scripts/test.sh, hence CI): there it fails.
pub fn fetched(path: &Path) -> bool {
    if path.is_file() {
        return true;
    }
    assert!(
        std::env::var_os("AZIMUTH_REQUIRE_MODELS").is_none(),
        "{} is absent but AZIMUTH_REQUIRE_MODELS is set; run scripts/fetch-models.sh",
        path.display()
    );
    eprintln!(
        "skipped: {} is absent; run scripts/fetch-models.sh",
        path.display()
    );
    false
}
