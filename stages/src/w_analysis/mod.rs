//! The `w_analysis` family: analyses of one matrix W [V, D] (a token's row per line) stored in a
//! safetensors file, without libtorch.
//!
//! - [`black_holes`] (`w.black_holes`, S04): groups of bit-identical bf16 rows, numbered by
//!   (population descending, smallest member ascending), with a per-token id map and the
//!   representative rows. Built on [`crate::bf16::identical_rows`].
//! - [`norms`] (`w.norms`, S03): per-row L2 norms, full-range and zoomed histograms, the spike.
//!
//! Metadata (`SPEC`s) lives in `azimuth-stage-api` (`specs/w_analysis.rs`). This module holds the
//! shared input handling ([`load_w`]) and output writing; each stage runs on `ctx.threads` rayon
//! threads, and its results never depend on the thread count.

pub(crate) mod black_holes;
pub(crate) mod norms;

use safetensors::tensor::{Dtype, TensorView};

use crate::io::MappedSafetensors;
use crate::params::Params;
use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.black_holes" => black_holes::run(ctx),
        "w.norms" => norms::run(ctx),
        _ => return None,
    })
}

/// Runs `f` on a rayon pool of `threads` threads (at least 1).
pub fn with_threads<T: Send>(
    p: &Params<'_>,
    threads: usize,
    f: impl FnOnce() -> T + Send,
) -> Result<T, StageError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| p.error(format!("cannot start {threads} worker threads: {e}")))?;
    Ok(pool.install(f))
}

/// The mapped input `w` of a stage; [`W::view`] gives the checked matrix.
pub struct W {
    pub path: std::path::PathBuf,
    pub mapped: MappedSafetensors,
}

/// A 2-D matrix inside the mapped file.
pub struct Matrix<'a> {
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
    /// Row-major little-endian element bytes.
    pub data: &'a [u8],
}

/// Maps the single safetensors file connected to input `port` (an error if none or several).
pub fn open_single(
    p: &Params<'_>,
    port: &str,
) -> Result<(std::path::PathBuf, MappedSafetensors), StageError> {
    let inputs = p.inputs(port)?;
    if inputs.len() != 1 {
        return Err(p.error(format!(
            "input `{port}` takes one file, got {}",
            inputs.len()
        )));
    }
    let path = inputs[0].clone();
    let mapped = MappedSafetensors::open(&path).map_err(|e| p.error(e))?;
    Ok((path, mapped))
}

/// The tensor names of a file, sorted and quoted, for "it has ..." in error messages (at most 20).
pub fn tensor_names(st: &safetensors::SafeTensors<'_>) -> String {
    let mut names = st.names();
    names.sort_unstable();
    if names.is_empty() {
        return "no tensors".into();
    }
    let mut shown: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
    if names.len() > 20 {
        shown.push(format!("... ({} in all)", names.len()));
    }
    shown.join(", ")
}

/// Maps the single artifact on input port `w`.
pub fn load_w(p: &Params<'_>) -> Result<W, StageError> {
    let (path, mapped) = open_single(p, "w")?;
    Ok(W { path, mapped })
}

impl W {
    /// The 2-D tensor `name`, whose dtype must be one of `dtypes`.
    pub fn matrix<'a>(
        &'a self,
        p: &Params<'_>,
        name: &str,
        dtypes: &[Dtype],
        why: &str,
    ) -> Result<Matrix<'a>, StageError> {
        let path = &self.path;
        let st = self.mapped.parse(path).map_err(|e| p.error(e))?;
        let view: TensorView<'a> = match st.tensor(name) {
            Ok(v) => v,
            Err(_) => {
                return Err(p.error(format!(
                    "`{}` has no tensor `{name}`; it has {}; set param `tensor` to the matrix's name",
                    path.display(),
                    tensor_names(&st)
                )));
            }
        };
        if !dtypes.contains(&view.dtype()) {
            let allowed: Vec<String> = dtypes.iter().map(|d| d.to_string()).collect();
            return Err(p.error(format!(
                "`{}`, tensor `{name}` has dtype {}, but this stage needs {} ({why})",
                path.display(),
                view.dtype(),
                allowed.join(" or ")
            )));
        }
        let shape = view.shape().to_vec();
        if shape.len() != 2 || shape[1] == 0 {
            return Err(p.error(format!(
                "`{}`, tensor `{name}` has shape {shape:?}; expected a matrix [V, D] with D ≥ 1",
                path.display()
            )));
        }
        let data = view.data();
        Ok(Matrix {
            dtype: view.dtype(),
            rows: shape[0],
            cols: shape[1],
            data,
        })
    }
}

