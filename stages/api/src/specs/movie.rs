//! Movie analyses (science spec Part IV, S40-S45): read a W movie recorded by `train.gpt` (HDF5,
//! the "azimuth-movie" v1 format of `azimuth_stages::movie::format`) and write tables, JSON
//! summaries and PNG plots. None uses libtorch. Implementations in `azimuth-stages`,
//! `src/movie/`.

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[
    KINEMATICS,
    LIFECYCLE,
    CENSUS,
    CENSUS_COMPARE,
    CURVES,
    HIDDEN_STATE,
];

/// Input `movie`: one recorded movie.
const MOVIE_INPUT: PortSpec = PortSpec {
    name: "movie",
    doc: "a W movie (HDF5, format \"azimuth-movie\" v1, as written by `train.gpt`)",
    many: false,
    optional: false,
    ext: "h5",
};

/// Param `rows`: which recorded rows an analysis looks at.
const ROWS_PARAM: ParamSpec = ParamSpec {
    name: "rows",
    ty: ParamType::Choice(&["dead", "live", "all"]),
    default: Some("\"dead\""),
    doc: "which recorded rows to analyse: `dead` (in the movie's dead set), `live` (recorded \
          but not dead) or `all` recorded rows; an error if the movie recorded none of them",
};

const fn out(name: &'static str, doc: &'static str, ext: &'static str) -> PortSpec {
    PortSpec {
        name,
        doc,
        many: false,
        optional: false,
        ext,
    }
}

