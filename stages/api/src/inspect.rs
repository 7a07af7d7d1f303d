//! Header-only inspection of HDF5 files for `azimuth show`: [`hdf5_tree`] walks the object tree
//! (groups, datasets, committed datatypes, links, attributes) and [`render_hdf5_tree`] prints it
//! as an indented tree, one line per object.
//!
//! Invariant: dataset *data* is never read. Only object headers are: shapes, types, chunking,
//! filters, allocated storage and attributes (whose values are small and live in the headers;
//! values with more than [`MAX_ATTR_VALUES`] elements are not read either). A truncated or
//! corrupt file gives `Err` with the HDF5 library's reason instead of a panic, and HDF5's own
//! error-stack printing to stderr stays off (hdf5-metno silences it; we also ask explicitly).
//!
//! Data types are written as short text: `f32`, `i64`, `string (variable, utf-8)`, and so on.
//! bfloat16 shows up as `bf16` when stored as a 16-bit HDF5 custom float with an 8-bit exponent
//! and a 7-bit mantissa (the layout of HDF5 2.x's `H5T_FLOAT_BFLOAT16LE`), and as
//! `bf16 (u16 + dtype attr)` for the convention of a `u16` dataset with a string attribute
//! `dtype = "bfloat16"`. Links are not followed: soft and external links are shown with their
//! targets, and an object reached again through a second hard link is shown as a hard link to the
//! path where it was first listed (this also stops cycles).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::Path;

use hdf5::{Group, IndexType, IterationOrder, LinkType, Location, LocationType};
use hdf5_sys::h5t::H5T_class_t;
use serde::Serialize;

/// Attribute values with more elements than this are not read (their count is shown instead).
pub const MAX_ATTR_VALUES: usize = 4096;
/// Array attribute values beyond this many elements are cut from the text.
pub const SHOWN_ATTR_VALUES: usize = 16;
/// Longer string values are cut (in characters).
const SHOWN_STRING_CHARS: usize = 200;
/// Groups nested deeper than this are reported as an error (a corrupt file, most likely).
const MAX_DEPTH: usize = 256;

/// One object in an HDF5 file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hdf5Node {
    /// Absolute path, `/` for the root group.
    pub path: String,
    /// The link name (last path component); `/` for the root group.
    pub name: String,
    #[serde(flatten)]
    pub kind: Hdf5Kind,
    /// The object's attributes, sorted by name (empty for links).
    pub attributes: Vec<Hdf5Attribute>,
}

/// What an [`Hdf5Node`] is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Hdf5Kind {
    /// A group and its members, sorted by link name.
    Group {
        children: Vec<Hdf5Node>,
    },
    Dataset(Hdf5Dataset),
    /// A committed (named) datatype.
    Datatype {
        dtype: String,
    },
    /// A soft link (not followed).
    SoftLink {
        target: String,
    },
    /// A link into another file (not followed).
    ExternalLink {
        file: String,
        target: String,
    },
    /// A second hard link to an object already listed at `target`.
    HardLink {
        target: String,
    },
}

/// The header facts of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hdf5Dataset {
    /// `simple`, `scalar` or `null` (no data at all).
    pub space: String,
    /// Current extent; empty for scalar and null spaces.
    pub shape: Vec<u64>,
    /// Maximum extent per axis; `None` = unlimited.
    pub max_shape: Vec<Option<u64>>,
    /// Element type as text (see the module docs).
    pub dtype: String,
    /// Size of one element in bytes.
    pub element_size: u64,
    /// `contiguous`, `chunked`, `compact` or `virtual`.
    pub layout: String,
    /// Chunk shape, for chunked layout.
    pub chunks: Option<Vec<u64>>,
    /// Filters in the order HDF5 applies them when writing, e.g. `["shuffle", "deflate(4)"]`.
    pub filters: Vec<String>,
    /// Bytes allocated in the file for the data (after compression; 0 if never written).
    pub storage_size: u64,
}