impl Matrix<'_> {
    /// The lattice format of the elements; `None` unless BF16 or F32.
    pub fn format(&self) -> Option<crate::lattice::Format> {
        crate::lattice::Format::of(self.dtype)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The little-endian bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[i * n..(i + 1) * n]
    }
}

/// The dtypes the lattice analyses accept.
pub const LATTICE_DTYPES: &[Dtype] = &[Dtype::BF16, Dtype::F32];

/// The black holes of W as written by `w.black_holes`' `members` output: per-token ids
/// (0 = none, 1 = largest) and the member lists in numbering order (each ascending).
pub struct BlackHoles {
    /// `black_hole_id` per token.
    pub id: Vec<u32>,
    /// Members of black holes 1…K, ascending token ids.
    pub members: Vec<Vec<u32>>,
}

impl BlackHoles {
    /// Tokens inside black holes.
    pub fn tokens(&self) -> usize {
        self.members.iter().map(Vec::len).sum()
    }
}

/// Reads the single file on input `port` as a `w.black_holes` members file for a W of `rows` rows.
pub fn load_black_holes(p: &Params<'_>, port: &str, rows: usize) -> Result<BlackHoles, StageError> {
    let (path, mapped) = open_single(p, port)?;
    let path = &path;
    let st = mapped.parse(path).map_err(|e| p.error(e))?;
    let view = st.tensor("black_hole_id").map_err(|_| {
        p.error(format!(
            "`{}` (input `{port}`) has no tensor `black_hole_id`; connect the `members` output of a \
             `w.black_holes` stage",
            path.display()
        ))
    })?;
    if view.shape() != [rows] {
        return Err(p.error(format!(
            "`{}` (input `{port}`): `black_hole_id` has shape {:?}, but W has {rows} rows; were the \
             black holes computed from this W?",
            path.display(),
            view.shape()
        )));
    }
    let d = view.data();
    let id: Vec<u32> = match view.dtype() {
        Dtype::U8 => d.iter().map(|&x| x as u32).collect(),
        Dtype::U16 => d
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        other => {
            return Err(p.error(format!(
                "`{}` (input `{port}`): `black_hole_id` has dtype {other}; expected U8, U16 or U32",
                path.display()
            )))
        }
    };
    let k = id.iter().copied().max().unwrap_or(0) as usize;
    let mut members = vec![Vec::new(); k];
    for (t, &b) in id.iter().enumerate() {
        if b != 0 {
            members[b as usize - 1].push(t as u32);
        }
    }
    Ok(BlackHoles { id, members })
}

/// Reads the BOOL tensor `name` [rows] of the single file on input `port` (e.g. a dead-set mask
/// of `w.dead_sets`' `masks` output) as one bool per token.
pub fn load_mask(
    p: &Params<'_>,
    port: &str,
    name: &str,
    rows: usize,
) -> Result<Vec<bool>, StageError> {
    let (path, mapped) = open_single(p, port)?;
    let path = &path;
    let st = mapped.parse(path).map_err(|e| p.error(e))?;
    let view = st.tensor(name).map_err(|_| {
        p.error(format!(
            "`{}` (input `{port}`) has no mask `{name}`; it has {}",
            path.display(),
            tensor_names(&st)
        ))
    })?;
    if view.dtype() != Dtype::BOOL || view.shape() != [rows] {
        return Err(p.error(format!(
            "`{}` (input `{port}`): `{name}` is {} {:?}; expected BOOL [{rows}] (one flag per row of W)",
            path.display(),
            view.dtype(),
            view.shape()
        )));
    }
    Ok(view.data().iter().map(|&b| b != 0).collect())
}
