//! Metadata of the `report` family (implementation in `azimuth-stages`, `src/report/`):
//! `report.html`, one self-contained HTML page of a pipeline's results (issue 6), and the
//! numbers it shows as JSON. It reads the provenance of its inputs (`reads_provenance`), so each
//! figure is captioned with the instance and digest it came from and the stage graph is drawn.

use super::shared::int;
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[HTML];

pub const HTML: StageSpec = StageSpec {
    name: "report.html",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "one self-contained HTML page (no network) of the artifacts it gathers: the stage \
              graph, their provenance and digests, headline numbers, every PNG, decoded dead \
              tokens, CSV heads and Markdown, grouped by family; and those numbers as JSON",
    inputs: &[PortSpec {
        name: "artifacts",
        doc: "the artifacts to show: usually `\"*\"` (every output of every other stage); or a \
              list of references such as `black_holes.*` or `valley[*].summary`. PNGs become \
              figures, `summary` JSONs numbers, CSVs and Markdown tables; other files are listed \
              with their digests",
        many: true,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "report",
            doc: "the page: inline CSS, SVG and `data:` images, nothing fetched. Sections \
                  (element ids): `summary`, `dag`, `numbers` (with table `#headlines`), \
                  `dead-tokens`, `figures`, `tables`, `sources`. `azimuth report` adds a `run` \
                  section (states, timings, cache hits) to its copy",
            many: false,
            optional: false,
            ext: "html",
        },
        PortSpec {
            name: "numbers",
            doc: "JSON: the headline numbers (instance, stage, quantity, value) and the numbers of \
                  every JSON `summary` it shows; deterministic, for diffs and snapshots",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "title",
            ty: ParamType::Str,
            default: Some("\"\""),
            doc: "the page's title; empty: `Azimuth report: <pipeline file>`",
        },
        int(
            "table_rows",
            1,
            100_000,
            "15",
            "rows shown of each CSV (the rest are counted, not shown)",
        ),
        int(
            "dead_token_rows",
            1,
            100_000,
            "200",
            "rows shown of each decoded dead-token table (`w.tokens`' `dead_tokens`)",
        ),
        int(
            "fold_sweeps_above",
            0,
            1_000_000,
            "4",
            "a stage with more instances than this is a sweep: its per-point tables and numbers \
             fold into <details> and give no headlines (its gathering analyzer summarises it)",
        ),
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: true,
};
