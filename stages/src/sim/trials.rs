//! `sim.direct_sampling` (S20) and `sim.monument_valley` (S21–S24): trials of the
//! quantize-and-count kernel ([`super::quantize`]) around an anchor, and the summary both write
//! (read back by `sim.sweep` and `sim.compare`).
//!
//! Direct sampling draws `tokens` rows per trial. Monument Valley in `full` mode draws all
//! `vocab` rows (389 M coordinates at Qwen's size), counts the whole vocabulary's cells by
//! fingerprint, and keeps the first `survivors` of a random permutation (drawn before the rows,
//! since survival does not look at them); in `survivors` mode it draws the survivors directly. Uniform, position-independent survival makes
//! the survivors of a full trial `survivors` i.i.d. draws, so both modes have the same
//! distribution (tested in `stages/tests/it/sim.rs`); the survivors mode is direct sampling of M
//! points and costs V/M times less.
//!
//! Trials run one after another, each drawing its rows in parallel; counts are integers and the
//! summary's means are summed in trial order, so outputs are byte-identical for any thread count.

use std::fmt::Write as _;
use std::path::Path;

use azimuth_stage_api::specs::sim::{DIRECT_SAMPLING, MONUMENT_VALLEY};
use azimuth_stage_api::StageSpec;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use super::quantize::{
    demographic_distance, pairwise, survivors, Census, Draw, Law, Pairwise, VocabularyCount,
};
use crate::params::Params;
use crate::w_analysis::{open_single, tensor_names, with_threads};
use crate::{StageContext, StageError};

/// An anchor vector read from a `sim.anchor` output.
pub(crate) struct Anchor {
    pub values: Vec<f32>,
    pub label: String,
}

/// Reads the anchor on input `port`: tensor `anchor`, F32 or BF16, one dimension.
pub(crate) fn load_anchor(p: &Params<'_>, port: &str) -> Result<Anchor, StageError> {
    let (path, mapped) = open_single(p, port)?;
    let st = mapped.parse(&path).map_err(|e| p.error(e))?;
    let view = st.tensor("anchor").map_err(|_| {
        p.error(format!(
            "`{}` (input `{port}`) has no tensor `anchor`; it has {}; connect the `anchor` output \
             of a `sim.anchor` stage",
            path.display(),
            tensor_names(&st)
        ))
    })?;
    if view.shape().len() != 1 || view.shape()[0] == 0 {
        return Err(p.error(format!(
            "`{}` (input `{port}`): `anchor` has shape {:?}; expected a vector [D]",
            path.display(),
            view.shape()
        )));
    }
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => view
            .data()
            .chunks_exact(2)
            .map(|c| crate::bf16::to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(p.error(format!(
                "`{}` (input `{port}`): `anchor` has dtype {other}; expected F32 or BF16",
                path.display()
            )))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(p.error(format!(
            "`{}` (input `{port}`): component {i} of `anchor` is {}; the anchor must be finite",
            path.display(),
            values[i]
        )));
    }
    let label = mapped
        .metadata(&path)
        .map_err(|e| p.error(e))?
        .get("label")
        .cloned()
        .unwrap_or_else(|| "anchor".into());
    Ok(Anchor { values, label })
}

/// Mean, population standard deviation, minimum and maximum of a list of values.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Stats {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AnchorInfo {
    pub label: String,
    pub dim: usize,
    pub norm: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Targets {
    pub black_holes: f64,
    pub largest: f64,
    pub demographics: Vec<u32>,
    pub length_penalty: f64,
}

/// Full mode only: the cells of the whole vocabulary, over the trials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct VocabularyStats {
    pub unique: Stats,
    pub black_holes: Stats,
    pub largest: Stats,
}

