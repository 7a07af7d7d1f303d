//! Metadata of the `w_pca` family (implementations in `azimuth-stages`, `src/w_pca/`): the PCA
//! basis of W and its spherical "sky" coordinates (`w.pca`, science spec S10, sign convention
//! V4.6, flattening ties V4.7), and the sky maps drawn from them (`w.skymap`, S10 "Maps").
//! `w.pca` computes the covariance and its eigendecomposition with libtorch on the CPU;
//! `w.skymap` is plain Rust (its own raster and PNG writer).

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[PCA, SKYMAP];

/// Bounds of a 1-based, signed principal-component index (north/meridian/equinox).
const PC_INDEX: ParamType = ParamType::Int {
    min: -1_000_000,
    max: 1_000_000,
};

pub const PCA: StageSpec = StageSpec {
    name: "w.pca",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "PCA basis of W (covariance eigendecomposition, fixed signs), projections and \
              spherical sky coordinates of every token (S10)",
    inputs: &[
        PortSpec {
            name: "w",
            doc: "a safetensors file holding the matrix W [V, D] (BF16 or F32; up-cast exactly)",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "black_holes",
            doc: "the `members` output of `w.black_holes` for this W; its population-weighted \
                  centroid fixes the eigenvector signs (param `signs` = centroid). Without it the \
                  signs follow the mean μ",
            many: false,
            optional: true,
            ext: "",
        },
    ],
    outputs: &[
        PortSpec {
            name: "basis",
            doc: "safetensors (dtype = `precision`): `eigenvalues` [D] descending, `eigenvectors` \
                  [D, D] (row i = PC i+1, sign-fixed), `mean` [D]; `flips` (BOOL) [D], true where \
                  the sign rule negated libtorch's eigenvector",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "projections",
            doc: "safetensors (F32): `pcs` [V, k] (rows projected on PC1…PCk, raw or centred per \
                  `frame`), and per token `x`, `y`, `z`, `r`, `lat`, `lon`, `lat_flat` [V] \
                  (degrees for the angles)",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "summary",
            doc:
                "JSON: leading and trailing eigenvalues, variance explained (PC1…PC3, top 3/10/100 \
                  cumulative, %), the sign rule and how each PC's sign was decided, ranges, means \
                  and standard deviations of r, lat, lon (and x, y, z)",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "tensor",
            ty: ParamType::Str,
            default: Some("\"W\""),
            doc: "name of the matrix inside the input file",
        },
        ParamSpec {
            name: "precision",
            ty: ParamType::Choice(&["f32", "f64"]),
            default: Some("\"f32\""),
            doc: "float type of the mean, covariance, eigendecomposition and projections \
                  (S10: the originals used f32)",
        },
        ParamSpec {
            name: "divisor",
            ty: ParamType::Choice(&["n", "n-1"]),
            default: Some("\"n\""),
            doc: "covariance = Wcᵀ·Wc / N (box_2/box_3) or / (N − 1) (box_1)",
        },
        ParamSpec {
            name: "components",
            ty: ParamType::Int {
                min: 1,
                max: 100_000,
            },
            default: Some("10"),
            doc: "k: how many leading PCs the `pcs` projection table holds (at most D)",
        },
        ParamSpec {
            name: "signs",
            ty: ParamType::Choice(&["centroid", "none"]),
            default: Some("\"centroid\""),
            doc: "eigenvector sign rule (V4.6): `centroid` makes the projection of the raw \
                  black-hole centroid positive, falling back to the mean μ where that projection \
                  is 0 or there are no black holes, then to the largest-magnitude component \
                  positive; `none` keeps libtorch's (LAPACK's) arbitrary signs",
        },
        ParamSpec {
            name: "north",
            ty: PC_INDEX,
            default: Some("2"),
            doc: "1-based PC used as +Z (latitude +90°); a negative index flips it (box_2: PC2)",
        },
        ParamSpec {
            name: "meridian",
            ty: PC_INDEX,
            default: Some("1"),
            doc: "1-based PC used as +X (longitude 0°); negative flips it (box_2: PC1)",
        },
        ParamSpec {
            name: "equinox",
            ty: PC_INDEX,
            default: Some("3"),
            doc: "1-based PC used as +Y (longitude +90°); negative flips it (box_2: PC3)",
        },
        ParamSpec {
            name: "frame",
            ty: ParamType::Choice(&["raw", "centred"]),
            default: Some("\"raw\""),
            doc: "project raw rows W (box_2/box_3) or centred rows W − μ (box_1)",
        },
    ],
    uses_torch: true,
    device_dependent: false,
    reads_provenance: false,
};

