//! `sim.sweep`: gathers the summaries of a σ/R sweep (the instances of a `matrix` over `scale`,
//! possibly also over `law` or the anchor) into one table, finds per series the window where
//! black holes exist, the peak count and the best match to V4.19's targets, compares each
//! series' window with the Gaussian one (S22: a ball's window sits ≈√D to the right), and plots
//! mean ± std of the black-hole count and of the largest black hole against log10 scale.
//!
//! A series is the instances that share (stage, mode, law, anchor label, tokens); series and
//! points are sorted, so the outputs do not depend on the order the inputs arrive in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use azimuth_stage_api::specs::sim::SWEEP as SPEC;
use serde::Serialize;

use super::trials::{read_summary, RunSummary, Stats};
use crate::movie::plot::{Chart, Color, BLUE, GREEN, ORANGE, RED};
use crate::params::Params;
use crate::{StageContext, StageError};

/// What identifies a series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct SeriesKey {
    stage: String,
    mode: String,
    law: String,
    anchor: String,
    tokens: usize,
}

impl SeriesKey {
    fn of(s: &RunSummary) -> SeriesKey {
        SeriesKey {
            stage: s.stage.clone(),
            mode: s.mode.clone(),
            law: s.law.clone(),
            anchor: s.anchor.label.clone(),
            tokens: s.tokens,
        }
    }

    fn name(&self) -> String {
        format!(
            "{} {} {} N{}",
            self.law, self.mode, self.anchor, self.tokens
        )
    }
}

#[derive(Serialize)]
struct Point {
    scale: f64,
    black_holes: Stats,
    largest: Stats,
    unique: Stats,
    normalized_distance: f64,
}

#[derive(Serialize)]
struct DemographicMatch {
    scale: f64,
    demographic_distance: Stats,
    example: Vec<u32>,
}

#[derive(Serialize)]
struct Window {
    min_black_holes: f64,
    low: f64,
    high: f64,
    /// √(low·high).
    center: f64,
}

#[derive(Serialize)]
struct SeriesSummary {
    #[serde(flatten)]
    key: SeriesKey,
    points: usize,
    trials: usize,
    scale_min: f64,
    scale_max: f64,
    /// The scale with the most black holes on average.
    peak: Point,
    /// The scales whose mean black-hole count reaches the threshold; null if none does.
    window: Option<Window>,
    /// The scale closest to the targets by V4.19's normalised distance.
    best: Point,
    /// Among the scales with at least one black hole on average, the one with the smallest mean
    /// demographic distance (V4.19), and its trial 0's populations.
    best_demographics: DemographicMatch,
    /// This series' peak scale over the peak scale of the Gaussian series with the same stage,
    /// mode, anchor and tokens (S22: ≈ √D for the ball and shell); null without one.
    peak_ratio_to_gaussian: Option<f64>,
    /// The same for the windows' centres.
    window_ratio_to_gaussian: Option<f64>,
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    runs: usize,
    targets_black_holes: f64,
    targets_largest: f64,
    target_demographics: Vec<u32>,
    series: Vec<SeriesSummary>,
}

