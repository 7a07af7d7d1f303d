//! The "azimuth-movie" HDF5 format, version 1: W recorded during training (science spec S30.4,
//! Part IV), with its streaming writer [`MovieWriter`] (used by the `train.gpt` trainer) and its
//! reader [`Movie`] (used by the `movie.*` analyses). This module is the contract between them.
//!
//! # Layout (all names exact)
//! - Root attributes: `format` = `"azimuth-movie"` (variable-length UTF-8 string),
//!   `format_version` = 1 (u32), `vocab_size` (i64), then the caller's attributes
//!   ([`AttrValue`]: i64, f64 or string) in sorted name order.
//! - `/W` `[S, R, D]`: snapshot s of the R recorded rows. bf16 movies store a 16-bit HDF5 custom
//!   float (sign 15, 8-bit exponent at 7, 7-bit mantissa at 0, bias 127: the layout of HDF5 2.x's
//!   `H5T_FLOAT_BFLOAT16LE`, stack.md §6); the raw bits are written with that same type as memory
//!   type, so they are stored exactly and h5py/h5dump read floats. f32 movies (fp32 master
//!   weights, protocol P2) store native f32.
//! - `/steps` i64 `[S]`: training step of each snapshot (0 = the initial W), strictly increasing.
//! - `/rows` i64 `[R]`: token ids of the recorded rows, strictly increasing.
//! - `/dead_mask` u8 `[V]` (0/1) and `/dead_ids` i64 `[n_dead]`.
//! - `/loss`, `/lr`, `/grad_norm` f32 `[T+1]`: index t = training step t; index 0 is NaN (nothing
//!   is computed before step 1).
//! - `/dead_motion/l1`, `/dead_motion/l2`, `/dead_motion/linf` f32 `[T, n_dead]`: for every
//!   training step t = 1..T (index t−1) the L1 / L2 / L∞ norm over D of each dead row's lattice
//!   displacement ΔW′ = (W[t] − W[t−1]) / ULP(W[t−1]) (S41; see [`lattice_motion_bf16`]), recorded
//!   from every step even when W snapshots are sparser.
//! - `/last_motion_step` i32 `[n_dead]`: per dead row the last step with L1 > 0 (S43 F2), −1 if
//!   it never moved; filled by [`MovieWriter::finish`].
//! - `/h_mean` f32 `[T, D]` (optional, S45): mean final hidden state of step t at index t−1.
//!
//! # Chunking and streaming
//! `/W` is chunked `(c_t, c_r, D)` with c_t = min(16, S) and c_r = min(16, R), uncompressed
//! (compression made the original recordings ≈20× slower to write, S30.4). Reading one
//! snapshot touches ⌈R/16⌉ chunks, one token's trajectory ⌈S/16⌉ chunks; a chunk holds 256 rows
//! of D values (32 KiB for D = 64 in bf16), and the reader sizes its chunk cache to hold one whole
//! row of chunks in time (capped at 256 MiB), so sequential snapshot reads read each chunk once.
//! The writer keeps at most c_t snapshots in memory and writes a full time-row of chunks when it
//! has them (the shape is fixed: S, T and R are known up front). `/dead_motion/*` and `/h_mean`
//! are chunked along time in blocks of `c_m` steps (about 64 Ki values per chunk, at most 1024
//! steps) and streamed the same way, so memory stays bounded by one block of steps.
//!
//! # Determinism and atomicity
//! Object modification times are off for the file (root group), every group and every dataset,
//! so two writes of the same data give byte-identical files (a test checks it). The writer
//! writes to a hidden temporary sibling `.<name>.<pid>.partial` and renames it into place only in
//! [`MovieWriter::finish`] (after an fsync); a writer dropped without `finish` deletes the
//! temporary file, and a killed process can leave only that temporary file, never a partial
//! movie at the final path.
//!
//! # Lattice displacement conventions
//! ULP(x) = 2^(max(E, 1) − 134) for bf16 and 2^(max(E, 1) − 150) for f32, E the stored exponent
//! (S02: exponent 0, i.e. zeros and subnormals, is treated as 1, so the ULP of 0 is 2^−133 in
//! bf16). The difference W[t] − W[t−1] is formed in f64 (exact for bf16 values), divided by the
//! ULP of the starting value, and each coordinate's |ΔW′| is clipped to [`MOTION_CAP`] = 2^24,
//! so that a coordinate leaving 0 (which S41 notes gives ≈1e37 cells) keeps the norms finite;
//! a coordinate whose value is or becomes NaN or infinite counts as the cap when its bits
//! change. Motion is value-based: a change between +0 and −0 is no motion.

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

use hdf5::types::{TypeDescriptor, VarLenUnicode};
use hdf5::{Dataset, Datatype, File};
use hdf5_sys::h5i::hid_t;

/// The value of the root attribute `format`.
pub const FORMAT_NAME: &str = "azimuth-movie";
/// The value of the root attribute `format_version` this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest chunk extent along time (snapshots) and rows of `/W`.
pub const MAX_CHUNK: usize = 16;
/// Per-coordinate cap on |ΔW′| (cells) so that norms of moves off exact zeros stay finite.
pub const MOTION_CAP: f64 = 16_777_216.0; // 2^24
/// Root attribute names the format itself writes; callers may not use them.
pub const RESERVED_ATTRS: [&str; 3] = ["format", "format_version", "vocab_size"];
/// Values per chunk aimed at for the time-chunked per-step datasets.
const STEP_CHUNK_VALUES: usize = 65_536;
/// Most steps in one chunk of the per-step datasets.
const MAX_STEP_CHUNK: usize = 1024;
/// Cap on the reader's chunk cache for `/W`.
const MAX_READ_CACHE: usize = 256 << 20;