pub const SKYMAP: StageSpec = StageSpec {
    name: "w.skymap",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "sky maps of the tokens from w.pca's spherical coordinates: Mollweide scatter, \
              1° density heatmap, equatorial (r vs longitude) plot, as PNG (S10 Maps)",
    inputs: &[
        PortSpec {
            name: "projections",
            doc: "the `projections` output of `w.pca` (F32 `lat`, `lon`, `r`, `lat_flat` [V])",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "highlight",
            doc: "a safetensors file with a BOOL [V] mask (param `highlight_mask`), e.g. \
                  `w.black_holes`' `members`; those tokens are drawn on top in a second colour",
            many: false,
            optional: true,
            ext: "",
        },
    ],
    outputs: &[
        PortSpec {
            name: "sky",
            doc: "PNG, width × width/2: Mollweide map on black, every token a point of additive \
                  brightness, 30° graticule in dim grey, highlighted tokens in orange on top",
            many: false,
            optional: false,
            ext: "png",
        },
        PortSpec {
            name: "density",
            doc: "PNG, width × width/2: the smoothed 360 × 180 one-degree histogram \
                  (equirectangular, north up, longitude −180° at the left) in `colormap`",
            many: false,
            optional: false,
            ext: "png",
        },
        PortSpec {
            name: "equatorial",
            doc:
                "PNG, width/2 × width/2: polar plot of r (radius) against longitude (angle, 0° to \
                  the right, counter-clockwise) on black, rings at quarters of the largest r",
            many: false,
            optional: false,
            ext: "png",
        },
        PortSpec {
            name: "heatmap",
            doc: "CSV `lon_bin,lat_bin,count,smoothed`: every non-zero cell of the smoothed grid \
                  (bin 0 = [−180°, −179°) in longitude, [−90°, −89°) in latitude)",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc:
                "JSON: heatmap max and mean (smoothed and raw), tokens plotted, highlighted count, \
                  image sizes",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "width",
            ty: ParamType::Int {
                min: 16,
                max: 20_000,
            },
            default: Some("2000"),
            doc: "width in pixels of the sky and density maps (height = width/2; 2000 = 10 × 5 in \
                  at 200 DPI); the equatorial plot is width/2 square",
        },
        ParamSpec {
            name: "flatten",
            ty: ParamType::Bool,
            default: Some("false"),
            doc: "plot the CDF-flattened latitude `lat_flat` instead of `lat` (visual only)",
        },
        ParamSpec {
            name: "colormap",
            ty: ParamType::Choice(&["inferno", "viridis", "gray"]),
            default: Some("\"inferno\""),
            doc: "colour table of the density map (approximations by a few control points)",
        },
        ParamSpec {
            name: "highlight_mask",
            ty: ParamType::Str,
            default: Some("\"black_hole_mask\""),
            doc: "name of the BOOL [V] tensor in the `highlight` file",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

#[cfg(test)]
mod tests {
    use crate::StageKind;

    #[test]
    fn the_w_pca_stages_are_declared_as_specified() {
        let pca = crate::find("w.pca").expect("w.pca is in the catalogue");
        assert_eq!((pca.kind, pca.version), (StageKind::Analyzer, 2));
        assert!(pca.uses_torch && !pca.device_dependent);
        assert_eq!(
            pca.inputs
                .iter()
                .map(|i| (i.name, i.optional))
                .collect::<Vec<_>>(),
            [("w", false), ("black_holes", true)]
        );
        assert_eq!(
            pca.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["basis", "projections", "summary"]
        );
        for (name, default) in [
            ("precision", "\"f32\""),
            ("divisor", "\"n\""),
            ("components", "10"),
            ("signs", "\"centroid\""),
            ("north", "2"),
            ("meridian", "1"),
            ("equinox", "3"),
            ("frame", "\"raw\""),
        ] {
            assert_eq!(pca.param(name).unwrap().default, Some(default), "{name}");
        }
        let sky = crate::find("w.skymap").expect("w.skymap is in the catalogue");
        assert!(!sky.uses_torch && !sky.device_dependent);
        assert_eq!(
            sky.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["sky", "density", "equatorial", "heatmap", "summary"]
        );
        assert_eq!(sky.param("width").unwrap().default, Some("2000"));
        assert_eq!(sky.param("colormap").unwrap().default, Some("\"inferno\""));
    }
}
