//! Tests of the `movie` family: the "azimuth-movie" HDF5 format (`azimuth_stages::movie::format`:
//! exact bit round trips, streaming, byte-identical files, atomic writes, clear errors, `show`
//! inspection, write speed) and the `movie.*` analyses on small planted movies whose answers are
//! known exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use azimuth_stages::movie::format::{MOTION_CAP, RESERVED_ATTRS};
use azimuth_stages::movie::{
    lattice_motion_bf16, lattice_motion_f32, AttrValue, Movie, MovieDtype, MovieHeader, MovieWriter,
};

/// A tiny deterministic generator (xorshift64*), so tests need no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// bf16 patterns with every awkward kind of value mixed in: ±0, subnormals, ±inf, quiet and
/// signalling NaNs with payloads, and random patterns.
fn awkward_bits(n: usize, seed: u64) -> Vec<u16> {
    const SPECIAL: [u16; 10] = [
        0x0000, 0x8000, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC1, 0xFFC3, 0x7F81, 0x3F80,
    ];
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| {
            if i % 7 == 3 {
                SPECIAL[(rng.next() % SPECIAL.len() as u64) as usize]
            } else {
                rng.next() as u16
            }
        })
        .collect()
}

fn header(
    v: usize,
    d: usize,
    rows: Vec<i64>,
    steps: Vec<i64>,
    t: usize,
    dead: Vec<i64>,
) -> MovieHeader {
    let mut attrs = BTreeMap::new();
    attrs.insert("seed".to_string(), AttrValue::Int(42));
    attrs.insert("learning_rate".to_string(), AttrValue::Float(1e-3));
    attrs.insert(
        "protocol".to_string(),
        AttrValue::Str("P1 pure bf16".into()),
    );
    MovieHeader {
        vocab_size: v,
        dim: d,
        rows,
        dtype: MovieDtype::Bf16,
        snapshot_steps: steps,
        train_steps: t,
        dead_ids: dead,
        h_mean: false,
        attrs,
    }
}