/// Direct sampling only: S20's pairwise L∞ graph, over the trials where it was measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PairwiseStats {
    pub cells: String,
    pub trials_measured: usize,
    pub trials_skipped: usize,
    pub max_linf_eps: Option<Stats>,
    pub mean_linf_eps: Option<Stats>,
    pub median_linf_eps: Option<Stats>,
    pub components: Option<Stats>,
    pub isolated: Option<Stats>,
    pub largest_component: Option<Stats>,
    pub largest_component_density: Option<Stats>,
    pub density: Option<Stats>,
}

/// The `summary` output of both simulations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunSummary {
    pub format: u32,
    pub stage: String,
    /// `direct`, `survivors` or `full`.
    pub mode: String,
    pub law: String,
    pub scale: f64,
    /// Rows counted per trial (N or M).
    pub tokens: usize,
    /// Rows drawn per trial in full mode.
    pub vocab: Option<usize>,
    pub trials: usize,
    pub seed: u64,
    pub anchor: AnchorInfo,
    pub unique: Stats,
    pub black_holes: Stats,
    pub population: Stats,
    pub singletons: Stats,
    pub largest: Stats,
    /// Over the trials with at least one black hole.
    pub gini: Option<Stats>,
    /// V4.19: √(((mean black holes − target)/target)² + ((mean largest − target)/target)²).
    pub normalized_distance: f64,
    pub demographic_distance: Stats,
    pub targets: Targets,
    /// Trial 0's black-hole populations (the first 64).
    pub example_demographics: Vec<u32>,
    pub vocabulary: Option<VocabularyStats>,
    pub pairwise: Option<PairwiseStats>,
}

/// One trial's results.
struct Trial {
    census: Census,
    vocabulary: Option<VocabularyCount>,
    pairwise: Option<Pairwise>,
}

/// What the two stages differ in.
enum Procedure {
    Direct {
        tokens: usize,
        epsilon: f64,
        edge: f64,
        cells: String,
        max: usize,
    },
    Valley {
        vocab: usize,
        survivors: usize,
        full: bool,
    },
}

pub(crate) fn run_direct_sampling(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&DIRECT_SAMPLING, ctx)?;
    let procedure = Procedure::Direct {
        tokens: p.int("tokens")? as usize,
        epsilon: p.float("epsilon")?,
        edge: p.float("edge")?,
        cells: p.string("pairwise")?,
        max: p.int("pairwise_max")? as usize,
    };
    if let Procedure::Direct { epsilon, .. } = procedure {
        if epsilon <= 0.0 {
            return Err(p.error("param `epsilon` must be > 0 (it divides the L∞ distances)"));
        }
    }
    run(&p, &DIRECT_SAMPLING, procedure, ctx.threads)
}

pub(crate) fn run_monument_valley(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&MONUMENT_VALLEY, ctx)?;
    let vocab = p.int("vocab")? as usize;
    let survivors = p.int("survivors")? as usize;
    if survivors > vocab {
        return Err(p.error(format!(
            "param `survivors` ({survivors}) is larger than `vocab` ({vocab}); at most the whole \
             vocabulary can survive"
        )));
    }
    let full = p.string("mode")? == "full";
    let procedure = Procedure::Valley {
        vocab,
        survivors,
        full,
    };
    run(&p, &MONUMENT_VALLEY, procedure, ctx.threads)
}

