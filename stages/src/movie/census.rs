//! `movie.census` and `movie.census_compare` (science spec S44; S31 15.2c): black holes — groups
//! of at least `min_population` bit-identical rows (S04) — among the chosen rows (dead by
//! default) at every snapshot of a movie.
//!
//! Identity is decided on raw stored bits (bf16 patterns, or f32 bits for f32 movies), never on
//! float distances, so +0 and −0 rows differ and NaN rows with the same payload agree. Per
//! snapshot: rows, `distinct` rows, `black_holes`, `black_hole_tokens`, `largest` group (a
//! singleton counts as 1), `mean_black_hole_size` (0 without black holes), `singletons`.
//! Fission events are snapshots where the number of black holes rises over the previous one.
//!
//! `movie.census_compare` reads two groups of movies (`a`, `b`) and compares the distinct-row
//! counts at each movie's first and last snapshot: per group the mean and population std of the
//! first, the last and the change (last − first), and for each of them Cohen's d =
//! |mean_a − mean_b| / √((s_a² + s_b²)/2) (null when both stds are 0), as in S31's
//! f32→bf16 vs pure-bf16 control (d = 3.79 there, on the last snapshot).

use serde::Serialize;

use azimuth_stage_api::specs::movie::{CENSUS as SPEC, CENSUS_COMPARE as COMPARE_SPEC};

use super::plot::{line_chart, BLUE, RED};
use super::{csv_line, mean_std, open_single, select_rows, Movie, MovieDtype};
use crate::params::Params;
use crate::{StageContext, StageError};

/// The census of one snapshot.
#[derive(Debug, Clone, Copy, Serialize)]
struct Census {
    step: i64,
    rows: usize,
    distinct: usize,
    black_holes: usize,
    black_hole_tokens: usize,
    largest: usize,
    mean_black_hole_size: f64,
    singletons: usize,
}

/// Sizes of the groups of identical `dim`-long rows in `data` (any order).
fn group_sizes<T: Ord>(data: &[T], dim: usize) -> Vec<usize> {
    let mut rows: Vec<&[T]> = data.chunks_exact(dim).collect();
    rows.sort_unstable();
    let mut sizes = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let mut j = i + 1;
        while j < rows.len() && rows[j] == rows[i] {
            j += 1;
        }
        sizes.push(j - i);
        i = j;
    }
    sizes
}

/// The census of snapshot `s` over the recorded-row indices `picked`.
fn census_at(
    p: &Params<'_>,
    movie: &Movie,
    s: usize,
    picked: &[usize],
    min_pop: usize,
) -> Result<Census, StageError> {
    let d = movie.header().dim;
    let sizes = match movie.header().dtype {
        MovieDtype::Bf16 => {
            let bits = movie.snapshot_bits(s).map_err(|e| p.error(e))?;
            let sel: Vec<u16> = picked
                .iter()
                .flat_map(|&i| bits[i * d..(i + 1) * d].iter().copied())
                .collect();
            group_sizes(&sel, d)
        }
        MovieDtype::F32 => {
            let vals = movie.snapshot_f32(s).map_err(|e| p.error(e))?;
            let sel: Vec<u32> = picked
                .iter()
                .flat_map(|&i| vals[i * d..(i + 1) * d].iter().map(|x| x.to_bits()))
                .collect();
            group_sizes(&sel, d)
        }
    };
    let bh: Vec<usize> = sizes.iter().copied().filter(|&z| z >= min_pop).collect();
    let tokens: usize = bh.iter().sum();
    Ok(Census {
        step: movie.steps()[s],
        rows: picked.len(),
        distinct: sizes.len(),
        black_holes: bh.len(),
        black_hole_tokens: tokens,
        largest: sizes.iter().copied().max().unwrap_or(0),
        mean_black_hole_size: if bh.is_empty() {
            0.0
        } else {
            tokens as f64 / bh.len() as f64
        },
        singletons: sizes.iter().filter(|&&z| z == 1).count(),
    })
}