/// Writes a bf16 movie whose snapshot s is `snaps[s]`, with loss = 10 − t/10, lr = t, grad
/// norm = 2t, and dead motion from `motion(t, i)` = (l1, l2, linf).
fn write_bf16_movie(
    path: &Path,
    h: MovieHeader,
    snaps: &[Vec<u16>],
    motion: impl Fn(usize, usize) -> (f32, f32, f32),
) {
    let steps = h.snapshot_steps.clone();
    let (t, n_dead, d, hm) = (h.train_steps, h.dead_ids.len(), h.dim, h.h_mean);
    let mut w = MovieWriter::create(path, h).unwrap();
    let mut next_snap = 0;
    for step in 0..=t {
        if step > 0 {
            w.step(
                step,
                10.0 - step as f32 / 10.0,
                step as f32,
                2.0 * step as f32,
            )
            .unwrap();
            let m: Vec<_> = (0..n_dead).map(|i| motion(step, i)).collect();
            let l1: Vec<f32> = m.iter().map(|x| x.0).collect();
            let l2: Vec<f32> = m.iter().map(|x| x.1).collect();
            let li: Vec<f32> = m.iter().map(|x| x.2).collect();
            w.dead_motion(step, &l1, &l2, &li).unwrap();
            if hm {
                let h: Vec<f32> = (0..d).map(|j| (step * 100 + j) as f32).collect();
                w.h_mean(step, &h).unwrap();
            }
        }
        if next_snap < steps.len() && steps[next_snap] == step as i64 {
            w.snapshot_bf16(step as i64, &snaps[next_snap]).unwrap();
            next_snap += 1;
        }
    }
    w.finish().unwrap();
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bf16_bits_snapshots_and_trajectories_round_trip_exactly() {
    let dir = tmp();
    let path = dir.path().join("m.h5");
    // S = 19 and R = 21 are not multiples of the 16-wide chunks: partial chunks on both axes.
    let (s, r, d) = (19usize, 21usize, 3usize);
    let snaps: Vec<Vec<u16>> = (0..s).map(|i| awkward_bits(r * d, 7 + i as u64)).collect();
    let rows: Vec<i64> = (0..r as i64).map(|i| 2 * i + 1).collect();
    let h = header(
        50,
        d,
        rows.clone(),
        (0..s as i64).collect(),
        s - 1,
        vec![3, 5, 49],
    );
    write_bf16_movie(&path, h, &snaps, |t, i| (t as f32, i as f32, 0.5));
    assert_eq!(entries(dir.path()), ["m.h5"], "no temporary file is left");

    let m = Movie::open(&path).unwrap();
    assert_eq!(m.snapshot_count(), s);
    assert_eq!(m.rows(), rows.as_slice());
    assert_eq!(m.steps(), (0..s as i64).collect::<Vec<_>>().as_slice());
    assert_eq!(m.dead_ids(), [3, 5, 49]);
    let mask = m.dead_mask();
    assert_eq!(mask.len(), 50);
    assert_eq!(mask.iter().map(|&x| x as usize).sum::<usize>(), 3);
    assert_eq!((mask[3], mask[5], mask[49], mask[4]), (1, 1, 1, 0));
    assert_eq!(m.header().dtype, MovieDtype::Bf16);
    assert_eq!(m.header().dim, d);
    assert_eq!(m.header().train_steps, s - 1);
    assert_eq!(m.attrs().get("seed"), Some(&AttrValue::Int(42)));
    assert_eq!(
        m.attrs().get("learning_rate"),
        Some(&AttrValue::Float(1e-3))
    );
    assert_eq!(
        m.attrs().get("protocol"),
        Some(&AttrValue::Str("P1 pure bf16".into()))
    );
    assert!(RESERVED_ATTRS.iter().all(|k| !m.attrs().contains_key(*k)));
    for (i, snap) in snaps.iter().enumerate() {
        assert_eq!(&m.snapshot_bits(i).unwrap(), snap, "snapshot {i}");
        let widened = m.snapshot_f32(i).unwrap();
        let want: Vec<u32> = snap.iter().map(|&b| (b as u32) << 16).collect();
        assert_eq!(
            widened.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want
        );
    }
    for row in [0, 7, r - 1] {
        let traj = m.trajectory_f32(row).unwrap();
        assert_eq!(traj.len(), s * d);
        for (si, snap) in snaps.iter().enumerate() {
            for j in 0..d {
                assert_eq!(
                    traj[si * d + j].to_bits(),
                    (snap[row * d + j] as u32) << 16,
                    "row {row} snapshot {si} coordinate {j}"
                );
            }
        }
    }
    assert!(m.snapshot_bits(s).unwrap_err().contains("does not exist"));
    assert!(m.trajectory_f32(r).unwrap_err().contains("does not exist"));
}

#[test]
fn series_dead_motion_last_motion_and_h_mean_stream_in_several_chunks() {
    let dir = tmp();
    let path = dir.path().join("long.h5");
    // 100 dead rows: 655 steps per motion chunk, so T = 1500 spans three chunks; h_mean (D = 2)
    // uses 1024-step chunks, two of them.
    let (t, d) = (1500usize, 2usize);
    let dead: Vec<i64> = (0..100).collect();
    let steps = vec![0, 700, 1500];
    let snaps: Vec<Vec<u16>> = (0..3).map(|i| awkward_bits(d, i)).collect();
    let mut h = header(120, d, vec![0], steps, t, dead);
    h.h_mean = true;
    // Row i moves at steps that are multiples of (i + 1), up to step 10·(i + 1); row 99 never.
    let motion = |step: usize, i: usize| {
        if i < 99 && step % (i + 1) == 0 && step <= 10 * (i + 1) {
            (step as f32, 0.25, i as f32)
        } else {
            (0.0, 0.0, 0.0)
        }
    };
    write_bf16_movie(&path, h, &snaps, motion);
    let m = Movie::open(&path).unwrap();
    let loss = m.series("loss").unwrap().unwrap();
    let lr = m.series("lr").unwrap().unwrap();
    let gn = m.series("grad_norm").unwrap().unwrap();
    assert_eq!(loss.len(), t + 1);
    assert!(loss[0].is_nan() && lr[0].is_nan() && gn[0].is_nan());
    assert_eq!((loss[1], lr[1], gn[1]), (9.9, 1.0, 2.0));
    assert_eq!(
        (loss[t], lr[t], gn[t]),
        (10.0 - 150.0, t as f32, 2.0 * t as f32)
    );
    assert!(m
        .series("perplexity")
        .unwrap_err()
        .contains("unknown series"));
    let (l1, l2, li) = m.dead_motion().unwrap();
    assert_eq!(l1.len(), t * 100);
    for step in 1..=t {
        for i in 0..100 {
            let (a, b, c) = motion(step, i);
            let k = (step - 1) * 100 + i;
            assert_eq!((l1[k], l2[k], li[k]), (a, b, c), "step {step} row {i}");
        }
    }
    let last = m.last_motion_step().unwrap();
    for (i, &l) in last.iter().enumerate() {
        let want = if i == 99 { -1 } else { 10 * (i as i32 + 1) };
        assert_eq!(l, want, "dead row {i}");
    }
    let hm = m.h_mean().unwrap().unwrap();
    assert_eq!(hm.len(), t * d);
    assert_eq!(
        (hm[0], hm[1], hm[(t - 1) * d + 1]),
        (100.0, 101.0, (t * 100 + 1) as f32)
    );
    assert_eq!(m.snapshot_bits(1).unwrap(), snaps[1]);
}

#[test]
fn f32_movies_round_trip_and_refuse_bit_reads() {
    let dir = tmp();
    let path = dir.path().join("f.h5");
    let mut h = header(4, 2, vec![1, 2], vec![0, 1], 1, vec![1]);
    h.dtype = MovieDtype::F32;
    let mut w = MovieWriter::create(&path, h).unwrap();
    let err = w.snapshot_bf16(0, &[0; 4]).unwrap_err();
    assert!(err.contains("F32") && err.contains("f.h5"), "{err}");
    w.snapshot_f32(0, &[1.5, -0.0, f32::MIN_POSITIVE / 4.0, 3.0])
        .unwrap();
    w.step(1, 2.0, 1e-3, 0.5).unwrap();
    w.dead_motion(1, &[4.0], &[2.0], &[1.0]).unwrap();
    w.snapshot_f32(1, &[f32::NAN, 1e30, -7.25, 0.1]).unwrap();
    w.finish().unwrap();
    let m = Movie::open(&path).unwrap();
    assert_eq!(m.header().dtype, MovieDtype::F32);
    let s0 = m.snapshot_f32(0).unwrap();
    assert_eq!(
        s0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        [1.5f32, -0.0, f32::MIN_POSITIVE / 4.0, 3.0]
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(m.trajectory_f32(1).unwrap()[2..], [-7.25, 0.1]);
    assert!(m.snapshot_bits(0).unwrap_err().contains("snapshot_f32"));
    assert_eq!(m.last_motion_step().unwrap(), [1]);
}

/// The same data written twice gives byte-identical files (no modification times, no other
/// varying bytes), and a different value gives a different file.
#[test]
fn two_writes_of_the_same_movie_are_byte_identical() {
    let dir = tmp();
    let snaps: Vec<Vec<u16>> = (0..20).map(|i| awkward_bits(17 * 4, 100 + i)).collect();
    let mk = |name: &str, seed: i64| -> PathBuf {
        let p = dir.path().join(name);
        let mut h = header(
            30,
            4,
            (0..17).collect(),
            (0..20).collect(),
            19,
            vec![0, 1, 29],
        );
        h.h_mean = true;
        h.attrs.insert("run".into(), AttrValue::Int(seed));
        write_bf16_movie(&p, h, &snaps, |t, i| ((t * i) as f32, 1.0, 1.0));
        p
    };
    let a = mk("a.h5", 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = mk("b.h5", 1);
    let c = mk("c.h5", 2);
    let (ba, bb, bc) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert!(ba == bb, "two writes of the same movie differ");
    assert!(ba != bc, "a different attribute must change the file");
}

#[test]
fn a_writer_dropped_or_failing_leaves_no_file_behind() {
    let dir = tmp();
    let path = dir.path().join("gone.h5");
    {
        let mut w =
            MovieWriter::create(&path, header(8, 2, vec![0, 1], vec![0, 1], 1, vec![])).unwrap();
        w.snapshot_bf16(0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            entries(dir.path()).len(),
            1,
            "the temporary sibling exists while writing"
        );
        assert!(!path.exists());
        // dropped here, as on an error path
    }
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    let mut w =
        MovieWriter::create(&path, header(8, 2, vec![0, 1], vec![0, 1], 2, vec![5])).unwrap();
    w.snapshot_bf16(0, &[1, 2, 3, 4]).unwrap();
    w.step(1, 1.0, 1.0, 1.0).unwrap();
    let err = w.finish().unwrap_err();
    assert!(
        err.contains("snapshots (1 of 2)")
            && err.contains("step() calls (1 of 2)")
            && err.contains("dead_motion() calls (0 of 2)"),
        "{err}"
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn bad_headers_and_out_of_order_calls_get_clear_errors() {
    let dir = tmp();
    let p = dir.path().join("x.h5");
    let bad = |h: MovieHeader, want: &str| {
        let err = MovieWriter::create(&p, h).err().expect("must fail");
        assert!(err.contains(want) && err.contains("x.h5"), "{err}");
    };
    bad(
        header(8, 2, vec![1, 1], vec![0], 0, vec![]),
        "rows must be strictly increasing",
    );
    bad(header(8, 2, vec![8], vec![0], 0, vec![]), "rows[0] = 8");
    bad(header(8, 2, vec![], vec![0], 0, vec![]), "rows is empty");
    bad(
        header(8, 2, vec![0], vec![0, 3], 2, vec![]),
        "snapshot_steps[1] = 3",
    );
    bad(
        header(8, 2, vec![0], vec![], 2, vec![]),
        "snapshot_steps is empty",
    );
    bad(
        header(8, 2, vec![0], vec![0], 2, vec![-1]),
        "dead_ids[0] = -1",
    );
    bad(header(8, 0, vec![0], vec![0], 2, vec![]), "dim (0)");
    let mut h = header(8, 2, vec![0], vec![0], 0, vec![]);
    h.attrs.insert("vocab_size".into(), AttrValue::Int(3));
    bad(h, "written by the movie format itself");
    assert!(entries(dir.path()).is_empty());

    let mut w = MovieWriter::create(&p, header(8, 2, vec![0], vec![0, 2], 2, vec![1, 2])).unwrap();
    assert!(w
        .snapshot_bf16(1, &[0, 0])
        .unwrap_err()
        .contains("must be of step 0"));
    assert!(w
        .snapshot_bf16(0, &[0; 3])
        .unwrap_err()
        .contains("R × D = 1 × 2 = 2"));
    assert!(w
        .step(2, 0.0, 0.0, 0.0)
        .unwrap_err()
        .contains("expects step 1"));
    assert!(w
        .dead_motion(1, &[0.0], &[0.0, 0.0], &[0.0, 0.0])
        .unwrap_err()
        .contains("n_dead = 2"));
    assert!(w
        .h_mean(1, &[0.0, 0.0])
        .unwrap_err()
        .contains("h_mean = false"));
    w.step(1, 0.0, 0.0, 0.0).unwrap();
    w.step(2, 0.0, 0.0, 0.0).unwrap();
    assert!(w.step(3, 0.0, 0.0, 0.0).unwrap_err().contains("1..=2"));
}

#[test]
fn non_movies_and_other_versions_are_refused_with_clear_errors() {
    let dir = tmp();
    let missing = dir.path().join("absent.h5");
    assert!(Movie::open(&missing)
        .unwrap_err()
        .contains("does not exist"));

    let text = dir.path().join("text.h5");
    std::fs::write(&text, "not hdf5 at all").unwrap();
    let err = Movie::open(&text).unwrap_err();
    assert!(
        err.contains("text.h5") && err.contains("not a readable HDF5 file"),
        "{err}"
    );

    let plain = dir.path().join("plain.h5");
    {
        let f = hdf5::File::create(&plain).unwrap();
        f.new_dataset::<f32>().shape(3).create("W").unwrap();
    }
    let err = Movie::open(&plain).unwrap_err();
    assert!(
        err.contains("plain.h5") && err.contains("no `format` attribute"),
        "{err}"
    );

    let other = dir.path().join("other.h5");
    {
        let f = hdf5::File::create(&other).unwrap();
        let s: hdf5::types::VarLenUnicode = "azimuth-movie".parse().unwrap();
        f.new_attr::<hdf5::types::VarLenUnicode>()
            .create("format")
            .unwrap()
            .write_scalar(&s)
            .unwrap();
        f.new_attr::<u32>()
            .create("format_version")
            .unwrap()
            .write_scalar(&2)
            .unwrap();
    }
    let err = Movie::open(&other).unwrap_err();
    assert!(
        err.contains("other.h5") && err.contains("format_version 2"),
        "{err}"
    );

    // A real movie with a dataset removed is reported as incomplete.
    let cut = dir.path().join("cut.h5");
    write_bf16_movie(
        &cut,
        header(4, 1, vec![0], vec![0], 0, vec![]),
        &[vec![0x3F80]],
        |_, _| (0.0, 0.0, 0.0),
    );
    hdf5::File::open_rw(&cut).unwrap().unlink("lr").unwrap();
    let err = Movie::open(&cut).unwrap_err();
    assert!(err.contains("`/lr` is missing"), "{err}");
}

/// `azimuth show` (header-only inspection) understands a movie: bf16 type, chunking, attributes.
#[test]
fn inspection_shows_the_movie_layout() {
    use azimuth_stage_api::inspect::{hdf5_tree, Hdf5Kind};
    let dir = tmp();
    let path = dir.path().join("show.h5");
    let snaps: Vec<Vec<u16>> = (0..3).map(|i| awkward_bits(40 * 2, i)).collect();
    write_bf16_movie(
        &path,
        header(64, 2, (0..40).collect(), vec![0, 1, 2], 2, vec![7]),
        &snaps,
        |_, _| (1.0, 1.0, 1.0),
    );
    let tree = hdf5_tree(&path).unwrap();
    let Hdf5Kind::Group { children } = &tree.kind else {
        panic!("root is a group")
    };
    let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "W",
            "dead_ids",
            "dead_mask",
            "dead_motion",
            "grad_norm",
            "last_motion_step",
            "loss",
            "lr",
            "rows",
            "steps"
        ]
    );
    let Hdf5Kind::Dataset(w) = &children[0].kind else {
        panic!("W is a dataset")
    };
    assert_eq!(w.dtype, "bf16");
    assert_eq!(w.shape, [3, 40, 2]);
    assert_eq!(w.chunks.as_deref(), Some(&[3u64, 16, 2][..]));
    assert!(w.filters.is_empty());
    let attrs: Vec<(&str, &str)> = tree
        .attributes
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str()))
        .collect();
    assert!(
        attrs.contains(&("format", "\"azimuth-movie\"")),
        "{attrs:?}"
    );
    assert!(attrs.contains(&("format_version", "1")), "{attrs:?}");
    assert!(attrs.contains(&("vocab_size", "64")), "{attrs:?}");
}

#[test]
fn lattice_motion_counts_cells_at_the_starting_value() {
    let one = 0x3F80u16; // 1.0, ULP 2^-7
    let rows_prev = [one, one, 0x0000, 0x3F80, 0x7FC0, 0xC000];
    // +1 cell; down across the power of two (0.99609375 = 1 - 2^-8: half a cell of 1.0);
    // 0 -> smallest subnormal (1 cell at ULP 2^-133); 1.0 unchanged; NaN -> 1.0 (cap); -2 -> -3
    // (ULP(2) = 2^-6, -3 - -2 = -1 = 64 cells).
    let rows_next = [0x3F81, 0x3F7F, 0x0001, 0x3F80, one, 0xC040];
    let (mut l1, mut l2, mut li) = ([0f32; 2], [0f32; 2], [0f32; 2]);
    lattice_motion_bf16(&rows_prev, &rows_next, 3, &mut l1, &mut l2, &mut li);
    assert_eq!(l1[0], 2.5);
    assert_eq!(l2[0], (1.0f64 + 0.25 + 1.0).sqrt() as f32);
    assert_eq!(li[0], 1.0);
    let cap = MOTION_CAP as f32;
    assert_eq!(l1[1], cap + 64.0);
    assert_eq!(li[1], cap);
    // Leaving an exact zero for 1.0 would be 2^133 cells: clipped to the cap.
    let (mut a, mut b, mut c) = ([0f32], [0f32], [0f32]);
    lattice_motion_bf16(&[0x0000, 0x8000], &[one, 0x0000], 2, &mut a, &mut b, &mut c);
    assert_eq!(
        (a[0], c[0]),
        (cap, cap),
        "-0 -> +0 is no motion, 0 -> 1 is the cap"
    );
    // Frozen rows give exactly zero.
    lattice_motion_bf16(
        &[0x1234, 0x4321],
        &[0x1234, 0x4321],
        2,
        &mut a,
        &mut b,
        &mut c,
    );
    assert_eq!((a[0], b[0], c[0]), (0.0, 0.0, 0.0));
    // f32: ULP(1.0) = 2^-23.
    lattice_motion_f32(
        &[1.0, 0.0],
        &[1.0 + 3.0 * f32::EPSILON, 0.0],
        2,
        &mut a,
        &mut b,
        &mut c,
    );
    assert_eq!((a[0], c[0]), (3.0, 3.0));
}

/// Recording every step of a 256 × 64 bf16 W (snapshot, lattice motion of 64 dead rows, loss)
/// costs well under a millisecond per step.
#[test]
fn recording_every_step_of_a_small_w_is_fast() {
    let dir = tmp();
    let path = dir.path().join("fast.h5");
    let (v, d, t) = (256usize, 64usize, 400usize);
    let dead: Vec<i64> = (0..64).map(|i| 4 * i).collect();
    let h = header(
        v,
        d,
        (0..v as i64).collect(),
        (0..=t as i64).collect(),
        t,
        dead.clone(),
    );
    let mut w = MovieWriter::create(&path, h).unwrap();
    let mut cur = awkward_bits(v * d, 9);
    let start = std::time::Instant::now();
    w.snapshot_bf16(0, &cur).unwrap();
    let (mut l1, mut l2, mut li) = (vec![0f32; 64], vec![0f32; 64], vec![0f32; 64]);
    let (mut pd, mut nd) = (vec![0u16; 64 * d], vec![0u16; 64 * d]);
    for step in 1..=t {
        for (k, &id) in dead.iter().enumerate() {
            pd[k * d..(k + 1) * d].copy_from_slice(&cur[id as usize * d..(id as usize + 1) * d]);
        }
        for (j, b) in cur.iter_mut().enumerate() {
            if (j + step) % 5 == 0 {
                *b = b.wrapping_add(1);
            }
        }
        for (k, &id) in dead.iter().enumerate() {
            nd[k * d..(k + 1) * d].copy_from_slice(&cur[id as usize * d..(id as usize + 1) * d]);
        }
        lattice_motion_bf16(&pd, &nd, d, &mut l1, &mut l2, &mut li);
        w.step(step, 1.0, 1e-3, 1.0).unwrap();
        w.dead_motion(step, &l1, &l2, &li).unwrap();
        w.snapshot_bf16(step as i64, &cur).unwrap();
    }
    w.finish().unwrap();
    let per_step = start.elapsed().as_secs_f64() / t as f64;
    eprintln!("movie recording: {:.1} µs per step", per_step * 1e6);
    assert!(per_step < 1e-3, "{per_step} s per step");
    let m = Movie::open(&path).unwrap();
    assert_eq!(m.snapshot_bits(t).unwrap(), cur);
}

// ---------------------------------------------------------------------------------------------
// The analyses, on planted movies.

use azimuth_stages::StageContext;
use serde_json::{json, Value};

/// bf16 bits of an exactly representable value.
fn b(x: f32) -> u16 {
    let bits = half::bf16::from_f32(x).to_bits();
    assert_eq!(
        half::bf16::from_bits(bits).to_f32(),
        x,
        "{x} is not a bf16 value"
    );
    bits
}

/// Runs stage `name` with the given inputs (several files per port allowed) and returns every
/// output's bytes, by port name.
fn run_stage(
    name: &str,
    params: Value,
    inputs: &[(&str, Vec<PathBuf>)],
    outputs: &[(&str, &str)],
    threads: usize,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let dir = tmp();
    let ctx = StageContext {
        instance: "probe".into(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(k, ext)| (k.to_string(), dir.path().join(format!("{k}.{ext}"))))
            .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    };
    azimuth_stages::run(name, &ctx).map_err(|e| e.0)?;
    Ok(outputs
        .iter()
        .map(|(k, ext)| {
            let bytes = std::fs::read(dir.path().join(format!("{k}.{ext}"))).unwrap();
            (k.to_string(), bytes)
        })
        .collect())
}

/// Runs a stage with 1 and then 2 threads, checks the outputs are byte-identical, and returns them.
fn run_twice(
    name: &str,
    params: Value,
    inputs: &[(&str, Vec<PathBuf>)],
    outputs: &[(&str, &str)],
) -> BTreeMap<String, Vec<u8>> {
    let a = run_stage(name, params.clone(), inputs, outputs, 1).unwrap();
    let b = run_stage(name, params, inputs, outputs, 2).unwrap();
    assert!(
        a == b,
        "{name}: outputs differ between runs / thread counts"
    );
    for (port, bytes) in &a {
        if port.contains("plot") || port == "stratigraphy" {
            let dec = png::Decoder::new(std::io::Cursor::new(bytes.clone()));
            let reader = dec.read_info().unwrap();
            // 8 × 4.8 in at 200 DPI, and the PNG says so (pHYs in pixels per metre).
            assert_eq!(
                (reader.info().width, reader.info().height),
                (1600, 960),
                "{port}"
            );
            let dims = reader.info().pixel_dims.expect("a pHYs chunk");
            assert_eq!((dims.xppu, dims.yppu, dims.unit), (7874, 7874, png::Unit::Meter));
        }
    }
    a
}

fn text(out: &BTreeMap<String, Vec<u8>>, port: &str) -> String {
    String::from_utf8(out[port].clone()).unwrap()
}

fn json_of(out: &BTreeMap<String, Vec<u8>>, port: &str) -> Value {
    serde_json::from_slice(&out[port]).unwrap()
}

const KIN_OUT: [(&str, &str); 4] = [
    ("table", "csv"),
    ("summary", "json"),
    ("centroid_plot", "png"),
    ("radius_plot", "png"),
];

/// Dead rows 0–3 form a unit cross at the origin, translate by (2, 0) by step 2, then expand
/// ×2 about their centroid by step 4; live rows 4, 5 sit still at (0, 1), (0, 3).
fn kinematics_movie(dir: &Path) -> PathBuf {
    let path = dir.join("kin.h5");
    let frame = |dead: [(f32, f32); 4]| -> Vec<u16> {
        let mut v = Vec::new();
        for (x, y) in dead.into_iter().chain([(0.0, 1.0), (0.0, 3.0)]) {
            v.push(b(x));
            v.push(b(y));
        }
        v
    };
    let snaps = vec![
        frame([(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]),
        frame([(3.0, 0.0), (1.0, 0.0), (2.0, 1.0), (2.0, -1.0)]),
        frame([(4.0, 0.0), (0.0, 0.0), (2.0, 2.0), (2.0, -2.0)]),
    ];
    let h = header(6, 2, (0..6).collect(), vec![0, 2, 4], 4, vec![0, 1, 2, 3]);
    write_bf16_movie(&path, h, &snaps, |_, _| (0.0, 0.0, 0.0));
    path
}

#[test]
fn kinematics_of_a_translating_then_expanding_cloud() {
    let dir = tmp();
    let movie = kinematics_movie(dir.path());
    let out = run_twice(
        "movie.kinematics",
        json!({"slowdown_window": 2}),
        &[("movie", vec![movie.clone()])],
        &KIN_OUT,
    );
    assert_eq!(
        text(&out, "table"),
        "step,centroid_norm,displacement,step_length,mean_radius,max_radius,std_radius,\
         bulk_speed,temperature,mean_token_speed,live_dead_angle_deg\n\
         0,0,0,0,1,1,0,NaN,NaN,NaN,NaN\n\
         2,2,2,2,1,1,0,1,0,1,90\n\
         4,2,2,0,2,2,0,0,0.25,0.5,90\n"
    );
    let s = json_of(&out, "summary");
    assert_eq!(s["format"], 1);
    assert_eq!(s["n_rows"], 4);
    assert_eq!(s["path_length"], 2.0);
    assert_eq!(s["path_efficiency"], 1.0);
    assert_eq!(s["direction_concentration"], 1.0);
    assert_eq!(s["isotropic_concentration"], 1.0 / 2f64.sqrt());
    assert_eq!(s["lift_off_step"], 2);
    assert_eq!(s["slowdown"], 2.0);
    assert_eq!(s["first"]["live_dead_angle_deg"], Value::Null);
    assert_eq!(s["last"]["mean_radius"], 2.0);

    // The live rows never move: zero speeds, no lift-off change, null efficiency.
    let live = run_stage(
        "movie.kinematics",
        json!({"rows": "live"}),
        &[("movie", vec![movie])],
        &KIN_OUT,
        1,
    )
    .unwrap();
    let s = json_of(&live, "summary");
    assert_eq!(
        (s["n_rows"].clone(), s["path_length"].clone()),
        (json!(2), json!(0.0))
    );
    assert_eq!(s["path_efficiency"], Value::Null);
    assert_eq!(s["slowdown"], Value::Null);
    assert_eq!(
        s["lift_off_step"], 0,
        "centroid (0, 2) lies outside the radius-1 cloud"
    );
}

#[test]
fn kinematics_errors_name_the_problem() {
    let dir = tmp();
    // Only live rows recorded, so `rows: dead` has nothing to look at.
    let only_live = dir.path().join("live.h5");
    write_bf16_movie(
        &only_live,
        header(6, 1, vec![4, 5], vec![0, 1], 1, vec![0]),
        &[vec![b(1.0), b(2.0)], vec![b(1.0), b(2.0)]],
        |_, _| (0.0, 0.0, 0.0),
    );
    let err = run_stage(
        "movie.kinematics",
        json!({}),
        &[("movie", vec![only_live])],
        &KIN_OUT,
        1,
    )
    .unwrap_err();
    assert!(
        err.contains("recorded no dead rows") && err.contains("`probe`"),
        "{err}"
    );
    // One snapshot is too few.
    let single = dir.path().join("single.h5");
    write_bf16_movie(
        &single,
        header(4, 1, vec![0], vec![0], 0, vec![0]),
        &[vec![b(1.0)]],
        |_, _| (0.0, 0.0, 0.0),
    );
    let err = run_stage(
        "movie.kinematics",
        json!({}),
        &[("movie", vec![single])],
        &KIN_OUT,
        1,
    )
    .unwrap_err();
    assert!(err.contains("at least 2"), "{err}");
    // Not a movie at all.
    let junk = dir.path().join("junk.h5");
    std::fs::write(&junk, b"junk").unwrap();
    let err = run_stage(
        "movie.kinematics",
        json!({}),
        &[("movie", vec![junk])],
        &KIN_OUT,
        1,
    )
    .unwrap_err();
    assert!(
        err.contains("input `movie`") && err.contains("not an azimuth movie"),
        "{err}"
    );
    let err = run_stage(
        "movie.kinematics",
        json!({"rows": "some"}),
        &[("movie", vec![dir.path().join("x")])],
        &KIN_OUT,
        1,
    )
    .unwrap_err();
    assert!(err.contains("param `rows`"), "{err}");
}

const LC_OUT: [(&str, &str); 6] = [
    ("tokens", "csv"),
    ("populations", "csv"),
    ("summary", "json"),
    ("phases_plot", "png"),
    ("frozen_plot", "png"),
    ("stratigraphy", "png"),
];

/// D = 4 (√D = 2), T = 10, dead tokens 1, 2, 3 with planted lattice motion:
/// token 1: Early at 1, Midlife at 3, Late at 5; token 2: Late at 2, Early at 7; token 3 never.
fn lifecycle_movie(dir: &Path) -> PathBuf {
    let path = dir.join("lc.h5");
    let h = header(8, 4, vec![1], vec![0, 10], 10, vec![1, 2, 3]);
    let snaps = vec![vec![b(1.0); 4], vec![b(1.0); 4]];
    write_bf16_movie(&path, h, &snaps, |t, i| match (i, t) {
        (0, 1) => (100.0, 50.0, 30.0),
        (0, 3) => (3.0, 1.8, 1.5),
        (0, 5) => (1.0, 1.0, 1.0),
        (1, 2) => (1.0, 1.0, 1.0),
        (1, 7) => (20.0, 10.0, 5.0),
        _ => (0.0, 0.0, 0.0),
    });
    path
}

#[test]
fn lifecycle_phases_freeze_times_and_stillness_runs_on_planted_motion() {
    let dir = tmp();
    let movie = lifecycle_movie(dir.path());
    let out = run_twice(
        "movie.lifecycle",
        json!({}),
        &[("movie", vec![movie.clone()])],
        &LC_OUT,
    );
    assert_eq!(
        text(&out, "tokens"),
        "token,last_early,last_midlife,last_late,last_exit_freeze_step,last_motion,freeze_step,\
         frozen_at_end,moved_steps,early_steps,midlife_steps,late_steps,frozen_steps\n\
         1,1,3,5,6,5,6,true,3,1,2,2,5\n\
         2,7,-1,2,8,7,8,true,2,7,0,0,3\n\
         3,-1,-1,-1,1,-1,1,true,0,0,0,0,10\n"
    );
    let pops: Vec<String> = text(&out, "populations")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        pops[0],
        "step,early,midlife,late,frozen,moved,frozen_fraction"
    );
    assert_eq!(pops[1], "1,2,0,0,1,1,0.3333333333333333");
    assert_eq!(pops[2], "2,1,1,0,1,1,0.3333333333333333");
    assert_eq!(pops[4], "4,1,0,1,1,0,0.3333333333333333");
    assert_eq!(pops[6], "6,1,0,0,2,0,0.6666666666666666");
    assert_eq!(pops[8], "8,0,0,0,3,0,1");
    assert_eq!(pops.len(), 11);
    let s = json_of(&out, "summary");
    assert_eq!(s["freeze"], "f2");
    assert_eq!(s["global_last_motion"], 7);
    assert_eq!(s["fimbulwinter_duration"], 3);
    assert_eq!(s["fimbulwinter_fraction"], 0.3);
    assert_eq!(s["moved_at_least_once"], 2);
    assert_eq!(s["last_motion_earliest"], 5);
    assert_eq!(s["last_motion_median"], 6.0);
    assert_eq!(s["final_populations"], json!([0, 0, 0, 3]));
    assert_eq!(
        s["phase_shares"],
        json!([8.0 / 30.0, 2.0 / 30.0, 2.0 / 30.0, 18.0 / 30.0])
    );
    let runs = &s["stillness_runs"];
    assert_eq!(
        (
            runs["count"].clone(),
            runs["longest"].clone(),
            runs["second_longest"].clone()
        ),
        (json!(3), json!(3), json!(1))
    );
    assert_eq!(
        (runs["ratio"].clone(), runs["median"].clone()),
        (json!(3.0), json!(1.0))
    );
    assert_eq!(runs["mean"], 5.0 / 3.0);

    // F1 at 1.5 cells: only L2 ≥ 1.5 counts (token 1 at 1 and 3, token 2 at 7).
    let f1 = run_stage(
        "movie.lifecycle",
        json!({"freeze": "f1", "f1_threshold": 1.5}),
        &[("movie", vec![movie.clone()])],
        &LC_OUT,
        1,
    )
    .unwrap();
    let tokens: Vec<String> = text(&f1, "tokens").lines().map(String::from).collect();
    assert!(
        tokens[1].starts_with("1,1,3,5,6,3,4,true,2,"),
        "{}",
        tokens[1]
    );
    let s = json_of(&f1, "summary");
    assert_eq!(s["threshold"], 1.5);
    assert_eq!(s["stillness_runs"]["longest"], 3);
    assert_eq!(s["stillness_runs"]["second_longest"], 3);
    assert_eq!(s["stillness_runs"]["ratio"], 1.0);

    // F3 needs every-step snapshots.
    let err = run_stage(
        "movie.lifecycle",
        json!({"freeze": "f3"}),
        &[("movie", vec![movie])],
        &LC_OUT,
        1,
    )
    .unwrap_err();
    assert!(err.contains("needs a snapshot at every step"), "{err}");
}

#[test]
fn lifecycle_f3_uses_weight_space_motion_between_every_step_snapshots() {
    let dir = tmp();
    let path = dir.path().join("f3.h5");
    // Dead rows 0 and 1 recorded at every step: row 0 moves one ULP of 1.0 (2^-7 ≥ 1e-4) at
    // step 2; row 1 leaves 0 for 2^-20 at step 1 (an astronomically large lattice move, but a
    // weight-space move of 9.5e-7 < 1e-4).
    let tiny = 2f32.powi(-20);
    let snaps = [
        vec![b(1.0), b(1.0), 0, 0],
        vec![b(1.0), b(1.0), b(tiny), 0],
        vec![b(1.0078125), b(1.0), b(tiny), 0],
        vec![b(1.0078125), b(1.0), b(tiny), 0],
    ];
    let mut w = MovieWriter::create(
        &path,
        header(3, 2, vec![0, 1], vec![0, 1, 2, 3], 3, vec![0, 1]),
    )
    .unwrap();
    w.snapshot_bf16(0, &snaps[0]).unwrap();
    let (mut l1, mut l2, mut li) = ([0f32; 2], [0f32; 2], [0f32; 2]);
    for t in 1..=3 {
        lattice_motion_bf16(&snaps[t - 1], &snaps[t], 2, &mut l1, &mut l2, &mut li);
        w.step(t, 1.0, 1.0, 1.0).unwrap();
        w.dead_motion(t, &l1, &l2, &li).unwrap();
        w.snapshot_bf16(t as i64, &snaps[t]).unwrap();
    }
    w.finish().unwrap();
    let m = Movie::open(&path).unwrap();
    assert_eq!(m.last_motion_step().unwrap(), [2, 1], "F2 sees both moves");
    let out = run_stage(
        "movie.lifecycle",
        json!({"freeze": "f3"}),
        &[("movie", vec![path.clone()])],
        &LC_OUT,
        1,
    )
    .unwrap();
    let tokens: Vec<String> = text(&out, "tokens").lines().map(String::from).collect();
    // Token 0: one cell at step 2 is Late; F3 last motion 2. Token 1: capped Early move at 1,
    // but F3 sees no motion.
    assert!(
        tokens[1].starts_with("0,-1,-1,2,3,2,3,true,1,"),
        "{}",
        tokens[1]
    );
    assert!(
        tokens[2].starts_with("1,1,-1,-1,2,-1,1,true,0,"),
        "{}",
        tokens[2]
    );
    assert_eq!(json_of(&out, "summary")["global_last_motion"], 2);
}

const CENSUS_OUT: [(&str, &str); 3] = [("table", "csv"), ("summary", "json"), ("plot", "png")];

/// A movie of `groups.len()` snapshots of 6 dead rows (ids 0–5, D = 2) plus live row 6; in
/// snapshot s, dead row i is (groups[s][i], 1) — equal labels give identical rows — with
/// label 0 on row 5 of the last snapshot written as −0 (distinct from +0).
fn census_movie(path: &Path, groups: &[[f32; 6]]) {
    let n = groups.len();
    let snaps: Vec<Vec<u16>> = groups
        .iter()
        .enumerate()
        .map(|(s, g)| {
            let mut v = Vec::new();
            for (i, &x) in g.iter().enumerate() {
                v.push(if s == n - 1 && i == 5 && x == 0.0 {
                    0x8000
                } else {
                    b(x)
                });
                v.push(b(1.0));
            }
            v.extend([b(1.0), b(1.0)]); // live row 6 equals row... never a dead row
            v
        })
        .collect();
    let steps: Vec<i64> = (0..n as i64).map(|s| 5 * s).collect();
    let t = 5 * (n - 1);
    write_bf16_movie(
        path,
        header(7, 2, (0..7).collect(), steps, t, (0..6).collect()),
        &snaps,
        |_, _| (0.0, 0.0, 0.0),
    );
}

#[test]
fn census_counts_black_holes_and_fission_per_snapshot() {
    let dir = tmp();
    let path = dir.path().join("census.h5");
    census_movie(
        &path,
        &[
            [1.0; 6],
            [1.0, 1.0, 1.0, 2.0, 2.0, 3.0],
            [1.0, 2.0, 3.0, 4.0, 5.0, 0.0],
            [1.0, 2.0, 3.0, 4.0, 0.0, 0.0],
        ],
    );
    let out = run_twice(
        "movie.census",
        json!({}),
        &[("movie", vec![path.clone()])],
        &CENSUS_OUT,
    );
    assert_eq!(
        text(&out, "table"),
        "step,rows,distinct,black_holes,black_hole_tokens,largest,mean_black_hole_size,singletons\n\
         0,6,1,1,6,6,6,0\n\
         5,6,3,2,5,3,2.5,1\n\
         10,6,6,0,0,1,0,6\n\
         15,6,6,0,0,1,0,6\n"
    );
    let s = json_of(&out, "summary");
    assert_eq!(
        s["fission_events"],
        json!([{"step": 5, "black_holes_before": 1, "black_holes_after": 2}])
    );
    assert_eq!(s["max_black_holes"], 2);
    assert_eq!(s["first"]["largest"], 6);
    // With the live row (equal to dead row 0 at step 0 only) and a population floor of 3.
    let all = run_stage(
        "movie.census",
        json!({"rows": "all", "min_population": 3}),
        &[("movie", vec![path])],
        &CENSUS_OUT,
        1,
    )
    .unwrap();
    let lines: Vec<String> = text(&all, "table").lines().map(String::from).collect();
    assert_eq!(lines[1], "0,7,1,1,7,7,7,0");
    assert_eq!(lines[2], "5,7,3,1,4,4,4,1");
}

#[test]
fn census_compare_reports_means_stds_and_cohens_d() {
    let dir = tmp();
    let mk = |name: &str, first: [f32; 6], last: [f32; 6]| {
        let p = dir.path().join(name);
        census_movie(&p, &[first, last]);
        p
    };
    // Group a: 6 -> 3 and 4 -> 1 distinct dead rows; group b: 2 -> 2 twice.
    let a = vec![
        mk(
            "a0.h5",
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
        ),
        mk("a1.h5", [1.0, 1.0, 2.0, 3.0, 4.0, 4.0], [7.0; 6]),
    ];
    let bb = vec![
        mk(
            "b0.h5",
            [1.0, 1.0, 1.0, 2.0, 2.0, 2.0],
            [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        ),
        mk(
            "b1.h5",
            [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            [3.0, 3.0, 3.0, 3.0, 3.0, 4.0],
        ),
    ];
    let out = run_twice(
        "movie.census_compare",
        json!({}),
        &[("a", a), ("b", bb)],
        &[("table", "csv"), ("summary", "json")],
    );
    assert_eq!(
        text(&out, "table"),
        "group,index,first_step,last_step,rows,first_distinct,last_distinct,change\n\
         a,0,0,5,6,6,3,-3\n\
         a,1,0,5,6,4,1,-3\n\
         b,0,0,5,6,2,2,0\n\
         b,1,0,5,6,2,2,0\n"
    );
    let s = json_of(&out, "summary");
    assert_eq!(s["a"]["first"], json!({"mean": 5.0, "std": 1.0}));
    assert_eq!(s["a"]["last"], json!({"mean": 2.0, "std": 1.0}));
    assert_eq!(s["a"]["change"], json!({"mean": -3.0, "std": 0.0}));
    assert_eq!(s["b"]["movies"], 2);
    assert_eq!(s["cohens_d"]["first"], 3.0 / 0.5f64.sqrt());
    assert_eq!(s["cohens_d"]["last"], 0.0);
    assert_eq!(s["cohens_d"]["change"], Value::Null);
}

#[test]
fn curves_list_every_step_and_plot_three_series() {
    let dir = tmp();
    let path = dir.path().join("curves.h5");
    write_bf16_movie(
        &path,
        header(4, 1, vec![0], vec![0, 3], 3, vec![]),
        &[vec![0], vec![0]],
        |_, _| (0.0, 0.0, 0.0),
    );
    let outs = [
        ("table", "csv"),
        ("loss_plot", "png"),
        ("lr_plot", "png"),
        ("grad_norm_plot", "png"),
    ];
    let out = run_twice("movie.curves", json!({}), &[("movie", vec![path])], &outs);
    assert_eq!(
        text(&out, "table"),
        "step,loss,lr,grad_norm\n1,9.9,1,2\n2,9.8,2,4\n3,9.7,3,6\n"
    );
    assert_ne!(out["loss_plot"], out["lr_plot"]);
    // No training steps: no curves.
    let flat = dir.path().join("flat.h5");
    write_bf16_movie(
        &flat,
        header(4, 1, vec![0], vec![0], 0, vec![]),
        &[vec![0]],
        |_, _| (0.0, 0.0, 0.0),
    );
    let err = run_stage(
        "movie.curves",
        json!({}),
        &[("movie", vec![flat])],
        &outs,
        1,
    )
    .unwrap_err();
    assert!(err.contains("no training steps"), "{err}");
}

/// `movie.hidden_state`: h_mean persistence and the dead swarm's alignment, on a movie whose
/// h_mean[t] = (100t, 100t + 1) and whose dead rows all sit at (−t, −t) at step t, so the dead
/// centroid moves by (−1, −1) each step: against h_mean.
#[test]
fn hidden_state_measures_persistence_and_the_swarm_against_h_mean() {
    let dir = tmp();
    let path = dir.path().join("h.h5");
    let mut h = header(4, 2, vec![0, 1, 2, 3], vec![0, 1, 2, 3], 3, vec![2, 3]);
    h.h_mean = true;
    let minus = [0x0000u16, 0xBF80, 0xC000, 0xC040]; // 0, −1, −2, −3 in bf16
    let snaps: Vec<Vec<u16>> = (0..4)
        .map(|t| vec![0, 0, 0, 0, minus[t], minus[t], minus[t], minus[t]])
        .collect();
    write_bf16_movie(&path, h, &snaps, |_, _| (1.0, 1.0, 1.0));
    let outs = [("table", "csv"), ("summary", "json"), ("plot", "png")];
    let out = run_twice(
        "movie.hidden_state",
        json!({}),
        &[("movie", vec![path])],
        &outs,
    );
    let cos = |a: [f64; 2], b: [f64; 2]| {
        (a[0] * b[0] + a[1] * b[1])
            / ((a[0] * a[0] + a[1] * a[1]).sqrt() * (b[0] * b[0] + b[1] * b[1]).sqrt())
    };
    let hm = |t: f64| [100.0 * t, 100.0 * t + 1.0];
    let s = json_of(&out, "summary");
    let c21 = cos(hm(2.0), hm(1.0));
    let c32 = cos(hm(3.0), hm(2.0));
    assert!((s["cos_prev_mean"].as_f64().unwrap() - (c21 + c32) / 2.0).abs() < 1e-15);
    assert_eq!(s["dead_steps_measured"], 3);
    let swarm: Vec<f64> = (1..=3).map(|t| cos([-1.0, -1.0], hm(t as f64))).collect();
    assert!(
        (s["dead_step_cos_mean"].as_f64().unwrap() - swarm.iter().sum::<f64>() / 3.0).abs() < 1e-15
    );
    assert!(s["dead_step_cos_mean"].as_f64().unwrap() < -0.99);
    assert_eq!(
        s["h_mean_norm_first"].as_f64().unwrap(),
        (100.0f64 * 100.0 + 101.0 * 101.0).sqrt()
    );
    let table = text(&out, "table");
    assert!(
        table.starts_with("step,h_mean_norm,cos_prev,dead_step_cos\n1,"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4);
    // No h_mean recorded: a clear error.
    let bare = dir.path().join("bare.h5");
    write_bf16_movie(
        &bare,
        header(4, 2, vec![0, 1, 2, 3], vec![0, 1], 1, vec![2, 3]),
        &snaps[..2],
        |_, _| (0.0, 0.0, 0.0),
    );
    let err = run_stage(
        "movie.hidden_state",
        json!({}),
        &[("movie", vec![bare])],
        &outs,
        1,
    )
    .unwrap_err();
    assert!(err.contains("no /h_mean"), "{err}");
}
