//! `azimuth_stage_api::inspect` on an HDF5 file written here: groups, a chunked shuffle+deflate f32
//! dataset with an unlimited axis, a bf16 dataset stored as a 16-bit custom float (stack.md §6),
//! a u16 + `dtype = "bfloat16"` dataset, a huge never-written dataset (inspection must not read
//! data), links and attributes; then truncated, tiny and garbage files.

use std::path::{Path, PathBuf};

use azimuth_stage_api::inspect::{
    hdf5_tree, render_hdf5_tree, Hdf5Attribute, Hdf5Dataset, Hdf5Kind, Hdf5Node,
};
use hdf5::types::{FixedAscii, VarLenUnicode};
use ndarray::Array3;

/// The bf16 datatype of stack.md §6: a copy of f32 with sign at 15, an 8-bit exponent at 7, a
/// 7-bit mantissa at 0, precision 16, size 2, bias 127.
fn bf16_type() -> hdf5::Datatype {
    let f32t = hdf5::Datatype::from_type::<f32>().unwrap();
    let _lock = hdf5_sys::LOCK.lock();
    unsafe {
        use hdf5_sys::h5t::*;
        let t = H5Tcopy(f32t.id());
        assert!(t >= 0);
        assert!(H5Tset_fields(t, 15, 7, 8, 0, 7) >= 0);
        assert!(H5Tset_precision(t, 16) >= 0);
        assert!(H5Tset_size(t, 2) >= 0);
        assert!(H5Tset_ebias(t, 127) >= 0);
        hdf5::from_id(t).unwrap()
    }
}

const BF16_VALUES: [f32; 12] = [
    1.0, -2.5, 0.15625, 3.0e4, -0.0, 7.0, 0.5, -1.0, 2.0, 4.0, 8.0, 16.0,
];

fn write_sample(path: &Path) {
    let file = hdf5::File::create(path).unwrap();
    file.new_attr::<VarLenUnicode>()
        .create("creator")
        .unwrap()
        .write_scalar(&"azimuth".parse::<VarLenUnicode>().unwrap())
        .unwrap();
    file.new_attr::<i32>()
        .create("epoch")
        .unwrap()
        .write_scalar(&-3)
        .unwrap();
    let many: Vec<f64> = (0..20).map(|i| i as f64 * 0.5).collect();
    file.new_attr::<f64>()
        .shape(20)
        .create("schedule")
        .unwrap()
        .write_raw(&many)
        .unwrap();
    file.new_attr::<FixedAscii<8>>()
        .create("tag")
        .unwrap()
        .write_scalar(&FixedAscii::<8>::from_ascii("run-1").unwrap())
        .unwrap();
    let movie = file.create_group("movie").unwrap();
    movie
        .new_attr::<f32>()
        .create("lr")
        .unwrap()
        .write_scalar(&0.1f32)
        .unwrap();

    // Chunked, shuffled, deflated f32 with an unlimited first axis, grown to 5 snapshots.
    let snaps = movie
        .new_dataset::<f32>()
        .chunk((1, 4, 3))
        .shape((0.., 4, 3))
        .shuffle()
        .deflate(4)
        .create("snapshots")
        .unwrap();
    snaps.resize((5, 4, 3)).unwrap();
    let data = Array3::from_shape_fn((5, 4, 3), |(a, b, c)| (a * 100 + b * 10 + c) as f32);
    snaps.write(&data).unwrap();

    // bf16 as a custom float, written as raw bits with the same type as the memory type.
    let bt = bf16_type();
    let w = movie
        .new_dataset_builder()
        .empty_as(&bt)
        .shape((3, 4))
        .create("w")
        .unwrap();
    let bits: Vec<u16> = BF16_VALUES
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect();
    {
        let _lock = hdf5_sys::LOCK.lock();
        let rc = unsafe {
            hdf5_sys::h5d::H5Dwrite(
                w.id(),
                bt.id(),
                hdf5_sys::h5s::H5S_ALL,
                hdf5_sys::h5s::H5S_ALL,
                hdf5_sys::h5p::H5P_DEFAULT,
                bits.as_ptr().cast(),
            )
        };
        assert!(rc >= 0);
    }

    // The other convention: u16 bits plus a dtype attribute.
    let legacy = file.new_dataset::<u16>().shape(4).create("legacy").unwrap();
    legacy.write_raw(&bits[..4]).unwrap();
    legacy
        .new_attr::<VarLenUnicode>()
        .create("dtype")
        .unwrap()
        .write_scalar(&"bfloat16".parse::<VarLenUnicode>().unwrap())
        .unwrap();

    // 1e12 elements declared, nothing written: reading it would need 4 TB.
    file.new_dataset::<f32>()
        .chunk((1000, 1000))
        .shape((1_000_000, 1_000_000))
        .create("huge")
        .unwrap();

    file.link_soft("/movie/w", "latest").unwrap();
    file.link_hard("/movie", "alias").unwrap();
    file.link_external("other.h5", "/x", "elsewhere").unwrap();
    file.flush().unwrap();
}