fn point(s: &RunSummary) -> Point {
    Point {
        scale: s.scale,
        black_holes: s.black_holes.clone(),
        largest: s.largest.clone(),
        unique: s.unique.clone(),
        normalized_distance: s.normalized_distance,
    }
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let threshold = p.float("window_min_black_holes")?;
    let mut series: BTreeMap<SeriesKey, Vec<RunSummary>> = BTreeMap::new();
    for path in p.inputs("runs")? {
        let s = read_summary(&p, path)?;
        series.entry(SeriesKey::of(&s)).or_default().push(s);
    }
    for (key, runs) in series.iter_mut() {
        runs.sort_by(|a, b| a.scale.total_cmp(&b.scale));
        if let Some(w) = runs.windows(2).find(|w| w[0].scale == w[1].scale) {
            return Err(p.error(format!(
                "two runs of series `{}` have the same scale {}; a sweep point must appear once \
                 (did two instances differ only in seed or trials?)",
                key.name(),
                w[0].scale
            )));
        }
    }
    let first = series.values().next().expect("inputs are not empty")[0].clone();

    let mut summaries: Vec<SeriesSummary> = Vec::new();
    let mut csv = String::from(
        "series,stage,mode,law,anchor,tokens,scale,trials,unique_mean,unique_std,\
         black_holes_mean,black_holes_std,largest_mean,largest_std,singletons_mean,\
         population_mean,normalized_distance,demographic_distance_mean\n",
    );
    for (index, (key, runs)) in series.iter().enumerate() {
        for s in runs {
            let _ = writeln!(
                csv,
                "{index},{},{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{}",
                key.stage,
                key.mode,
                key.law,
                key.anchor.replace('"', "'"),
                key.tokens,
                s.scale,
                s.trials,
                s.unique.mean,
                s.unique.std,
                s.black_holes.mean,
                s.black_holes.std,
                s.largest.mean,
                s.largest.std,
                s.singletons.mean,
                s.population.mean,
                s.normalized_distance,
                s.demographic_distance.mean
            );
        }
        let peak = runs.iter().fold(&runs[0], |m, s| {
            if s.black_holes.mean > m.black_holes.mean {
                s
            } else {
                m
            }
        });
        let best = runs.iter().fold(&runs[0], |m, s| {
            if s.normalized_distance < m.normalized_distance {
                s
            } else {
                m
            }
        });
        // Among the scales with black holes: an empty census is "close" to any target by the
        // length penalty alone, which says nothing about the shape.
        let with_holes: Vec<&RunSummary> =
            runs.iter().filter(|s| s.black_holes.mean >= 1.0).collect();
        let candidates = if with_holes.is_empty() {
            runs.iter().collect()
        } else {
            with_holes
        };
        let best_demo = candidates.iter().fold(candidates[0], |m, s| {
            if s.demographic_distance.mean < m.demographic_distance.mean {
                s
            } else {
                m
            }
        });
        let inside: Vec<f64> = runs
            .iter()
            .filter(|s| s.black_holes.mean >= threshold)
            .map(|s| s.scale)
            .collect();
        let window = (!inside.is_empty()).then(|| {
            let (low, high) = (inside[0], inside[inside.len() - 1]);
            Window {
                min_black_holes: threshold,
                low,
                high,
                center: (low * high).sqrt(),
            }
        });
        summaries.push(SeriesSummary {
            key: key.clone(),
            points: runs.len(),
            trials: runs.iter().map(|s| s.trials).min().unwrap_or(0),
            scale_min: runs[0].scale,
            scale_max: runs[runs.len() - 1].scale,
            peak: point(peak),
            window,
            best: point(best),
            best_demographics: DemographicMatch {
                scale: best_demo.scale,
                demographic_distance: best_demo.demographic_distance.clone(),
                example: best_demo.example_demographics.clone(),
            },
            peak_ratio_to_gaussian: None,
            window_ratio_to_gaussian: None,
        });
    }
    // Ratios against the Gaussian series of the same stage, mode, anchor and tokens.
    let gaussian: Vec<(SeriesKey, f64, Option<f64>)> = summaries
        .iter()
        .filter(|s| s.key.law == "gaussian")
        .map(|s| {
            (
                s.key.clone(),
                s.peak.scale,
                s.window.as_ref().map(|w| w.center),
            )
        })
        .collect();
    for s in summaries.iter_mut().filter(|s| s.key.law != "gaussian") {
        let same = |g: &SeriesKey| {
            g.stage == s.key.stage
                && g.mode == s.key.mode
                && g.anchor == s.key.anchor
                && g.tokens == s.key.tokens
        };
        if let Some((_, peak, center)) = gaussian.iter().find(|(g, _, _)| same(g)) {
            s.peak_ratio_to_gaussian = Some(s.peak.scale / peak);
            s.window_ratio_to_gaussian = match (s.window.as_ref(), center) {
                (Some(w), Some(c)) => Some(w.center / c),
                _ => None,
            };
        }
    }

    let plot = |title: &str, y_label: &str, pick: &dyn Fn(&RunSummary) -> &Stats, target: f64| {
        chart(title, y_label, &series, pick, target).map_err(|e| p.error(e))
    };
    let bh_png = plot(
        "black holes per trial, mean +- std",
        "black holes",
        &|s| &s.black_holes,
        first.targets.black_holes,
    )?;
    let largest_png = plot(
        "largest black hole, mean +- std",
        "tokens in the largest black hole",
        &|s| &s.largest,
        first.targets.largest,
    )?;
    let demographics_png =
        demographics_chart(&summaries, &first.targets.demographics).map_err(|e| p.error(e))?;
    let summary = Summary {
        format: 1,
        runs: series.values().map(Vec::len).sum(),
        targets_black_holes: first.targets.black_holes,
        targets_largest: first.targets.largest,
        target_demographics: first.targets.demographics.clone(),
        series: summaries,
    };
    p.write_output(p.output("table")?, csv.as_bytes())?;
    p.write_json(p.output("summary")?, &summary)?;
    p.write_output(p.output("black_holes_plot")?, &bh_png)?;
    p.write_output(p.output("largest_plot")?, &largest_png)?;
    p.write_output(p.output("demographics_plot")?, &demographics_png)
}