fn run(
    p: &Params<'_>,
    spec: &StageSpec,
    procedure: Procedure,
    threads: usize,
) -> Result<(), StageError> {
    let anchor = load_anchor(p, "anchor")?;
    let law_name = p.string("law")?;
    let law = Law::parse(&law_name).expect("declared choices");
    let scale = p.float("scale")?;
    let trials = p.int("trials")? as usize;
    let seed = p.int("seed")? as u64;
    let targets = Targets {
        black_holes: p.float("target_black_holes")?,
        largest: p.float("target_largest")?,
        demographics: p
            .int_list("target_demographics")?
            .into_iter()
            .map(|v| v as u32)
            .collect(),
        length_penalty: p.float("length_penalty")?,
    };
    let dim = anchor.values.len();
    let draw = Draw {
        anchor: &anchor.values,
        law,
        scale: scale as f32,
        seed,
    };
    let (tokens, vocab, mode) = match &procedure {
        Procedure::Direct { tokens, .. } => (*tokens, None, "direct"),
        Procedure::Valley {
            survivors,
            vocab,
            full,
        } => (
            *survivors,
            full.then_some(*vocab),
            if *full { "full" } else { "survivors" },
        ),
    };
    let results = with_threads(p, threads, || {
        let mut rows: Vec<u16> = Vec::new();
        let mut out = Vec::with_capacity(trials);
        for t in 0..trials {
            if trials > 1 {
                azimuth_stage_api::report_progress(&format!("trial {}/{trials}", t + 1));
            }
            let trial = match &procedure {
                Procedure::Direct {
                    tokens,
                    epsilon,
                    edge,
                    cells,
                    max,
                } => {
                    draw.rows(t as u64, *tokens, &mut rows);
                    let census = Census::of(&rows, dim);
                    let ids: &[u32] = match cells.as_str() {
                        "unique" => &census.representatives,
                        "black_holes" => &census.representatives[..census.black_holes()],
                        _ => &[],
                    };
                    let pairwise = (cells != "off" && ids.len() <= *max)
                        .then(|| pairwise(&rows, dim, ids, *epsilon, *edge));
                    Trial {
                        census,
                        vocabulary: None,
                        pairwise,
                    }
                }
                Procedure::Valley {
                    vocab,
                    survivors: m,
                    full: true,
                } => {
                    let ids = survivors(seed, t as u64, *vocab, *m);
                    let vocabulary = draw.full(t as u64, *vocab, &ids, &mut rows);
                    Trial {
                        census: Census::of(&rows, dim),
                        vocabulary: Some(vocabulary),
                        pairwise: None,
                    }
                }
                Procedure::Valley { survivors: m, .. } => {
                    draw.rows(t as u64, *m, &mut rows);
                    Trial {
                        census: Census::of(&rows, dim),
                        vocabulary: None,
                        pairwise: None,
                    }
                }
            };
            out.push(trial);
        }
        out
    })?;

    let norm = anchor
        .values
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>()
        .sqrt();
    let stat = |f: &dyn Fn(&Trial) -> f64| Stats::of(&results.iter().map(f).collect::<Vec<_>>());
    let demo: Vec<f64> = results
        .iter()
        .map(|r| {
            demographic_distance(
                &r.census.populations,
                &targets.demographics,
                targets.length_penalty,
            )
        })
        .collect();
    let ginis: Vec<f64> = results.iter().filter_map(|r| r.census.gini()).collect();
    let black_holes = stat(&|r| r.census.black_holes() as f64);
    let largest = stat(&|r| r.census.largest() as f64);
    let rel = |mean: f64, target: f64| {
        if target == 0.0 {
            mean
        } else {
            (mean - target) / target
        }
    };
    let normalized_distance = (rel(black_holes.mean, targets.black_holes).powi(2)
        + rel(largest.mean, targets.largest).powi(2))
    .sqrt();
    let vocabulary = vocab.map(|_| {
        let v = |f: &dyn Fn(&VocabularyCount) -> f64| {
            Stats::of(
                &results
                    .iter()
                    .map(|r| f(r.vocabulary.as_ref().expect("full mode")))
                    .collect::<Vec<_>>(),
            )
        };
        VocabularyStats {
            unique: v(&|c| c.unique as f64),
            black_holes: v(&|c| c.black_holes as f64),
            largest: v(&|c| c.largest as f64),
        }
    });
    let pairwise_stats = match &procedure {
        Procedure::Direct { cells, .. } if cells != "off" => {
            let measured: Vec<&Pairwise> =
                results.iter().filter_map(|r| r.pairwise.as_ref()).collect();
            let s = |f: &dyn Fn(&Pairwise) -> f64| {
                (!measured.is_empty())
                    .then(|| Stats::of(&measured.iter().map(|q| f(q)).collect::<Vec<_>>()))
            };
            Some(PairwiseStats {
                cells: cells.clone(),
                trials_measured: measured.len(),
                trials_skipped: results.len() - measured.len(),
                max_linf_eps: s(&|q| q.max_linf_eps),
                mean_linf_eps: s(&|q| q.mean_linf_eps),
                median_linf_eps: s(&|q| q.median_linf_eps),
                components: s(&|q| q.components as f64),
                isolated: s(&|q| q.isolated as f64),
                largest_component: s(&|q| q.largest_component as f64),
                largest_component_density: s(&|q| q.largest_component_density),
                density: s(&|q| q.density),
            })
        }
        _ => None,
    };
    let summary = RunSummary {
        format: 1,
        stage: spec.name.into(),
        mode: mode.into(),
        law: law_name,
        scale,
        tokens,
        vocab,
        trials,
        seed,
        anchor: AnchorInfo {
            label: anchor.label.clone(),
            dim,
            norm,
        },
        unique: stat(&|r| r.census.unique as f64),
        black_holes,
        population: stat(&|r| r.census.population() as f64),
        singletons: stat(&|r| r.census.singletons as f64),
        largest,
        gini: (!ginis.is_empty()).then(|| Stats::of(&ginis)),
        normalized_distance,
        demographic_distance: Stats::of(&demo),
        targets,
        example_demographics: results[0]
            .census
            .populations
            .iter()
            .take(64)
            .copied()
            .collect(),
        vocabulary,
        pairwise: pairwise_stats,
    };
    let csv = trials_csv(&results, &demo);
    p.write_output(p.output("trials")?, csv.as_bytes())?;
    p.write_json(p.output("summary")?, &summary)
}