/// One attribute: its type, extent and (for small ones) its value as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hdf5Attribute {
    pub name: String,
    pub dtype: String,
    /// Extent; empty for a scalar.
    pub shape: Vec<u64>,
    /// The value as text: `42`, `"text"`, `[1, 2, 3]`; arrays are cut after
    /// [`SHOWN_ATTR_VALUES`] elements with a `… (N values)` suffix.
    pub value: String,
}

/// Reads the object tree of the HDF5 file at `path` without reading any dataset data.
pub fn hdf5_tree(path: &Path) -> Result<Hdf5Node, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{shown}` is not a regular file"));
    }
    hdf5::silence_errors(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Hdf5Node, String> {
            let file = hdf5::File::open(path).map_err(|e| {
            format!("`{shown}` is not a readable HDF5 file (truncated, corrupt or another format): {e}")
        })?;
            let mut walk = Walk {
                seen: HashMap::new(),
            };
            let root: &Group = &file;
            walk.group(root, "/", "/", 0)
                .map_err(|e| format!("`{shown}` is damaged or unreadable: {e}"))
        },
    ));
    match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = crate::panic_message(&*panic);
            Err(format!(
                "`{shown}` could not be inspected (HDF5 binding panicked: {msg})"
            ))
        }
    }
}

/// Traversal state: where each multiply-linked object was first listed.
struct Walk {
    seen: HashMap<String, String>,
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl Walk {
    fn group(
        &mut self,
        g: &Group,
        path: &str,
        name: &str,
        depth: usize,
    ) -> Result<Hdf5Node, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "groups nested deeper than {MAX_DEPTH} levels at `{path}`"
            ));
        }
        if depth == 0 {
            let info = g.loc_info().map_err(|e| format!("`{path}`: {e}"))?;
            self.seen.insert(
                format!("{}:{:?}", info.fileno, info.token),
                path.to_string(),
            );
        }
        let links = g
            .links(IndexType::Name, IterationOrder::Increasing)
            .map_err(|e| format!("cannot list group `{path}`: {e}"))?;
        let mut children = Vec::with_capacity(links.len());
        for (link, info) in links {
            let cpath = child_path(path, &link);
            let node = match info.link_type {
                LinkType::Soft => Hdf5Node {
                    path: cpath,
                    name: link.clone(),
                    kind: Hdf5Kind::SoftLink {
                        target: soft_link_target(g, &link)?,
                    },
                    attributes: vec![],
                },
                LinkType::External => {
                    let (file, target) = external_link_target(g, &link)?;
                    Hdf5Node {
                        path: cpath,
                        name: link.clone(),
                        kind: Hdf5Kind::ExternalLink { file, target },
                        attributes: vec![],
                    }
                }
                LinkType::Hard => self.hard(g, &link, cpath, depth)?,
            };
            children.push(node);
        }
        Ok(Hdf5Node {
            path: path.to_string(),
            name: name.to_string(),
            kind: Hdf5Kind::Group { children },
            attributes: attributes(g, path)?,
        })
    }

    fn hard(
        &mut self,
        parent: &Group,
        link: &str,
        path: String,
        depth: usize,
    ) -> Result<Hdf5Node, String> {
        let info = parent
            .loc_info_by_name(link)
            .map_err(|e| format!("cannot open `{path}`: {e}"))?;
        if info.num_links > 1 {
            let key = format!("{}:{:?}", info.fileno, info.token);
            if let Some(first) = self.seen.get(&key) {
                return Ok(Hdf5Node {
                    path,
                    name: link.to_string(),
                    kind: Hdf5Kind::HardLink {
                        target: first.clone(),
                    },
                    attributes: vec![],
                });
            }
            self.seen.insert(key, path.clone());
        }
        match info.loc_type {
            LocationType::Group => {
                let g = parent
                    .group(link)
                    .map_err(|e| format!("cannot open group `{path}`: {e}"))?;
                self.group(&g, &path, link, depth + 1)
            }
            LocationType::Dataset => {
                let ds = parent
                    .dataset(link)
                    .map_err(|e| format!("cannot open dataset `{path}`: {e}"))?;
                dataset(&ds, path, link)
            }
            LocationType::NamedDatatype => {
                let dt = parent
                    .committed_datatype(link)
                    .map_err(|e| format!("cannot open datatype `{path}`: {e}"))?;
                let dtype = type_text(dt.id(), 0);
                let attrs = attributes(&dt, &path)?;
                Ok(Hdf5Node {
                    path,
                    name: link.to_string(),
                    kind: Hdf5Kind::Datatype { dtype },
                    attributes: attrs,
                })
            }
            #[allow(unreachable_patterns)]
            _ => Err(format!(
                "`{path}` is an object of a kind this tool does not know"
            )),
        }
    }
}

fn dataset(ds: &hdf5::Dataset, path: String, name: &str) -> Result<Hdf5Node, String> {
    let space = ds
        .space()
        .map_err(|e| format!("`{path}`: cannot read its dataspace: {e}"))?;
    let dtype = ds
        .dtype()
        .map_err(|e| format!("`{path}`: cannot read its datatype: {e}"))?;
    let (space_kind, shape, max_shape) = if space.is_null() {
        ("null", vec![], vec![])
    } else if space.is_scalar() {
        ("scalar", vec![], vec![])
    } else {
        let shape: Vec<u64> = space.shape().into_iter().map(|d| d as u64).collect();
        let max: Vec<Option<u64>> = space
            .maxdims()
            .into_iter()
            .map(|d| d.map(|d| d as u64))
            .collect();
        ("simple", shape, max)
    };
    let layout = match ds.layout() {
        hdf5::dataset::Layout::Contiguous => "contiguous",
        hdf5::dataset::Layout::Chunked => "chunked",
        hdf5::dataset::Layout::Compact => "compact",
        #[allow(unreachable_patterns)]
        _ => "virtual",
    };
    let chunks = ds
        .chunk()
        .map(|c| c.into_iter().map(|d| d as u64).collect());
    let filters = ds.filters().iter().map(filter_text).collect();
    let attrs = attributes(ds, &path)?;
    let mut dtype_text = type_text(dtype.id(), 0);
    let u16_bf16 = dtype_text == "u16"
        && attrs.iter().any(|a| {
            a.name == "dtype"
                && matches!(
                    a.value.trim_matches('"').to_ascii_lowercase().as_str(),
                    "bfloat16" | "bf16"
                )
        });
    if u16_bf16 {
        dtype_text = "bf16 (u16 + dtype attr)".to_string();
    }
    Ok(Hdf5Node {
        path,
        name: name.to_string(),
        kind: Hdf5Kind::Dataset(Hdf5Dataset {
            space: space_kind.to_string(),
            shape,
            max_shape,
            dtype: dtype_text,
            element_size: dtype.size() as u64,
            layout: layout.to_string(),
            chunks,
            filters,
            storage_size: ds.storage_size(),
        }),
        attributes: attrs,
    })
}

fn filter_text(f: &hdf5::filters::Filter) -> String {
    use hdf5::filters::Filter;
    match f {
        Filter::Deflate(level) => format!("deflate({level})"),
        Filter::Shuffle => "shuffle".into(),
        Filter::Fletcher32 => "fletcher32".into(),
        Filter::SZip(..) => "szip".into(),
        Filter::NBit => "nbit".into(),
        Filter::ScaleOffset(..) => "scaleoffset".into(),
        Filter::User(id, params) => {
            let known = match *id {
                32000 => Some("lzf"),
                32001 => Some("blosc"),
                32004 => Some("lz4"),
                32008 => Some("bitshuffle"),
                32013 => Some("zfp"),
                32015 => Some("zstd"),
                _ => None,
            };
            let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
            match known {
                Some(n) => format!("{n}({})", params.join(",")),
                None => format!("filter#{id}({})", params.join(",")),
            }
        }
        #[allow(unreachable_patterns)]
        other => format!("{other:?}").to_lowercase(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HDF5 calls (hdf5-sys), always under the library lock hdf5-metno itself uses.

/// The value of soft link `name` in `g`.
fn soft_link_target(g: &Group, name: &str) -> Result<String, String> {
    let buf = link_value(g, name)?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The (file, object path) of external link `name` in `g`.
fn external_link_target(g: &Group, name: &str) -> Result<(String, String), String> {
    let buf = link_value(g, name)?;
    let _lock = hdf5_sys::LOCK.lock();
    let mut flags: std::os::raw::c_uint = 0;
    let mut file: *const std::os::raw::c_char = std::ptr::null();
    let mut obj: *const std::os::raw::c_char = std::ptr::null();
    // SAFETY: `buf` holds the packed link value; the returned pointers point into `buf`.
    let rc = unsafe {
        hdf5_sys::h5l::H5Lunpack_elink_val(
            buf.as_ptr().cast(),
            buf.len(),
            &mut flags,
            &mut file,
            &mut obj,
        )
    };
    if rc < 0 || file.is_null() || obj.is_null() {
        return Err(format!("cannot decode external link `{name}`"));
    }
    // SAFETY: H5Lunpack_elink_val checked that both strings are NUL-terminated within `buf`.
    let (file, obj) = unsafe { (CStr::from_ptr(file), CStr::from_ptr(obj)) };
    Ok((
        file.to_string_lossy().into_owned(),
        obj.to_string_lossy().into_owned(),
    ))
}

/// The raw value of a soft or external link (at most 64 KiB, zero-padded).
fn link_value(g: &Group, name: &str) -> Result<Vec<u8>, String> {
    let cname = CString::new(name).map_err(|_| format!("link name `{name}` contains NUL"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: valid group id, NUL-terminated name, buffer of the stated size.
    let rc = unsafe {
        hdf5_sys::h5l::H5Lget_val(
            g.id(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            hdf5_sys::h5p::H5P_DEFAULT,
        )
    };
    if rc < 0 {
        return Err(format!("cannot read the value of link `{name}`"));
    }
    Ok(buf)
}

/// Takes ownership of a string HDF5 allocated, copying it out.
///
/// SAFETY: `p` is null or a NUL-terminated string allocated by the HDF5 library.
unsafe fn take_h5_string(p: *mut std::os::raw::c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
    hdf5_sys::h5::H5free_memory(p.cast());
    Some(s)
}

/// A short text for the HDF5 datatype `id` (not closed here).
fn type_text(id: hdf5_sys::h5i::hid_t, depth: usize) -> String {
    if depth > 8 {
        return "…".into();
    }
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: `id` is an open datatype; every call below only queries it (or opens member/base
    // types, which are closed again).
    unsafe {
        use hdf5_sys::h5t::*;
        let size = H5Tget_size(id);
        let be = H5Tget_order(id) == H5T_order_t::H5T_ORDER_BE;
        let suffix = if be { " big-endian" } else { "" };
        match H5Tget_class(id) {
            H5T_class_t::H5T_INTEGER => {
                let signed = H5Tget_sign(id) == H5T_sign_t::H5T_SGN_2;
                let prec = H5Tget_precision(id);
                let mut t = format!("{}{}", if signed { "i" } else { "u" }, size * 8);
                if prec != size * 8 {
                    t.push_str(&format!(" ({prec}-bit precision)"));
                }
                t + suffix
            }
            H5T_class_t::H5T_FLOAT => {
                let (mut spos, mut epos, mut esize, mut mpos, mut msize) = (0, 0, 0, 0, 0);
                H5Tget_fields(id, &mut spos, &mut epos, &mut esize, &mut mpos, &mut msize);
                let bias = H5Tget_ebias(id);
                let full = H5Tget_precision(id) == size * 8 && H5Tget_offset(id) == 0;
                let known = match (size, spos, epos, esize, mpos, msize, bias) {
                    (2, 15, 10, 5, 0, 10, 15) => Some("f16"),
                    (2, 15, 7, 8, 0, 7, 127) => Some("bf16"),
                    (4, 31, 23, 8, 0, 23, 127) => Some("f32"),
                    (8, 63, 52, 11, 0, 52, 1023) => Some("f64"),
                    _ => None,
                };
                match known {
                    Some(k) if full => format!("{k}{suffix}"),
                    _ => format!(
                        "float ({size} bytes: sign bit {spos}, exponent {esize} bits at {epos}, \
                         mantissa {msize} bits at {mpos}, bias {bias}){suffix}"
                    ),
                }
            }
            H5T_class_t::H5T_STRING => {
                let cset = if H5Tget_cset(id) == H5T_cset_t::H5T_CSET_UTF8 {
                    "utf-8"
                } else {
                    "ascii"
                };
                if H5Tis_variable_str(id) > 0 {
                    format!("string (variable, {cset})")
                } else {
                    format!("string (fixed {size}, {cset})")
                }
            }
            H5T_class_t::H5T_COMPOUND => {
                let n = H5Tget_nmembers(id).max(0) as u32;
                let mut fields = Vec::new();
                for i in 0..n.min(SHOWN_ATTR_VALUES as u32) {
                    let name = take_h5_string(H5Tget_member_name(id, i)).unwrap_or_default();
                    let mt = H5Tget_member_type(id, i);
                    let t = if mt < 0 {
                        "?".to_string()
                    } else {
                        type_text(mt, depth + 1)
                    };
                    if mt >= 0 {
                        H5Tclose(mt);
                    }
                    fields.push(format!("{name}: {t}"));
                }
                if n as usize > SHOWN_ATTR_VALUES {
                    fields.push(format!("… {n} fields"));
                }
                format!("compound {{{}}}", fields.join(", "))
            }
            H5T_class_t::H5T_ENUM => {
                let n = H5Tget_nmembers(id).max(0) as u32;
                let names: Vec<String> = (0..n.min(SHOWN_ATTR_VALUES as u32))
                    .map(|i| take_h5_string(H5Tget_member_name(id, i)).unwrap_or_default())
                    .collect();
                if size == 1 && names == ["FALSE", "TRUE"] {
                    return "bool".into();
                }
                let base = H5Tget_super(id);
                let bt = if base < 0 {
                    "?".to_string()
                } else {
                    type_text(base, depth + 1)
                };
                if base >= 0 {
                    H5Tclose(base);
                }
                let more = if n as usize > SHOWN_ATTR_VALUES {
                    format!(", … {n} members")
                } else {
                    String::new()
                };
                format!("enum {bt} {{{}{more}}}", names.join(", "))
            }
            H5T_class_t::H5T_ARRAY => {
                let nd = H5Tget_array_ndims(id);
                let mut dims = vec![0 as hdf5_sys::h5::hsize_t; nd.clamp(0, 32) as usize];
                if nd > 0 && nd <= 32 {
                    H5Tget_array_dims2(id, dims.as_mut_ptr());
                }
                let base = H5Tget_super(id);
                let bt = if base < 0 {
                    "?".to_string()
                } else {
                    type_text(base, depth + 1)
                };
                if base >= 0 {
                    H5Tclose(base);
                }
                format!("array {} of {bt}", shape_text(&dims))
            }
            H5T_class_t::H5T_VLEN => {
                let base = H5Tget_super(id);
                let bt = if base < 0 {
                    "?".to_string()
                } else {
                    type_text(base, depth + 1)
                };
                if base >= 0 {
                    H5Tclose(base);
                }
                format!("vlen of {bt}")
            }
            H5T_class_t::H5T_REFERENCE => "reference".into(),
            H5T_class_t::H5T_BITFIELD => format!("bitfield ({size} bytes){suffix}"),
            H5T_class_t::H5T_OPAQUE => match take_h5_string(H5Tget_tag(id)) {
                Some(tag) if !tag.is_empty() => format!("opaque ({size} bytes, tag {tag:?})"),
                _ => format!("opaque ({size} bytes)"),
            },
            H5T_class_t::H5T_TIME => format!("time ({size} bytes)"),
            other if other as i32 == 11 => {
                // H5T_COMPLEX (HDF5 2.x): a pair of floats.
                let base = H5Tget_super(id);
                let bt = if base < 0 {
                    "?".to_string()
                } else {
                    type_text(base, depth + 1)
                };
                if base >= 0 {
                    H5Tclose(base);
                }
                format!("complex of {bt}")
            }
            other => format!("unknown type class {} ({size} bytes)", other as i32),
        }
    }
}

/// Class, size, cset, strpad and signedness of a datatype.
struct TypeFacts {
    class: H5T_class_t,
    size: usize,
    utf8: bool,
    variable_str: bool,
    signed: bool,
    space_pad: bool,
}

fn type_facts(id: hdf5_sys::h5i::hid_t) -> TypeFacts {
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: `id` is an open datatype; these calls only query it.
    unsafe {
        use hdf5_sys::h5t::*;
        let class = H5Tget_class(id);
        TypeFacts {
            class,
            size: H5Tget_size(id),
            utf8: class == H5T_class_t::H5T_STRING && H5Tget_cset(id) == H5T_cset_t::H5T_CSET_UTF8,
            variable_str: class == H5T_class_t::H5T_STRING && H5Tis_variable_str(id) > 0,
            signed: class == H5T_class_t::H5T_INTEGER && H5Tget_sign(id) == H5T_sign_t::H5T_SGN_2,
            space_pad: class == H5T_class_t::H5T_STRING
                && H5Tget_strpad(id) == H5T_str_t::H5T_STR_SPACEPAD,
        }
    }
}

/// Reads an attribute's value as bytes in its own file type (no conversion). Only for fixed-size
/// types without variable-length parts.
fn read_attr_bytes(
    attr: &hdf5::Attribute,
    type_id: hdf5_sys::h5i::hid_t,
    bytes: usize,
) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; bytes];
    let _lock = hdf5_sys::LOCK.lock();
    // SAFETY: `buf` has room for every element of the attribute in `type_id`'s size.
    let rc = unsafe { hdf5_sys::h5a::H5Aread(attr.id(), type_id, buf.as_mut_ptr().cast()) };
    if rc < 0 {
        return Err("H5Aread failed".into());
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Attributes

/// The attributes of `loc`, sorted by name.
fn attributes(loc: &Location, path: &str) -> Result<Vec<Hdf5Attribute>, String> {
    let mut names = loc
        .attr_names()
        .map_err(|e| format!("cannot list attributes of `{path}`: {e}"))?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let attr = loc
            .attr(&name)
            .map_err(|e| format!("cannot open attribute `{name}` of `{path}`: {e}"))?;
        let dtype = attr
            .dtype()
            .map_err(|e| format!("attribute `{name}` of `{path}`: {e}"))?;
        let space = attr
            .space()
            .map_err(|e| format!("attribute `{name}` of `{path}`: {e}"))?;
        let shape: Vec<u64> = if space.is_scalar() || space.is_null() {
            vec![]
        } else {
            space.shape().into_iter().map(|d| d as u64).collect()
        };
        let count: Option<u64> = if space.is_null() {
            Some(0)
        } else {
            shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
        };
        let value = match count {
            Some(0) => "(empty)".to_string(),
            Some(n) if n as usize <= MAX_ATTR_VALUES => {
                attr_value(&attr, dtype.id(), n as usize, !shape.is_empty())
                    .unwrap_or_else(|e| format!("(not readable: {e})"))
            }
            Some(n) => format!("({n} values, not read)"),
            None => "(too many values, not read)".to_string(),
        };
        out.push(Hdf5Attribute {
            name,
            dtype: type_text(dtype.id(), 0),
            shape,
            value,
        });
    }
    Ok(out)
}

/// The value text of an attribute with `n` (≤ MAX_ATTR_VALUES) elements.
fn attr_value(
    attr: &hdf5::Attribute,
    type_id: hdf5_sys::h5i::hid_t,
    n: usize,
    array: bool,
) -> Result<String, String> {
    let facts = type_facts(type_id);
    let err = |e: hdf5::Error| e.to_string();
    let items: Vec<String> = match facts.class {
        H5T_class_t::H5T_INTEGER if facts.signed => attr
            .read_raw::<i64>()
            .map_err(err)?
            .iter()
            .map(|v| v.to_string())
            .collect(),
        H5T_class_t::H5T_INTEGER => attr
            .read_raw::<u64>()
            .map_err(err)?
            .iter()
            .map(|v| v.to_string())
            .collect(),
        H5T_class_t::H5T_FLOAT if facts.size <= 4 => attr
            .read_raw::<f32>()
            .map_err(err)?
            .iter()
            .map(|v| format!("{v:?}"))
            .collect(),
        H5T_class_t::H5T_FLOAT => attr
            .read_raw::<f64>()
            .map_err(err)?
            .iter()
            .map(|v| format!("{v:?}"))
            .collect(),
        H5T_class_t::H5T_STRING if facts.variable_str && facts.utf8 => attr
            .read_raw::<hdf5::types::VarLenUnicode>()
            .map_err(err)?
            .iter()
            .map(|s| quote(s.as_str()))
            .collect(),
        H5T_class_t::H5T_STRING if facts.variable_str => attr
            .read_raw::<hdf5::types::VarLenAscii>()
            .map_err(err)?
            .iter()
            .map(|s| quote(s.as_str()))
            .collect(),
        H5T_class_t::H5T_STRING => {
            let bytes = read_attr_bytes(attr, type_id, n * facts.size)?;
            bytes
                .chunks(facts.size.max(1))
                .map(|c| {
                    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                    let s = String::from_utf8_lossy(&c[..end]);
                    quote(if facts.space_pad {
                        s.trim_end_matches(' ')
                    } else {
                        &s
                    })
                })
                .collect()
        }
        H5T_class_t::H5T_ENUM => enum_values(attr, type_id, n, facts.size)?,
        other => return Ok(format!("(values of type class {} not shown)", other as i32)),
    };
    Ok(list_text(&items, array))
}

/// Enum attribute values as member names (matched by their raw bytes).
fn enum_values(
    attr: &hdf5::Attribute,
    type_id: hdf5_sys::h5i::hid_t,
    n: usize,
    size: usize,
) -> Result<Vec<String>, String> {
    let bytes = read_attr_bytes(attr, type_id, n * size)?;
    let members: Vec<(String, Vec<u8>)> = {
        let _lock = hdf5_sys::LOCK.lock();
        // SAFETY: `type_id` is an open enum type; member values have the type's size.
        unsafe {
            use hdf5_sys::h5t::*;
            let count = H5Tget_nmembers(type_id).max(0) as u32;
            (0..count)
                .map(|i| {
                    let name = take_h5_string(H5Tget_member_name(type_id, i)).unwrap_or_default();
                    let mut v = vec![0u8; size];
                    H5Tget_member_value(type_id, i, v.as_mut_ptr().cast());
                    (name, v)
                })
                .collect()
        }
    };
    Ok(bytes
        .chunks(size.max(1))
        .map(|c| {
            members
                .iter()
                .find(|(_, v)| v.as_slice() == c)
                .map_or_else(|| format!("<{}>", hex(c)), |(name, _)| name.clone())
        })
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON-quoted string, cut after SHOWN_STRING_CHARS characters.
fn quote(s: &str) -> String {
    let count = s.chars().count();
    if count > SHOWN_STRING_CHARS {
        let cut: String = s.chars().take(SHOWN_STRING_CHARS).collect();
        format!("{}… ({count} chars)", serde_json::Value::from(cut))
    } else {
        serde_json::Value::from(s).to_string()
    }
}

/// `v` for a scalar, `[a, b, …]` for an array, cut after SHOWN_ATTR_VALUES items.
fn list_text(items: &[String], array: bool) -> String {
    if !array && items.len() == 1 {
        return items[0].clone();
    }
    let shown = &items[..items.len().min(SHOWN_ATTR_VALUES)];
    if items.len() > SHOWN_ATTR_VALUES {
        format!("[{}, … ({} values)]", shown.join(", "), items.len())
    } else {
        format!("[{}]", shown.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// `(a, b, c)`, with `(n,)` for one axis and `()` for none.
fn shape_text(dims: &[u64]) -> String {
    match dims {
        [] => "()".into(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn max_shape_text(dims: &[Option<u64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "∞".to_string(), |d| d.to_string()))
        .collect();
    match parts.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", parts.join(", ")),
    }
}

/// Bytes as `812 B`, `1.5 KiB`, `12.3 MiB`, …
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Renders the tree, one line per object and one per attribute, indented two spaces per level:
///
/// ```text
/// /  group
///   /movie  group
///     /movie/w  dataset  bf16  (1200, 256, 128) max (∞, 256, 128)  chunks (1, 256, 128)  deflate(4)+shuffle  stored 12.3 MiB
///       @units  string (variable, utf-8)  = "nats"
/// ```
///
/// Filters are listed in decoding order (the reverse of the write pipeline), so `deflate(4)+shuffle`
/// means "inflate, then unshuffle". The maximum shape is shown only when it differs from the shape.
pub fn render_hdf5_tree(node: &Hdf5Node) -> String {
    let mut out = String::new();
    render(node, 0, &mut out);
    out
}