/// L1, L2 and L∞ of the dead rows' lattice displacement, each T × n_dead (step-major).
pub type MotionNorms = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Element type of `/W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovieDtype {
    /// bfloat16 bit patterns, stored exactly as a 16-bit custom float.
    Bf16,
    /// IEEE f32 (fp32 master weights).
    F32,
}

/// A caller attribute on the root group.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f64),
    Str(String),
}

/// Everything about a movie that is known before training starts.
#[derive(Debug, Clone, PartialEq)]
pub struct MovieHeader {
    /// V: rows of the full W (length of `/dead_mask`).
    pub vocab_size: usize,
    /// D: columns of W.
    pub dim: usize,
    /// Token ids of the recorded rows, strictly increasing, each < V.
    pub rows: Vec<i64>,
    pub dtype: MovieDtype,
    /// Training step of each snapshot, strictly increasing, each in 0..=train_steps.
    pub snapshot_steps: Vec<i64>,
    /// T: training steps (the per-step series have T+1 entries, dead motion T).
    pub train_steps: usize,
    /// Dead token ids, strictly increasing, each < V (they need not be recorded rows).
    pub dead_ids: Vec<i64>,
    /// Whether `/h_mean` is recorded.
    pub h_mean: bool,
    /// Caller attributes (hyper-parameters, protocol, seed, ...); not the reserved names.
    pub attrs: BTreeMap<String, AttrValue>,
}

impl MovieHeader {
    /// S: number of snapshots.
    pub fn snapshot_count(&self) -> usize {
        self.snapshot_steps.len()
    }

    /// Checks the header's internal consistency; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.dim == 0 {
            return Err(format!(
                "vocab_size ({}) and dim ({}) must be at least 1",
                self.vocab_size, self.dim
            ));
        }
        let v = self.vocab_size as i64;
        check_ids("rows", &self.rows, v)?;
        if self.rows.is_empty() {
            return Err("rows is empty: record at least one row".into());
        }
        check_ids("dead_ids", &self.dead_ids, v)?;
        if self.snapshot_steps.is_empty() {
            return Err("snapshot_steps is empty: record at least one snapshot".into());
        }
        for (i, &s) in self.snapshot_steps.iter().enumerate() {
            if s < 0 || s > self.train_steps as i64 {
                return Err(format!(
                    "snapshot_steps[{i}] = {s} is outside 0..={} (train_steps)",
                    self.train_steps
                ));
            }
            if i > 0 && s <= self.snapshot_steps[i - 1] {
                return Err(format!(
                    "snapshot_steps must be strictly increasing: [{}] = {} then [{i}] = {s}",
                    i - 1,
                    self.snapshot_steps[i - 1]
                ));
            }
        }
        for (k, val) in &self.attrs {
            if k.is_empty() || k.contains('\0') {
                return Err(format!("attribute name {k:?} is not allowed"));
            }
            if RESERVED_ATTRS.contains(&k.as_str()) {
                return Err(format!(
                    "attribute `{k}` is written by the movie format itself; choose another name"
                ));
            }
            if let AttrValue::Str(s) = val {
                if s.contains('\0') {
                    return Err(format!("attribute `{k}` holds a NUL character"));
                }
            }
        }
        Ok(())
    }
}

fn check_ids(what: &str, ids: &[i64], v: i64) -> Result<(), String> {
    for (i, &t) in ids.iter().enumerate() {
        if t < 0 || t >= v {
            return Err(format!(
                "{what}[{i}] = {t} is not a token id below vocab_size {v}"
            ));
        }
        if i > 0 && t <= ids[i - 1] {
            return Err(format!(
                "{what} must be strictly increasing: [{}] = {} then [{i}] = {t}",
                i - 1,
                ids[i - 1]
            ));
        }
    }
    Ok(())
}

/// The HDF5 custom float type of bf16 (stack.md §6).
fn bf16_datatype() -> Result<Datatype, String> {
    let f32t = Datatype::from_type::<f32>().map_err(|e| format!("HDF5 f32 type: {e}"))?;
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: plain HDF5 type calls on a fresh copy we own; the id is handed to `from_id`.
    unsafe {
        use hdf5_sys::h5t::*;
        let t = H5Tcopy(f32t.id());
        if t < 0
            || H5Tset_fields(t, 15, 7, 8, 0, 7) < 0
            || H5Tset_precision(t, 16) < 0
            || H5Tset_size(t, 2) < 0
            || H5Tset_ebias(t, 127) < 0
        {
            return Err("cannot build the HDF5 bf16 type".into());
        }
        hdf5::from_id(t).map_err(|e| format!("HDF5 bf16 type: {e}"))
    }
}

/// Reads (`write = false`) or writes the block `start + count` of `ds` from/to `buf`, which
/// holds `count` elements of the memory type `mem_type` in row-major order.
///
/// # Safety
/// `buf` must point to at least Π count elements of `mem_type`'s size.
unsafe fn hyperslab_io(
    ds: &Dataset,
    mem_type: hid_t,
    start: &[u64],
    count: &[u64],
    buf: *mut c_void,
    write: bool,
) -> Result<(), String> {
    use hdf5_sys::{h5d, h5p, h5s};
    if count.contains(&0) {
        return Ok(());
    }
    let _lock = hdf5_sys::LOCK.lock();
    let fspace = h5d::H5Dget_space(ds.id());
    if fspace < 0 {
        return Err("cannot get a dataset's dataspace".into());
    }
    let rank = count.len() as i32;
    let mspace = h5s::H5Screate_simple(rank, count.as_ptr(), std::ptr::null());
    let mut rc = if mspace < 0 { -1 } else { 0 };
    if rc >= 0 {
        rc = h5s::H5Sselect_hyperslab(
            fspace,
            h5s::H5S_seloper_t::H5S_SELECT_SET,
            start.as_ptr(),
            std::ptr::null(),
            count.as_ptr(),
            std::ptr::null(),
        );
    }
    if rc >= 0 {
        rc = if write {
            h5d::H5Dwrite(ds.id(), mem_type, mspace, fspace, h5p::H5P_DEFAULT, buf)
        } else {
            h5d::H5Dread(ds.id(), mem_type, mspace, fspace, h5p::H5P_DEFAULT, buf)
        };
    }
    if mspace >= 0 {
        h5s::H5Sclose(mspace);
    }
    h5s::H5Sclose(fspace);
    if rc < 0 {
        Err(format!(
            "HDF5 {} of block {start:?}+{count:?} failed",
            if write { "write" } else { "read" }
        ))
    } else {
        Ok(())
    }
}

fn write_block<T>(
    ds: &Dataset,
    ty: &Datatype,
    start: &[u64],
    count: &[u64],
    data: &[T],
) -> Result<(), String> {
    debug_assert_eq!(data.len() as u64, count.iter().product::<u64>());
    // SAFETY: `data` holds exactly Π count elements of `ty`'s size (checked by the callers).
    unsafe {
        hyperslab_io(
            ds,
            ty.id(),
            start,
            count,
            data.as_ptr() as *mut c_void,
            true,
        )
    }
}

fn read_block<T: Default + Clone>(
    ds: &Dataset,
    ty: &Datatype,
    start: &[u64],
    count: &[u64],
) -> Result<Vec<T>, String> {
    let n = count.iter().product::<u64>() as usize;
    let mut out = vec![T::default(); n];
    // SAFETY: `out` holds Π count elements; `ty` has T's size (callers pair them).
    unsafe { hyperslab_io(ds, ty.id(), start, count, out.as_mut_ptr().cast(), false)? };
    Ok(out)
}

fn native<T: hdf5::H5Type>() -> Result<Datatype, String> {
    Datatype::from_type::<T>().map_err(|e| format!("HDF5 native type: {e}"))
}

/// Steps per chunk of a `[T, width]` per-step dataset.
fn step_chunk(train_steps: usize, width: usize) -> usize {
    (STEP_CHUNK_VALUES / width.max(1))
        .clamp(1, MAX_STEP_CHUNK)
        .min(train_steps.max(1))
}

/// Creates a dataset of `shape` and element type `ty`, chunked as `chunk` unless a dimension is
/// zero (HDF5 cannot chunk an empty extent; such datasets are contiguous and hold nothing).
fn create_dataset(
    group: &hdf5::Group,
    name: &str,
    ty: &Datatype,
    shape: &[usize],
    chunk: Option<&[usize]>,
) -> Result<Dataset, String> {
    let mut b = group
        .new_dataset_builder()
        .empty_as(ty)
        .shape(shape.to_vec())
        .with_dcpl(|p| p.obj_track_times(false));
    if let Some(c) = chunk {
        if !shape.contains(&0) {
            b = b.chunk(c.to_vec());
        }
    }
    b.create(name)
        .map_err(|e| format!("cannot create dataset `{name}`: {e}"))
}

fn write_attr(group: &hdf5::Group, name: &str, value: &AttrValue) -> Result<(), String> {
    let err = |e: hdf5::Error| format!("cannot write attribute `{name}`: {e}");
    match value {
        AttrValue::Int(i) => group
            .new_attr::<i64>()
            .create(name)
            .and_then(|a| a.write_scalar(i))
            .map_err(err),
        AttrValue::Float(x) => group
            .new_attr::<f64>()
            .create(name)
            .and_then(|a| a.write_scalar(x))
            .map_err(err),
        AttrValue::Str(s) => {
            let v: VarLenUnicode = s.parse().map_err(|e| format!("attribute `{name}`: {e}"))?;
            group
                .new_attr::<VarLenUnicode>()
                .create(name)
                .and_then(|a| a.write_scalar(&v))
                .map_err(err)
        }
    }
}

/// A buffer of consecutive steps of a `[T, width]` f32 dataset, written a chunk at a time.
struct StepStream {
    ds: Dataset,
    width: usize,
    chunk: usize,
    /// First step index (0-based row) held in `buf`.
    start: usize,
    buf: Vec<f32>,
}

impl StepStream {
    fn rows_buffered(&self) -> usize {
        self.buf.len() / self.width.max(1)
    }

    /// Writes what is buffered; `start` moves past it.
    fn flush(&mut self, f32t: &Datatype) -> Result<(), String> {
        let n = self.rows_buffered();
        if n == 0 || self.width == 0 {
            self.buf.clear();
            return Ok(());
        }
        write_block(
            &self.ds,
            f32t,
            &[self.start as u64, 0],
            &[n as u64, self.width as u64],
            &self.buf,
        )?;
        self.start += n;
        self.buf.clear();
        Ok(())
    }
}

/// The open HDF5 objects of a writer (dropped before the file is closed).
struct Open {
    file: File,
    w: Dataset,
    loss: Dataset,
    lr: Dataset,
    grad_norm: Dataset,
    last_motion: Dataset,
    motion: [StepStream; 3],
    h_mean: Option<StepStream>,
}

/// Streaming writer of one movie; see the module docs for the layout.
///
/// Call order: [`create`](Self::create), then in any interleaving the snapshots in header order
/// ([`snapshot_bf16`](Self::snapshot_bf16) or [`snapshot_f32`](Self::snapshot_f32), matching
/// the header's dtype), [`step`](Self::step) for t = 1..=T in order, [`dead_motion`](Self::dead_motion)
/// for t = 1..=T in order (may be omitted when there are no dead ids), [`h_mean`](Self::h_mean) for
/// t = 1..=T in order when the header asks for it; finally [`finish`](Self::finish).
pub struct MovieWriter {
    header: MovieHeader,
    final_path: PathBuf,
    temp_path: PathBuf,
    open: Option<Open>,
    bf16t: Datatype,
    f32t: Datatype,
    chunk_t: usize,
    /// Snapshots buffered (c_t at most), starting at snapshot `snap_start`.
    snap_buf16: Vec<u16>,
    snap_buf32: Vec<f32>,
    snap_start: usize,
    snaps_done: usize,
    loss: Vec<f32>,
    lr: Vec<f32>,
    grad_norm: Vec<f32>,
    motion_steps: usize,
    h_steps: usize,
    last_motion: Vec<i32>,
}

impl MovieWriter {
    /// Validates `header`, creates the temporary sibling of `path` and writes the header data
    /// (`/steps`, `/rows`, `/dead_mask`, `/dead_ids`, root attributes).
    pub fn create(path: &Path, header: MovieHeader) -> Result<MovieWriter, String> {
        let shown = path.display();
        header
            .validate()
            .map_err(|e| format!("movie `{shown}`: bad header: {e}"))?;
        let name = path
            .file_name()
            .ok_or_else(|| format!("movie path `{shown}` has no file name"))?;
        let temp_path = path.with_file_name(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        hdf5::silence_errors(true);
        let ctx = |e: String| format!("movie `{shown}`: {e}");
        let bf16t = bf16_datatype().map_err(ctx)?;
        let f32t = native::<f32>().map_err(ctx)?;
        let (s, r) = (header.snapshot_count(), header.rows.len());
        let t = header.train_steps;
        let n_dead = header.dead_ids.len();
        let chunk_t = s.min(MAX_CHUNK);
        let chunk_r = r.min(MAX_CHUNK);

        let file = File::with_options()
            .with_fcpl(|p| p.obj_track_times(false))
            .create(&temp_path)
            .map_err(|e| format!("cannot create `{}`: {e}", temp_path.display()))?;
        // From here on a failure must delete the temporary file: build the writer first.
        let mut writer = MovieWriter {
            final_path: path.to_path_buf(),
            temp_path,
            open: None,
            chunk_t,
            snap_buf16: Vec::new(),
            snap_buf32: Vec::new(),
            snap_start: 0,
            snaps_done: 0,
            loss: Vec::with_capacity(t),
            lr: Vec::with_capacity(t),
            grad_norm: Vec::with_capacity(t),
            motion_steps: 0,
            h_steps: 0,
            last_motion: vec![-1; n_dead],
            bf16t,
            f32t,
            header,
        };
        let open = writer.create_objects(file, chunk_r).map_err(ctx)?;
        writer.open = Some(open);
        Ok(writer)
    }

    fn create_objects(&self, file: File, chunk_r: usize) -> Result<Open, String> {
        let h = &self.header;
        let (s, r, d) = (h.snapshot_count(), h.rows.len(), h.dim);
        let t = h.train_steps;
        let n_dead = h.dead_ids.len();
        let root: &hdf5::Group = &file;

        write_attr(root, "format", &AttrValue::Str(FORMAT_NAME.into()))?;
        root.new_attr::<u32>()
            .create("format_version")
            .and_then(|a| a.write_scalar(&FORMAT_VERSION))
            .map_err(|e| format!("cannot write attribute `format_version`: {e}"))?;
        write_attr(root, "vocab_size", &AttrValue::Int(h.vocab_size as i64))?;
        for (k, v) in &h.attrs {
            write_attr(root, k, v)?;
        }

        let i64t = native::<i64>()?;
        let u8t = native::<u8>()?;
        let i32t = native::<i32>()?;
        let wt = match h.dtype {
            MovieDtype::Bf16 => &self.bf16t,
            MovieDtype::F32 => &self.f32t,
        };
        let w = create_dataset(root, "W", wt, &[s, r, d], Some(&[self.chunk_t, chunk_r, d]))?;
        let steps = create_dataset(root, "steps", &i64t, &[s], None)?;
        write_block(&steps, &i64t, &[0], &[s as u64], &h.snapshot_steps)?;
        let rows = create_dataset(root, "rows", &i64t, &[r], None)?;
        write_block(&rows, &i64t, &[0], &[r as u64], &h.rows)?;
        let mut mask = vec![0u8; h.vocab_size];
        for &id in &h.dead_ids {
            mask[id as usize] = 1;
        }
        let dm = create_dataset(root, "dead_mask", &u8t, &[h.vocab_size], None)?;
        write_block(&dm, &u8t, &[0], &[mask.len() as u64], &mask)?;
        let di = create_dataset(root, "dead_ids", &i64t, &[n_dead], None)?;
        write_block(&di, &i64t, &[0], &[n_dead as u64], &h.dead_ids)?;
        let loss = create_dataset(root, "loss", &self.f32t, &[t + 1], None)?;
        let lr = create_dataset(root, "lr", &self.f32t, &[t + 1], None)?;
        let grad_norm = create_dataset(root, "grad_norm", &self.f32t, &[t + 1], None)?;
        let group = root
            .create_group_builder()
            .obj_track_times(false)
            .create("dead_motion")
            .map_err(|e| format!("cannot create group `dead_motion`: {e}"))?;
        let cm = step_chunk(t, n_dead);
        let mk = |name: &str| -> Result<StepStream, String> {
            Ok(StepStream {
                ds: create_dataset(&group, name, &self.f32t, &[t, n_dead], Some(&[cm, n_dead]))?,
                width: n_dead,
                chunk: cm,
                start: 0,
                buf: Vec::new(),
            })
        };
        let motion = [mk("l1")?, mk("l2")?, mk("linf")?];
        let last_motion = create_dataset(root, "last_motion_step", &i32t, &[n_dead], None)?;
        let h_mean = if h.h_mean {
            let ch = step_chunk(t, d);
            Some(StepStream {
                ds: create_dataset(root, "h_mean", &self.f32t, &[t, d], Some(&[ch, d]))?,
                width: d,
                chunk: ch,
                start: 0,
                buf: Vec::new(),
            })
        } else {
            None
        };
        Ok(Open {
            file,
            w,
            loss,
            lr,
            grad_norm,
            last_motion,
            motion,
            h_mean,
        })
    }

    /// The header this writer was created with.
    pub fn header(&self) -> &MovieHeader {
        &self.header
    }

    fn err(&self, msg: String) -> String {
        format!("movie `{}`: {msg}", self.final_path.display())
    }

    fn open(&mut self) -> Result<&mut Open, String> {
        let shown = self.final_path.display().to_string();
        self.open
            .as_mut()
            .ok_or_else(|| format!("movie `{shown}`: the writer failed earlier and is closed"))
    }

    fn check_snapshot(&self, step: i64, len: usize, dtype: MovieDtype) -> Result<(), String> {
        let h = &self.header;
        if h.dtype != dtype {
            return Err(self.err(format!(
                "the header says {:?} but a {dtype:?} snapshot was given",
                h.dtype
            )));
        }
        let Some(&want) = h.snapshot_steps.get(self.snaps_done) else {
            return Err(self.err(format!(
                "all {} snapshots were already written (got another at step {step})",
                h.snapshot_count()
            )));
        };
        if step != want {
            return Err(self.err(format!(
                "snapshot {} must be of step {want} (header order), got step {step}",
                self.snaps_done
            )));
        }
        let need = h.rows.len() * h.dim;
        if len != need {
            return Err(self.err(format!(
                "a snapshot holds R × D = {} × {} = {need} values, got {len}",
                h.rows.len(),
                h.dim
            )));
        }
        Ok(())
    }

    /// Records the next snapshot of a bf16 movie: `rows_bits` is R × D bf16 bit patterns, rows
    /// in header order. `step` must be the next entry of `snapshot_steps`.
    pub fn snapshot_bf16(&mut self, step: i64, rows_bits: &[u16]) -> Result<(), String> {
        self.check_snapshot(step, rows_bits.len(), MovieDtype::Bf16)?;
        self.snap_buf16.extend_from_slice(rows_bits);
        self.snaps_done += 1;
        self.flush_snapshots(false)
    }

    /// Records the next snapshot of an f32 movie (R × D values).
    pub fn snapshot_f32(&mut self, step: i64, rows: &[f32]) -> Result<(), String> {
        self.check_snapshot(step, rows.len(), MovieDtype::F32)?;
        self.snap_buf32.extend_from_slice(rows);
        self.snaps_done += 1;
        self.flush_snapshots(false)
    }

    /// Writes the buffered snapshots when c_t of them are held, or when `force`.
    fn flush_snapshots(&mut self, force: bool) -> Result<(), String> {
        let n = self.snaps_done - self.snap_start;
        let last = self.snaps_done == self.header.snapshot_count();
        if n == 0 || (n < self.chunk_t && !last && !force) {
            return Ok(());
        }
        let (r, d) = (self.header.rows.len() as u64, self.header.dim as u64);
        let start = [self.snap_start as u64, 0, 0];
        let count = [n as u64, r, d];
        let open = self
            .open
            .as_ref()
            .ok_or_else(|| self.err("the writer is closed".into()))?;
        let res = match self.header.dtype {
            MovieDtype::Bf16 => write_block(&open.w, &self.bf16t, &start, &count, &self.snap_buf16),
            MovieDtype::F32 => write_block(&open.w, &self.f32t, &start, &count, &self.snap_buf32),
        };
        res.map_err(|e| self.err(format!("writing /W: {e}")))?;
        self.snap_buf16.clear();
        self.snap_buf32.clear();
        self.snap_start = self.snaps_done;
        Ok(())
    }

    /// Records training step `step` (1..=T, in order): its loss, learning rate and gradient norm.
    pub fn step(&mut self, step: usize, loss: f32, lr: f32, grad_norm: f32) -> Result<(), String> {
        let want = self.loss.len() + 1;
        if step != want || step > self.header.train_steps {
            return Err(self.err(format!(
                "step() expects step {want} of 1..={} next, got {step}",
                self.header.train_steps
            )));
        }
        self.loss.push(loss);
        self.lr.push(lr);
        self.grad_norm.push(grad_norm);
        Ok(())
    }

    /// Records the dead rows' lattice-displacement norms of training step `step` (1..=T, in
    /// order), each slice n_dead long in `dead_ids` order (see [`lattice_motion_bf16`]).
    pub fn dead_motion(
        &mut self,
        step: usize,
        l1: &[f32],
        l2: &[f32],
        linf: &[f32],
    ) -> Result<(), String> {
        let n_dead = self.header.dead_ids.len();
        let want = self.motion_steps + 1;
        if step != want || step > self.header.train_steps {
            return Err(self.err(format!(
                "dead_motion() expects step {want} of 1..={} next, got {step}",
                self.header.train_steps
            )));
        }
        if l1.len() != n_dead || l2.len() != n_dead || linf.len() != n_dead {
            return Err(self.err(format!(
                "dead_motion() needs n_dead = {n_dead} values per norm, got {} / {} / {}",
                l1.len(),
                l2.len(),
                linf.len()
            )));
        }
        for (i, &x) in l1.iter().enumerate() {
            if x > 0.0 {
                self.last_motion[i] = step as i32;
            }
        }
        self.motion_steps += 1;
        let f32t = self.f32t.clone();
        let open = self.open()?;
        let mut res = Ok(());
        for (stream, vals) in open.motion.iter_mut().zip([l1, l2, linf]) {
            stream.buf.extend_from_slice(vals);
            if stream.rows_buffered() >= stream.chunk && res.is_ok() {
                res = stream.flush(&f32t);
            }
        }
        res.map_err(|e| self.err(format!("writing /dead_motion: {e}")))
    }

    /// Records the mean final hidden state of training step `step` (1..=T, in order; D values).
    pub fn h_mean(&mut self, step: usize, h: &[f32]) -> Result<(), String> {
        let d = self.header.dim;
        let want = self.h_steps + 1;
        if !self.header.h_mean {
            return Err(self.err("h_mean() was called but the header has h_mean = false".into()));
        }
        if step != want || step > self.header.train_steps {
            return Err(self.err(format!(
                "h_mean() expects step {want} of 1..={} next, got {step}",
                self.header.train_steps
            )));
        }
        if h.len() != d {
            return Err(self.err(format!("h_mean() needs D = {d} values, got {}", h.len())));
        }
        self.h_steps += 1;
        let f32t = self.f32t.clone();
        let open = self.open()?;
        let stream = open
            .h_mean
            .as_mut()
            .expect("h_mean stream exists when the header asks");
        stream.buf.extend_from_slice(h);
        let res = if stream.rows_buffered() >= stream.chunk {
            stream.flush(&f32t)
        } else {
            Ok(())
        };
        res.map_err(|e| self.err(format!("writing /h_mean: {e}")))
    }

    /// Checks that everything was written, writes the series and `/last_motion_step`, closes and
    /// fsyncs the file and renames it into place (replacing any file there).
    pub fn finish(mut self) -> Result<(), String> {
        let h = &self.header;
        let t = h.train_steps;
        let mut missing = Vec::new();
        if self.snaps_done < h.snapshot_count() {
            missing.push(format!(
                "snapshots ({} of {})",
                self.snaps_done,
                h.snapshot_count()
            ));
        }
        if self.loss.len() < t {
            missing.push(format!("step() calls ({} of {t})", self.loss.len()));
        }
        if !h.dead_ids.is_empty() && self.motion_steps < t {
            missing.push(format!(
                "dead_motion() calls ({} of {t})",
                self.motion_steps
            ));
        }
        if h.h_mean && self.h_steps < t {
            missing.push(format!("h_mean() calls ({} of {t})", self.h_steps));
        }
        if !missing.is_empty() {
            return Err(self.err(format!(
                "finish() before everything was written; missing {}",
                missing.join(", ")
            )));
        }
        self.flush_snapshots(true)?;
        let f32t = self.f32t.clone();
        let i32t = native::<i32>().map_err(|e| self.err(e))?;
        let series = |v: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(f32::NAN);
            out.extend_from_slice(v);
            out
        };
        let (loss, lr, gn) = (
            series(&self.loss),
            series(&self.lr),
            series(&self.grad_norm),
        );
        let mut open = self
            .open
            .take()
            .ok_or_else(|| self.err("the writer is closed".into()))?;
        let res = (|| -> Result<(), String> {
            let n = [(t + 1) as u64];
            write_block(&open.loss, &f32t, &[0], &n, &loss)?;
            write_block(&open.lr, &f32t, &[0], &n, &lr)?;
            write_block(&open.grad_norm, &f32t, &[0], &n, &gn)?;
            for s in open.motion.iter_mut() {
                s.flush(&f32t)?;
            }
            if let Some(s) = open.h_mean.as_mut() {
                s.flush(&f32t)?;
            }
            let nd = self.last_motion.len() as u64;
            write_block(&open.last_motion, &i32t, &[0], &[nd], &self.last_motion)?;
            let Open { file, .. } = open;
            file.close().map_err(|e| format!("closing the file: {e}"))?;
            let f = std::fs::File::open(&self.temp_path).map_err(|e| format!("reopening: {e}"))?;
            f.sync_all().map_err(|e| format!("fsync: {e}"))?;
            std::fs::rename(&self.temp_path, &self.final_path)
                .map_err(|e| format!("renaming `{}` into place: {e}", self.temp_path.display()))?;
            if let Some(dir) = self.final_path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        // On failure `Drop` removes the temporary file (open is already None).
        res.map_err(|e| self.err(e))
    }
}

impl Drop for MovieWriter {
    /// A writer dropped without a successful `finish` closes and deletes its temporary file.
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            let Open { file, .. } = open;
            let _ = file.close();
        }
        if self.temp_path.exists() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Per-row lattice-displacement norms of bf16 rows (S41): `prev` and `next` hold rows × `dim`
/// bit patterns; row i's L1 / L2 / L∞ of ΔW′ = (next − prev) / ULP(prev) go to `l1[i]`,
/// `l2[i]`, `linf[i]` (conventions in the module docs: ULP of exponent 0 is 2^−133, per-coordinate
/// |ΔW′| clipped to [`MOTION_CAP`]).
///
/// # Panics
/// If the slice lengths disagree (a programming error in the caller).
pub fn lattice_motion_bf16(
    prev: &[u16],
    next: &[u16],
    dim: usize,
    l1: &mut [f32],
    l2: &mut [f32],
    linf: &mut [f32],
) {
    lattice_motion(prev, next, dim, l1, l2, linf, |p, n| {
        if p == n {
            return 0.0;
        }
        let (a, b) = (crate::bf16::to_f64(p), crate::bf16::to_f64(n));
        if !a.is_finite() || !b.is_finite() {
            return MOTION_CAP;
        }
        let e = ((p >> 7) & 0xFF).max(1) as i32;
        ((b - a) * 2f64.powi(134 - e)).abs().min(MOTION_CAP)
    })
}

/// [`lattice_motion_bf16`] for f32 rows, with f32 ULPs 2^(max(E,1) − 150).
///
/// # Panics
/// If the slice lengths disagree.
pub fn lattice_motion_f32(
    prev: &[f32],
    next: &[f32],
    dim: usize,
    l1: &mut [f32],
    l2: &mut [f32],
    linf: &mut [f32],
) {
    lattice_motion(prev, next, dim, l1, l2, linf, |p, n| {
        if p.to_bits() == n.to_bits() {
            return 0.0;
        }
        if !p.is_finite() || !n.is_finite() {
            return MOTION_CAP;
        }
        let e = ((p.to_bits() >> 23) & 0xFF).max(1) as i32;
        ((n as f64 - p as f64) * 2f64.powi(150 - e))
            .abs()
            .min(MOTION_CAP)
    })
}

fn lattice_motion<T: Copy>(
    prev: &[T],
    next: &[T],
    dim: usize,
    l1: &mut [f32],
    l2: &mut [f32],
    linf: &mut [f32],
    cells: impl Fn(T, T) -> f64,
) {
    assert!(dim > 0, "lattice_motion: dim must be positive");
    let rows = prev.len() / dim;
    assert!(
        prev.len() == rows * dim && next.len() == prev.len(),
        "lattice_motion: prev/next must both hold rows × dim values"
    );
    assert!(
        l1.len() == rows && l2.len() == rows && linf.len() == rows,
        "lattice_motion: l1/l2/linf must hold one value per row"
    );
    for (i, (p, n)) in prev
        .chunks_exact(dim)
        .zip(next.chunks_exact(dim))
        .enumerate()
    {
        let (mut s1, mut s2, mut mx) = (0f64, 0f64, 0f64);
        for (&a, &b) in p.iter().zip(n) {
            let c = cells(a, b);
            s1 += c;
            s2 += c * c;
            mx = mx.max(c);
        }
        l1[i] = s1 as f32;
        l2[i] = s2.sqrt() as f32;
        linf[i] = mx as f32;
    }
}

/// A movie opened for reading. All accessors read from the file on demand except the small
/// header datasets, which [`Movie::open`] reads and checks.
pub struct Movie {
    path: PathBuf,
    file: File,
    w: Dataset,
    header: MovieHeader,
    dead_mask: Vec<u8>,
    bf16t: Datatype,
    f32t: Datatype,
}

impl std::fmt::Debug for Movie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Movie")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

fn dataset_shape(ds: &Dataset) -> Vec<usize> {
    ds.shape()
}

/// The element type of `/W`: bf16 (the custom 16-bit float), f32, or an error message.
fn w_dtype(ds: &Dataset) -> Result<MovieDtype, String> {
    let dt = ds
        .dtype()
        .map_err(|e| format!("cannot read the type of /W: {e}"))?;
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: read-only queries on a valid type id.
    unsafe {
        use hdf5_sys::h5t::*;
        let id = dt.id();
        if H5Tget_class(id) != H5T_class_t::H5T_FLOAT {
            return Err("/W is not a float dataset".into());
        }
        let size = H5Tget_size(id);
        let (mut sp, mut ep, mut es, mut mp, mut ms) = (0, 0, 0, 0, 0);
        H5Tget_fields(id, &mut sp, &mut ep, &mut es, &mut mp, &mut ms);
        let bias = H5Tget_ebias(id);
        let le = H5Tget_order(id) == H5T_order_t::H5T_ORDER_LE;
        match (size, sp, ep, es, mp, ms, bias, le) {
            (2, 15, 7, 8, 0, 7, 127, true) => Ok(MovieDtype::Bf16),
            (4, 31, 23, 8, 0, 23, 127, _) => Ok(MovieDtype::F32),
            _ => Err(format!(
                "/W has an unsupported float type ({size} bytes, {es}-bit exponent, {ms}-bit mantissa); \
                 azimuth movies store bf16 or f32"
            )),
        }
    }
}

fn read_attr(file: &File, name: &str) -> Result<AttrValue, String> {
    let a = file
        .attr(name)
        .map_err(|e| format!("attribute `{name}`: {e}"))?;
    if !a.is_scalar() {
        return Err(format!("attribute `{name}` is not a scalar"));
    }
    let desc = a
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| format!("attribute `{name}`: {e}"))?;
    let e = |e: hdf5::Error| format!("attribute `{name}`: {e}");
    Ok(match desc {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            AttrValue::Int(a.read_scalar::<i64>().map_err(e)?)
        }
        TypeDescriptor::Float(_) => AttrValue::Float(a.read_scalar::<f64>().map_err(e)?),
        TypeDescriptor::VarLenUnicode => AttrValue::Str(
            a.read_scalar::<VarLenUnicode>()
                .map_err(e)?
                .as_str()
                .to_string(),
        ),
        TypeDescriptor::VarLenAscii => AttrValue::Str(
            a.read_scalar::<hdf5::types::VarLenAscii>()
                .map_err(e)?
                .as_str()
                .to_string(),
        ),
        other => {
            return Err(format!(
                "attribute `{name}` has an unsupported type {other:?}"
            ))
        }
    })
}

impl Movie {
    /// Opens the movie at `path`, checks `format` / `format_version` and the shapes of every
    /// dataset, and reads the header datasets. Errors name the file and say what is wrong.
    pub fn open(path: &Path) -> Result<Movie, String> {
        let shown = path.display();
        if !path.is_file() {
            return Err(format!("movie `{shown}` does not exist or is not a file"));
        }
        hdf5::silence_errors(true);
        let file = File::open(path).map_err(|e| {
            format!("`{shown}` is not an azimuth movie: not a readable HDF5 file ({e})")
        })?;
        Self::open_file(path, file).map_err(|e| format!("movie `{shown}`: {e}"))
    }

    fn open_file(path: &Path, file: File) -> Result<Movie, String> {
        let names = file
            .attr_names()
            .map_err(|e| format!("cannot list attributes: {e}"))?;
        match names.iter().any(|n| n == "format").then(|| read_attr(&file, "format")) {
            Some(Ok(AttrValue::Str(s))) if s == FORMAT_NAME => {}
            Some(Ok(other)) => {
                return Err(format!(
                    "not an azimuth movie: attribute `format` is {other:?}, expected \"{FORMAT_NAME}\""
                ))
            }
            Some(Err(e)) => return Err(format!("not an azimuth movie: {e}")),
            None => {
                return Err(format!(
                    "not an azimuth movie: the root has no `format` attribute (expected \"{FORMAT_NAME}\")"
                ))
            }
        }
        match read_attr(&file, "format_version") {
            Ok(AttrValue::Int(v)) if v == FORMAT_VERSION as i64 => {}
            Ok(AttrValue::Int(v)) => {
                return Err(format!(
                    "azimuth-movie format_version {v} is not supported (this build reads version \
                     {FORMAT_VERSION}); re-record the movie or use a matching azimuth"
                ))
            }
            Ok(other) => {
                return Err(format!(
                    "attribute `format_version` is {other:?}, not an integer"
                ))
            }
            Err(e) => return Err(e),
        }
        let vocab_size = match read_attr(&file, "vocab_size")? {
            AttrValue::Int(v) if v >= 1 => v as usize,
            other => {
                return Err(format!(
                    "attribute `vocab_size` is {other:?}, not a positive integer"
                ))
            }
        };
        let mut attrs = BTreeMap::new();
        for n in &names {
            if !RESERVED_ATTRS.contains(&n.as_str()) {
                attrs.insert(n.clone(), read_attr(&file, n)?);
            }
        }
        let ds = |name: &str| -> Result<Dataset, String> {
            file.dataset(name).map_err(|_| {
                format!("dataset `/{name}` is missing (a damaged or incomplete movie)")
            })
        };
        let w0 = ds("W")?;
        let wshape = dataset_shape(&w0);
        if wshape.len() != 3 || wshape.contains(&0) {
            return Err(format!(
                "/W has shape {wshape:?}, expected [S, R, D] with no empty axis"
            ));
        }
        let dtype = w_dtype(&w0)?;
        let (s, r, d) = (wshape[0], wshape[1], wshape[2]);
        let read_i64 = |name: &str, len: usize| -> Result<Vec<i64>, String> {
            let x = ds(name)?;
            if dataset_shape(&x) != [len] {
                return Err(format!(
                    "/{name} has shape {:?}, expected [{len}]",
                    x.shape()
                ));
            }
            x.read_raw::<i64>()
                .map_err(|e| format!("reading /{name}: {e}"))
        };
        let steps = read_i64("steps", s)?;
        let rows = read_i64("rows", r)?;
        let dm = ds("dead_mask")?;
        if dataset_shape(&dm) != [vocab_size] {
            return Err(format!(
                "/dead_mask has shape {:?}, expected [{vocab_size}] (vocab_size)",
                dm.shape()
            ));
        }
        let dead_mask = dm
            .read_raw::<u8>()
            .map_err(|e| format!("reading /dead_mask: {e}"))?;
        let di = ds("dead_ids")?;
        let n_dead = dataset_shape(&di).first().copied().unwrap_or(0);
        let dead_ids = read_i64("dead_ids", n_dead)?;
        let loss = ds("loss")?;
        let t = match dataset_shape(&loss).as_slice() {
            [n] if *n >= 1 => n - 1,
            other => return Err(format!("/loss has shape {other:?}, expected [T+1]")),
        };
        for name in ["lr", "grad_norm"] {
            if dataset_shape(&ds(name)?) != [t + 1] {
                return Err(format!(
                    "/{name} must have T+1 = {} entries like /loss",
                    t + 1
                ));
            }
        }
        for name in ["dead_motion/l1", "dead_motion/l2", "dead_motion/linf"] {
            if dataset_shape(&ds(name)?) != [t, n_dead] {
                return Err(format!(
                    "/{name} must have shape [T, n_dead] = [{t}, {n_dead}]"
                ));
            }
        }
        if dataset_shape(&ds("last_motion_step")?) != [n_dead] {
            return Err(format!(
                "/last_motion_step must have n_dead = {n_dead} entries"
            ));
        }
        let h_mean = file.link_exists("h_mean");
        if h_mean && dataset_shape(&ds("h_mean")?) != [t, d] {
            return Err(format!("/h_mean must have shape [T, D] = [{t}, {d}]"));
        }
        let header = MovieHeader {
            vocab_size,
            dim: d,
            rows,
            dtype,
            snapshot_steps: steps,
            train_steps: t,
            dead_ids,
            h_mean,
            attrs,
        };
        header
            .validate()
            .map_err(|e| format!("inconsistent header data: {e}"))?;
        let expected_mask: Vec<u8> = {
            let mut m = vec![0u8; vocab_size];
            for &i in &header.dead_ids {
                m[i as usize] = 1;
            }
            m
        };
        if expected_mask != dead_mask {
            return Err("/dead_mask disagrees with /dead_ids".into());
        }
        drop(w0);
        let w = open_w_with_cache(&file, r, d, dtype)?;
        Ok(Movie {
            path: path.to_path_buf(),
            file,
            w,
            header,
            dead_mask,
            bf16t: bf16_datatype()?,
            f32t: native::<f32>()?,
        })
    }

    /// The file this movie was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header as recorded (caller attributes in `attrs`, without the reserved ones).
    pub fn header(&self) -> &MovieHeader {
        &self.header
    }

    /// S.
    pub fn snapshot_count(&self) -> usize {
        self.header.snapshot_count()
    }

    /// Training step of each snapshot.
    pub fn steps(&self) -> &[i64] {
        &self.header.snapshot_steps
    }

    /// Token ids of the recorded rows.
    pub fn rows(&self) -> &[i64] {
        &self.header.rows
    }

    /// Dead token ids.
    pub fn dead_ids(&self) -> &[i64] {
        &self.header.dead_ids
    }

    /// 0/1 per token id (length V).
    pub fn dead_mask(&self) -> &[u8] {
        &self.dead_mask
    }

    /// Caller attributes.
    pub fn attrs(&self) -> &BTreeMap<String, AttrValue> {
        &self.header.attrs
    }

    fn err(&self, msg: String) -> String {
        format!("movie `{}`: {msg}", self.path.display())
    }

    fn check_snapshot_index(&self, s: usize) -> Result<(), String> {
        if s >= self.snapshot_count() {
            return Err(self.err(format!(
                "snapshot {s} does not exist (the movie has {})",
                self.snapshot_count()
            )));
        }
        Ok(())
    }

    /// Snapshot `s` of a bf16 movie as R × D bit patterns (exactly as written).
    pub fn snapshot_bits(&self, s: usize) -> Result<Vec<u16>, String> {
        self.check_snapshot_index(s)?;
        if self.header.dtype != MovieDtype::Bf16 {
            return Err(self.err("stores f32 snapshots, not bf16 bits; use snapshot_f32".into()));
        }
        let (r, d) = (self.header.rows.len() as u64, self.header.dim as u64);
        read_block(&self.w, &self.bf16t, &[s as u64, 0, 0], &[1, r, d]).map_err(|e| self.err(e))
    }

    /// Snapshot `s` as R × D f32 values (bf16 widened exactly).
    pub fn snapshot_f32(&self, s: usize) -> Result<Vec<f32>, String> {
        self.check_snapshot_index(s)?;
        let (r, d) = (self.header.rows.len() as u64, self.header.dim as u64);
        match self.header.dtype {
            MovieDtype::Bf16 => Ok(self
                .snapshot_bits(s)?
                .into_iter()
                .map(crate::bf16::to_f32)
                .collect()),
            MovieDtype::F32 => read_block(&self.w, &self.f32t, &[s as u64, 0, 0], &[1, r, d])
                .map_err(|e| self.err(e)),
        }
    }

    /// The trajectory of recorded row `row_index` (an index into [`rows`](Self::rows)): S × D
    /// f32 values, snapshot-major.
    pub fn trajectory_f32(&self, row_index: usize) -> Result<Vec<f32>, String> {
        let r = self.header.rows.len();
        if row_index >= r {
            return Err(self.err(format!("row index {row_index} does not exist (R = {r})")));
        }
        let (s, d) = (self.snapshot_count() as u64, self.header.dim as u64);
        let start = [0, row_index as u64, 0];
        match self.header.dtype {
            MovieDtype::Bf16 => Ok(read_block::<u16>(&self.w, &self.bf16t, &start, &[s, 1, d])
                .map_err(|e| self.err(e))?
                .into_iter()
                .map(crate::bf16::to_f32)
                .collect()),
            MovieDtype::F32 => {
                read_block(&self.w, &self.f32t, &start, &[s, 1, d]).map_err(|e| self.err(e))
            }
        }
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, String> {
        self.file
            .dataset(name)
            .and_then(|d| d.read_raw::<f32>())
            .map_err(|e| self.err(format!("reading /{name}: {e}")))
    }

    /// A per-step series, T+1 values (index 0 NaN): `loss`, `lr` or `grad_norm`; `None` if
    /// the file lacks it.
    pub fn series(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        if !["loss", "lr", "grad_norm"].contains(&name) {
            return Err(self.err(format!(
                "unknown series `{name}` (known: loss, lr, grad_norm)"
            )));
        }
        if !self.file.link_exists(name) {
            return Ok(None);
        }
        self.read_f32(name).map(Some)
    }

    /// `/dead_motion` L1, L2, L∞, each T × n_dead (step-major: index (t−1)·n_dead + i).
    pub fn dead_motion(&self) -> Result<MotionNorms, String> {
        Ok((
            self.read_f32("dead_motion/l1")?,
            self.read_f32("dead_motion/l2")?,
            self.read_f32("dead_motion/linf")?,
        ))
    }

    /// `/last_motion_step`, one per dead id (−1 = never moved).
    pub fn last_motion_step(&self) -> Result<Vec<i32>, String> {
        self.file
            .dataset("last_motion_step")
            .and_then(|d| d.read_raw::<i32>())
            .map_err(|e| self.err(format!("reading /last_motion_step: {e}")))
    }

    /// `/h_mean` (T × D) if recorded.
    pub fn h_mean(&self) -> Result<Option<Vec<f32>>, String> {
        if !self.header.h_mean {
            return Ok(None);
        }
        self.read_f32("h_mean").map(Some)
    }
}

/// Opens `/W` with a chunk cache that holds one time-row of chunks (all row-chunks of c_t
/// snapshots), so reading snapshots in order reads every chunk once.
fn open_w_with_cache(
    file: &File,
    r: usize,
    d: usize,
    dtype: MovieDtype,
) -> Result<Dataset, String> {
    let elem = match dtype {
        MovieDtype::Bf16 => 2,
        MovieDtype::F32 => 4,
    };
    let chunk_bytes = MAX_CHUNK * MAX_CHUNK * d * elem;
    let row_chunks = r.div_ceil(MAX_CHUNK);
    let nbytes = (row_chunks * chunk_bytes).clamp(1 << 20, MAX_READ_CACHE);
    let nslots = (row_chunks * 10).max(521) | 1;
    let dapl = hdf5::plist::DatasetAccess::build()
        .chunk_cache(nslots, nbytes, 0.75)
        .finish()
        .map_err(|e| format!("chunk cache: {e}"))?;
    let name = CString::new("W").expect("no NUL");
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: valid file and plist ids; the new id is owned by the returned Dataset.
    unsafe {
        let id = hdf5_sys::h5d::H5Dopen2(file.id(), name.as_ptr(), dapl.id());
        if id < 0 {
            return Err("cannot open /W".into());
        }
        hdf5::from_id(id).map_err(|e| format!("cannot open /W: {e}"))
    }
}