fn sample(dir: &Path) -> PathBuf {
    let path = dir.join("sample.h5");
    write_sample(&path);
    path
}

fn child<'a>(node: &'a Hdf5Node, name: &str) -> &'a Hdf5Node {
    match &node.kind {
        Hdf5Kind::Group { children } => children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no `{name}` in `{}`", node.path)),
        _ => panic!("`{}` is not a group", node.path),
    }
}

fn dataset(node: &Hdf5Node) -> &Hdf5Dataset {
    match &node.kind {
        Hdf5Kind::Dataset(d) => d,
        other => panic!("`{}` is {other:?}", node.path),
    }
}

fn attr<'a>(node: &'a Hdf5Node, name: &str) -> &'a Hdf5Attribute {
    node.attributes
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no @{name} on `{}`", node.path))
}

#[test]
fn the_bf16_custom_float_reads_back_as_f32_exactly() {
    // The writer side of stack.md §6, checked once here so the inspection test stands on it.
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let file = hdf5::File::open(&path).unwrap();
    let back: Vec<f32> = file.dataset("movie/w").unwrap().read_raw().unwrap();
    let want: Vec<f32> = BF16_VALUES
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect();
    assert_eq!(back, want);
}

#[test]
fn tree_lists_groups_datasets_links_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let root = hdf5_tree(&sample(dir.path())).unwrap();
    assert_eq!((root.path.as_str(), root.name.as_str()), ("/", "/"));
    let names: Vec<&str> = match &root.kind {
        Hdf5Kind::Group { children } => children.iter().map(|c| c.name.as_str()).collect(),
        _ => panic!(),
    };
    assert_eq!(
        names,
        ["alias", "elsewhere", "huge", "latest", "legacy", "movie"],
        "sorted by name"
    );

    // Root attributes: sorted, typed, values as text; arrays cut after 16.
    let attr_names: Vec<&str> = root.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(attr_names, ["creator", "epoch", "schedule", "tag"]);
    assert_eq!(attr(&root, "creator").value, "\"azimuth\"");
    assert_eq!(attr(&root, "creator").dtype, "string (variable, utf-8)");
    assert_eq!(
        (
            attr(&root, "epoch").dtype.as_str(),
            attr(&root, "epoch").value.as_str()
        ),
        ("i32", "-3")
    );
    let sched = attr(&root, "schedule");
    assert_eq!(
        (sched.dtype.as_str(), sched.shape.as_slice()),
        ("f64", &[20u64][..])
    );
    assert_eq!(
        sched.value,
        "[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, … (20 values)]"
    );
    assert_eq!(attr(&root, "tag").value, "\"run-1\"");
    assert_eq!(attr(&root, "tag").dtype, "string (fixed 8, ascii)");

    // The hard-linked group appears once in full; the second name points back to it.
    let alias = child(&root, "alias");
    let movie = child(&root, "movie");
    let (full, back) = if matches!(alias.kind, Hdf5Kind::Group { .. }) {
        (alias, movie)
    } else {
        (movie, alias)
    };
    assert_eq!(
        back.kind,
        Hdf5Kind::HardLink {
            target: full.path.clone()
        }
    );
    assert_eq!(attr(full, "lr").value, "0.1");
    assert_eq!(attr(full, "lr").dtype, "f32");

    let snaps = dataset(child(full, "snapshots"));
    assert_eq!(snaps.dtype, "f32");
    assert_eq!(snaps.space, "simple");
    assert_eq!(snaps.shape, [5, 4, 3]);
    assert_eq!(snaps.max_shape, [None, Some(4), Some(3)]);
    assert_eq!(snaps.layout, "chunked");
    assert_eq!(snaps.chunks.as_deref(), Some(&[1u64, 4, 3][..]));
    assert_eq!(snaps.filters, ["shuffle", "deflate(4)"]);
    assert!(
        snaps.storage_size > 0 && snaps.storage_size < 5 * 4 * 3 * 4 + 64,
        "{}",
        snaps.storage_size
    );

    let w = dataset(child(full, "w"));
    assert_eq!((w.dtype.as_str(), w.element_size), ("bf16", 2));
    assert_eq!(
        (w.shape.as_slice(), w.layout.as_str(), w.chunks.is_none()),
        (&[3u64, 4][..], "contiguous", true)
    );
    assert_eq!(w.storage_size, 24);

    let legacy = child(&root, "legacy");
    assert_eq!(dataset(legacy).dtype, "bf16 (u16 + dtype attr)");
    assert_eq!(attr(legacy, "dtype").value, "\"bfloat16\"");

    let huge = dataset(child(&root, "huge"));
    assert_eq!(huge.shape, [1_000_000, 1_000_000]);
    assert_eq!(huge.storage_size, 0);

    assert_eq!(
        child(&root, "latest").kind,
        Hdf5Kind::SoftLink {
            target: "/movie/w".into()
        }
    );
    assert_eq!(
        child(&root, "elsewhere").kind,
        Hdf5Kind::ExternalLink {
            file: "other.h5".into(),
            target: "/x".into()
        }
    );

    // Serializable as JSON (for `azimuth show --json`).
    let json = serde_json::to_value(&root).unwrap();
    assert_eq!(json["type"], "group");
    assert!(json["children"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "soft_link"));
}