fn render(node: &Hdf5Node, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    out.push_str(&indent);
    out.push_str(&node.path);
    match &node.kind {
        Hdf5Kind::Group { .. } => out.push_str("  group"),
        Hdf5Kind::Dataset(d) => {
            out.push_str("  dataset  ");
            out.push_str(&d.dtype);
            out.push_str("  ");
            match d.space.as_str() {
                "simple" => {
                    out.push_str(&shape_text(&d.shape));
                    if d.max_shape
                        .iter()
                        .zip(&d.shape)
                        .any(|(m, s)| *m != Some(*s))
                    {
                        out.push_str(" max ");
                        out.push_str(&max_shape_text(&d.max_shape));
                    }
                }
                other => out.push_str(other),
            }
            match &d.chunks {
                Some(c) => {
                    out.push_str("  chunks ");
                    out.push_str(&shape_text(c));
                }
                None => {
                    out.push_str("  ");
                    out.push_str(&d.layout);
                }
            }
            if !d.filters.is_empty() {
                out.push_str("  ");
                out.push_str(
                    &d.filters
                        .iter()
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("+"),
                );
            }
            out.push_str("  stored ");
            out.push_str(&bytes_text(d.storage_size));
        }
        Hdf5Kind::Datatype { dtype } => {
            out.push_str("  datatype  ");
            out.push_str(dtype);
        }
        Hdf5Kind::SoftLink { target } => {
            out.push_str("  soft link -> ");
            out.push_str(target);
        }
        Hdf5Kind::ExternalLink { file, target } => {
            out.push_str(&format!("  external link -> {file}:{target}"));
        }
        Hdf5Kind::HardLink { target } => {
            out.push_str("  hard link -> ");
            out.push_str(target);
        }
    }
    out.push('\n');
    for a in &node.attributes {
        out.push_str(&indent);
        out.push_str("  @");
        out.push_str(&a.name);
        out.push_str("  ");
        out.push_str(&a.dtype);
        if !a.shape.is_empty() {
            out.push(' ');
            out.push_str(&shape_text(&a.shape));
        }
        out.push_str("  = ");
        out.push_str(&a.value);
        out.push('\n');
    }
    if let Hdf5Kind::Group { children } = &node.kind {
        for c in children {
            render(c, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(shape_text(&[]), "()");
        assert_eq!(shape_text(&[5]), "(5,)");
        assert_eq!(shape_text(&[1, 2, 3]), "(1, 2, 3)");
        assert_eq!(max_shape_text(&[None, Some(3)]), "(∞, 3)");
        assert_eq!(max_shape_text(&[None]), "(∞,)");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(15 * 1024 * 1024 + 100), "15.0 MiB");
        assert_eq!(list_text(&["1".into()], false), "1");
        assert_eq!(list_text(&["1".into()], true), "[1]");
        let many: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(
            list_text(&many, true),
            "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, … (20 values)]"
        );
        assert_eq!(quote("a\"b"), r#""a\"b""#);
        let long = "x".repeat(300);
        assert!(quote(&long).ends_with("… (300 chars)"));
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }

    #[test]
    fn missing_and_non_files_are_errors() {
        let e = hdf5_tree(Path::new("/nonexistent/x.h5")).unwrap_err();
        assert!(e.contains("cannot read `/nonexistent/x.h5`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = hdf5_tree(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