/// log10 population against rank (1 = largest) of each series' best demographic match and of
/// the target.
fn demographics_chart(series: &[SeriesSummary], target: &[u32]) -> Result<Vec<u8>, String> {
    const PALETTE: [Color; 4] = [BLUE, ORANGE, GREEN, [148, 103, 189]];
    let lists = series
        .iter()
        .map(|s| s.best_demographics.example.as_slice());
    let ranks = lists
        .clone()
        .chain([target])
        .map(<[u32]>::len)
        .max()
        .unwrap_or(1)
        .min(64);
    let top = lists
        .chain([target])
        .flat_map(|l| l.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut c = Chart::new(
        "black holes by rank: best matches and the target",
        "rank",
        "log10 population",
        (1.0, ranks.max(2) as f64),
        (0.0, (top as f64).log10()),
    );
    let points = |l: &[u32]| -> Vec<(f64, f64)> {
        l.iter()
            .take(ranks)
            .enumerate()
            .map(|(i, &p)| ((i + 1) as f64, (p.max(1) as f64).log10()))
            .collect()
    };
    for (i, s) in series.iter().enumerate() {
        let name = format!("{} at {:.3e}", s.key.name(), s.best_demographics.scale);
        c.line(
            &points(&s.best_demographics.example),
            PALETTE[i % PALETTE.len()],
            &name,
        );
    }
    c.line(&points(target), RED, "target");
    c.png()
}

/// A colour mixed with white (`keep` of the colour).
fn tint(c: Color, keep: f64) -> Color {
    c.map(|v| (v as f64 * keep + 255.0 * (1.0 - keep)).round() as u8)
}

/// Mean lines of every series against log10 scale, mean ± std as lighter lines, and the target.
fn chart(
    title: &str,
    y_label: &str,
    series: &BTreeMap<SeriesKey, Vec<RunSummary>>,
    pick: &dyn Fn(&RunSummary) -> &Stats,
    target: f64,
) -> Result<Vec<u8>, String> {
    const PALETTE: [Color; 4] = [BLUE, ORANGE, GREEN, [148, 103, 189]];
    let all = || series.values().flatten();
    let xs = || all().map(|s| s.scale.max(f64::MIN_POSITIVE).log10());
    let x = (
        xs().fold(f64::INFINITY, f64::min),
        xs().fold(f64::NEG_INFINITY, f64::max),
    );
    let ys = all().flat_map(|s| {
        let v = pick(s);
        [v.mean - v.std, v.mean + v.std]
    });
    let y = ys
        .chain([0.0, target])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let mut c = Chart::new(title, "log10 scale", y_label, x, y);
    for (i, (key, runs)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let xs: Vec<f64> = runs
            .iter()
            .map(|s| s.scale.max(f64::MIN_POSITIVE).log10())
            .collect();
        for sign in [-1.0, 1.0] {
            let edge: Vec<(f64, f64)> = runs
                .iter()
                .zip(&xs)
                .map(|(s, &x)| (x, pick(s).mean + sign * pick(s).std))
                .collect();
            c.line(&edge, tint(color, 0.35), "");
        }
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .zip(&xs)
            .map(|(s, &x)| (x, pick(s).mean))
            .collect();
        c.line(&pts, color, &key.name());
    }
    c.line(
        &[(x.0, target), (x.1, target)],
        RED,
        &format!("target {target}"),
    );
    c.png()
}