#[test]
fn rendering_is_one_line_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let text = render_hdf5_tree(&hdf5_tree(&sample(dir.path())).unwrap());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/  group");
    assert!(lines.contains(&"  @epoch  i32  = -3"), "{text}");
    assert!(
        lines.contains(&"  /latest  soft link -> /movie/w"),
        "{text}"
    );
    assert!(
        lines.contains(&"  /elsewhere  external link -> other.h5:/x"),
        "{text}"
    );
    assert!(
        lines.contains(
            &"  /huge  dataset  f32  (1000000, 1000000)  chunks (1000, 1000)  stored 0 B"
        ),
        "{text}"
    );
    assert!(
        lines
            .contains(&"  /legacy  dataset  bf16 (u16 + dtype attr)  (4,)  contiguous  stored 8 B"),
        "{text}"
    );
    let snaps = lines
        .iter()
        .find(|l| l.contains("/snapshots  dataset"))
        .expect(&text);
    assert!(
        snaps.trim_start().starts_with("/") && snaps.contains("  dataset  f32  (5, 4, 3) max (∞, 4, 3)  chunks (1, 4, 3)  deflate(4)+shuffle  stored "),
        "{snaps}"
    );
    let w = lines
        .iter()
        .find(|l| l.contains("/w  dataset"))
        .expect(&text);
    assert!(
        w.ends_with("  dataset  bf16  (3, 4)  contiguous  stored 24 B"),
        "{w}"
    );
    assert_eq!(text.matches('\n').count(), lines.len());
}

#[test]
fn truncated_tiny_and_garbage_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(sample(dir.path())).unwrap();
    for (name, bytes) in [
        ("half.h5", good[..good.len() / 2].to_vec()),
        ("hundred.h5", good[..100].to_vec()),
        ("empty.h5", vec![]),
        (
            "garbage.h5",
            (0..50_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = hdf5_tree(&path).expect_err(name);
        assert!(err.contains(name), "{name}: {err}");
        assert!(
            err.contains("not a readable HDF5 file") || err.contains("damaged"),
            "{name}: {err}"
        );
    }
}