#[derive(Serialize)]
struct Fission {
    step: i64,
    black_holes_before: usize,
    black_holes_after: usize,
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    rows: String,
    min_population: usize,
    snapshots: usize,
    first: Census,
    last: Census,
    max_black_holes: usize,
    fission_events: Vec<Fission>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let which = p.string("rows")?;
    let min_pop = p.int("min_population")? as usize;
    let outs = (p.output("table")?, p.output("summary")?, p.output("plot")?);
    let movie = open_single(&p, "movie")?;
    let picked = select_rows(&p, &movie, &which)?;
    let mut all = Vec::with_capacity(movie.snapshot_count());
    for s in 0..movie.snapshot_count() {
        all.push(census_at(&p, &movie, s, &picked, min_pop)?);
    }
    let mut csv = String::from(
        "step,rows,distinct,black_holes,black_hole_tokens,largest,mean_black_hole_size,singletons\n",
    );
    for c in &all {
        csv_line(
            &mut csv,
            &[
                c.step.to_string(),
                c.rows.to_string(),
                c.distinct.to_string(),
                c.black_holes.to_string(),
                c.black_hole_tokens.to_string(),
                c.largest.to_string(),
                c.mean_black_hole_size.to_string(),
                c.singletons.to_string(),
            ],
        );
    }
    let fission_events = all
        .windows(2)
        .filter(|w| w[1].black_holes > w[0].black_holes)
        .map(|w| Fission {
            step: w[1].step,
            black_holes_before: w[0].black_holes,
            black_holes_after: w[1].black_holes,
        })
        .collect();
    let summary = Summary {
        format: 1,
        rows: which.clone(),
        min_population: min_pop,
        snapshots: all.len(),
        first: all[0],
        last: all[all.len() - 1],
        max_black_holes: all.iter().map(|c| c.black_holes).max().unwrap_or(0),
        fission_events,
    };
    let xs: Vec<f64> = all.iter().map(|c| c.step as f64).collect();
    let distinct: Vec<f64> = all.iter().map(|c| c.distinct as f64).collect();
    let holes: Vec<f64> = all.iter().map(|c| c.black_holes as f64).collect();
    let png = line_chart(
        &format!("{which} rows: census"),
        "step",
        "count",
        &xs,
        &[
            ("distinct rows", BLUE, &distinct),
            ("black holes", RED, &holes),
        ],
    )
    .map_err(|e| p.error(e))?;
    p.write_output(outs.0, csv.as_bytes())?;
    p.write_json(outs.1, &summary)?;
    p.write_output(outs.2, &png)
}

#[derive(Serialize)]
struct Stat {
    mean: f64,
    std: f64,
}

#[derive(Serialize)]
struct Group {
    movies: usize,
    first: Stat,
    last: Stat,
    change: Stat,
}

#[derive(Serialize)]
struct CohenD {
    first: Option<f64>,
    last: Option<f64>,
    change: Option<f64>,
}

#[derive(Serialize)]
struct CompareSummary {
    format: u32,
    rows: String,
    a: Group,
    b: Group,
    cohens_d: CohenD,
}

fn stat(v: &[f64]) -> Stat {
    let (mean, std) = mean_std(v);
    Stat { mean, std }
}

fn cohen(a: &[f64], b: &[f64]) -> Option<f64> {
    let ((ma, sa), (mb, sb)) = (mean_std(a), mean_std(b));
    let pooled = ((sa * sa + sb * sb) / 2.0).sqrt();
    (pooled > 0.0).then(|| (ma - mb).abs() / pooled)
}

pub(crate) fn run_compare(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&COMPARE_SPEC, ctx)?;
    let which = p.string("rows")?;
    let outs = (p.output("table")?, p.output("summary")?);
    let mut csv =
        String::from("group,index,first_step,last_step,rows,first_distinct,last_distinct,change\n");
    let mut groups = Vec::new();
    for port in ["a", "b"] {
        let (mut first, mut last) = (Vec::new(), Vec::new());
        for (k, path) in p.inputs(port)?.iter().enumerate() {
            let movie = Movie::open(path).map_err(|e| p.error(format!("input `{port}`: {e}")))?;
            let picked = select_rows(&p, &movie, &which)?;
            let n = movie.snapshot_count();
            let a = census_at(&p, &movie, 0, &picked, 2)?;
            let b = census_at(&p, &movie, n - 1, &picked, 2)?;
            csv_line(
                &mut csv,
                &[
                    port.to_string(),
                    k.to_string(),
                    a.step.to_string(),
                    b.step.to_string(),
                    a.rows.to_string(),
                    a.distinct.to_string(),
                    b.distinct.to_string(),
                    (b.distinct as i64 - a.distinct as i64).to_string(),
                ],
            );
            first.push(a.distinct as f64);
            last.push(b.distinct as f64);
        }
        let change: Vec<f64> = last.iter().zip(&first).map(|(l, f)| l - f).collect();
        groups.push((first, last, change));
    }
    let group = |g: &(Vec<f64>, Vec<f64>, Vec<f64>)| Group {
        movies: g.0.len(),
        first: stat(&g.0),
        last: stat(&g.1),
        change: stat(&g.2),
    };
    let (ga, gb) = (&groups[0], &groups[1]);
    let summary = CompareSummary {
        format: 1,
        rows: which,
        a: group(ga),
        b: group(gb),
        cohens_d: CohenD {
            first: cohen(&ga.0, &gb.0),
            last: cohen(&ga.1, &gb.1),
            change: cohen(&ga.2, &gb.2),
        },
    };
    p.write_output(outs.0, csv.as_bytes())?;
    p.write_json(outs.1, &summary)
}