pub const KINEMATICS: StageSpec = StageSpec {
    name: "movie.kinematics",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "centroid trajectory, cloud radius, bulk and thermal motion of the rows over the \
              snapshots of a movie (S40)",
    inputs: &[MOVIE_INPUT],
    outputs: &[
        out(
            "table",
            "CSV, one line per snapshot: step, centroid norm, displacement from start, step \
             length, mean/max/std radius, bulk speed, temperature, mean token speed, and the \
             live/dead centroid angle when both are recorded",
            "csv",
        ),
        out(
            "summary",
            "JSON: path length and efficiency, direction concentration (with 1/sqrt(D)), \
             lift-off step, slowdown, first and last values",
            "json",
        ),
        out(
            "centroid_plot",
            "PNG: centroid norm and displacement over steps",
            "png",
        ),
        out(
            "radius_plot",
            "PNG: mean, max and std cloud radius over steps",
            "png",
        ),
    ],
    params: &[
        ROWS_PARAM,
        ParamSpec {
            name: "slowdown_window",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000_000,
            },
            default: Some("100"),
            doc: "steps at the start and at the end whose mean token speeds are compared for \
                  the slowdown (S40, Goldilocks-05: 100)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const LIFECYCLE: StageSpec = StageSpec {
    name: "movie.lifecycle",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "dead-token lifecycle from every-step lattice motion: last-exit phases, freeze \
              times, fimbulwinter, stillness runs (S41-S43)",
    inputs: &[MOVIE_INPUT],
    outputs: &[
        out(
            "tokens",
            "CSV, one line per dead token: id, last early/midlife/late step, last motion, \
             freeze step, steps moved, committed phase durations",
            "csv",
        ),
        out(
            "populations",
            "CSV, one line per step: committed early/midlife/late/frozen populations, tokens \
             that moved (freeze criterion), frozen fraction",
            "csv",
        ),
        out(
            "summary",
            "JSON: global last motion, fimbulwinter duration, freeze-time statistics, \
             stillness runs, final populations, phase shares",
            "json",
        ),
        out(
            "phases_plot",
            "PNG: stacked committed phase populations over steps",
            "png",
        ),
        out("frozen_plot", "PNG: frozen fraction over steps", "png"),
        out(
            "stratigraphy",
            "PNG: tokens sorted by freeze time (rows) against steps, 4 phase colours",
            "png",
        ),
    ],
    params: &[
        ParamSpec {
            name: "freeze",
            ty: ParamType::Choice(&["f2", "f1", "f3"]),
            default: Some("\"f2\""),
            doc: "what counts as motion for freeze times (S43): `f2` L1(dW') > 0 (exact bit \
                  change, canonical), `f1` ||dW'||_2 >= f1_threshold, `f3` weight-space \
                  ||dW||_2 >= f3_threshold (needs a snapshot at every step)",
        },
        ParamSpec {
            name: "f1_threshold",
            ty: ParamType::Float {
                min: 0.0,
                max: 1e30,
            },
            default: Some("0.1"),
            doc: "F1 motion threshold on ||dW'||_2 in lattice cells (Crucible 1: 0.1)",
        },
        ParamSpec {
            name: "f3_threshold",
            ty: ParamType::Float {
                min: 0.0,
                max: 1e30,
            },
            default: Some("0.0001"),
            doc: "F3 motion threshold on the weight-space ||dW||_2 (Goldilocks 05: 1e-4)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const CENSUS: StageSpec = StageSpec {
    name: "movie.census",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "black holes (groups of bit-identical rows) at every snapshot of a movie, and \
              fission events (S44)",
    inputs: &[MOVIE_INPUT],
    outputs: &[
        out(
            "table",
            "CSV, one line per snapshot: step, rows, distinct rows, black holes, their tokens, \
             largest, mean size, singletons",
            "csv",
        ),
        out(
            "summary",
            "JSON: first and last census, fission events (steps where the number of black \
             holes rises)",
            "json",
        ),
        out(
            "plot",
            "PNG: distinct rows and black holes over steps",
            "png",
        ),
    ],
    params: &[
        ROWS_PARAM,
        ParamSpec {
            name: "min_population",
            ty: ParamType::Int {
                min: 2,
                max: 1_000_000_000,
            },
            default: Some("2"),
            doc: "smallest group of bit-identical rows that counts as a black hole (S04: 2)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const CENSUS_COMPARE: StageSpec = StageSpec {
    name: "movie.census_compare",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "distinct-row counts at the first and last snapshot of two groups of movies, with \
              mean, population std and Cohen's d (S44 control, S31 15.2c)",
    inputs: &[
        PortSpec {
            name: "a",
            doc: "the movies of group a (e.g. f32->bf16 init)",
            many: true,
            optional: false,
            ext: "h5",
        },
        PortSpec {
            name: "b",
            doc: "the movies of group b (e.g. pure bf16 init)",
            many: true,
            optional: false,
            ext: "h5",
        },
    ],
    outputs: &[
        out(
            "table",
            "CSV, one line per movie: group, index, first and last step, rows, distinct rows \
             at the first and last snapshot, change",
            "csv",
        ),
        out(
            "summary",
            "JSON: per group mean and population std of the first, last and change; Cohen's d \
             for each",
            "json",
        ),
    ],
    params: &[ROWS_PARAM],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const CURVES: StageSpec = StageSpec {
    name: "movie.curves",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "training loss, learning rate and gradient norm of a movie over steps",
    inputs: &[MOVIE_INPUT],
    outputs: &[
        out(
            "table",
            "CSV, one line per training step: step, loss, lr, grad_norm",
            "csv",
        ),
        out("loss_plot", "PNG: loss over steps", "png"),
        out("lr_plot", "PNG: learning rate over steps", "png"),
        out("grad_norm_plot", "PNG: gradient norm over steps", "png"),
    ],
    params: &[],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const HIDDEN_STATE: StageSpec = StageSpec {
    name: "movie.hidden_state",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "h_mean over training (S45): its norm, its persistence (cosine between consecutive \
              steps) and how the dead rows' centroid moves against it (the S30.3 swarm)",
    inputs: &[MOVIE_INPUT],
    outputs: &[
        out(
            "table",
            "CSV, one line per training step: step, h_mean_norm, cos_prev (cosine with the \
             previous step's h_mean), dead_step_cos (cosine between the dead centroid's move at \
             this step and h_mean; empty when not measurable)",
            "csv",
        ),
        out(
            "summary",
            "JSON: consecutive-cosine mean and median, first and last norm, the dead swarm's \
             alignment with h_mean",
            "json",
        ),
        out(
            "plot",
            "PNG: consecutive cosine and dead-step alignment over steps",
            "png",
        ),
    ],
    params: &[],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

#[cfg(test)]
mod tests {
    use crate::StageKind;

    #[test]
    fn the_movie_stages_are_declared_as_specified() {
        for s in super::SPECS {
            let found = crate::find(s.name).expect("catalogued");
            assert_eq!(found.kind, StageKind::Analyzer, "{}", s.name);
            assert!(found.version >= 1);
            assert!(!found.uses_torch && !found.device_dependent);
            assert!(s.inputs.iter().all(|i| i.ext == "h5"));
        }
        let lc = crate::find("movie.lifecycle").unwrap();
        assert_eq!(lc.param("freeze").unwrap().default, Some("\"f2\""));
        assert_eq!(lc.param("f1_threshold").unwrap().default, Some("0.1"));
        let cc = crate::find("movie.census_compare").unwrap();
        assert!(cc.inputs.iter().all(|i| i.many));
        let k = crate::find("movie.kinematics").unwrap();
        assert_eq!(k.param("rows").unwrap().default, Some("\"dead\""));
    }
}