/// The `trials` table.
fn trials_csv(results: &[Trial], demo: &[f64]) -> String {
    let mut csv = String::from(
        "trial,unique,black_holes,population,singletons,largest,gini,demographic_distance,demographics",
    );
    let vocabulary = results[0].vocabulary.is_some();
    let pairwise = results.iter().any(|r| r.pairwise.is_some());
    if vocabulary {
        csv.push_str(",vocab_unique,vocab_black_holes,vocab_largest");
    }
    if pairwise {
        csv.push_str(
            ",cells,max_linf_eps,mean_linf_eps,median_linf_eps,edges,components,isolated,\
             largest_component,largest_component_density,density",
        );
    }
    csv.push('\n');
    for (t, r) in results.iter().enumerate() {
        let c = &r.census;
        let gini = c.gini().map(|g| g.to_string()).unwrap_or_default();
        let top: Vec<String> = c.populations.iter().take(16).map(u32::to_string).collect();
        let _ = write!(
            csv,
            "{t},{},{},{},{},{},{gini},{},{}",
            c.unique,
            c.black_holes(),
            c.population(),
            c.singletons,
            c.largest(),
            demo[t],
            top.join(" ")
        );
        if let Some(v) = &r.vocabulary {
            let _ = write!(csv, ",{},{},{}", v.unique, v.black_holes, v.largest);
        }
        if pairwise {
            match &r.pairwise {
                Some(q) => {
                    let _ = write!(
                        csv,
                        ",{},{},{},{},{},{},{},{},{},{}",
                        q.rows,
                        q.max_linf_eps,
                        q.mean_linf_eps,
                        q.median_linf_eps,
                        q.edges,
                        q.components,
                        q.isolated,
                        q.largest_component,
                        q.largest_component_density,
                        q.density
                    );
                }
                None => csv.push_str(",,,,,,,,,,"),
            }
        }
        csv.push('\n');
    }
    csv
}

/// Reads a `summary` output of either simulation (for `sim.sweep` and `sim.compare`).
pub(crate) fn read_summary(p: &Params<'_>, path: &Path) -> Result<RunSummary, StageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| p.error(format!("cannot read `{}`: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        p.error(format!(
            "`{}` is not the `summary` of a `sim.direct_sampling` or `sim.monument_valley` stage \
             ({e}); connect those stages' `summary` outputs",
            path.display()
        ))
    })
}
