//! Metadata of the `train` family (science spec Part III, S30–S37; implementation in
//! `azimuth-stages-torch`, `torch/src/train/`): `train.gpt`, a tiny GPT-style language model trained
//! with libtorch on a token stream, recording its tied embedding W as a "movie" (HDF5) while it
//! trains, plus the final weights as a Hugging Face-style checkpoint directory.
//!
//! Every knob that changes the dynamics is a param (so part of the cache key): the precision
//! protocol (S30.1), the embedding initialisation (S31), the label shift (S30.2), the optimiser's
//! numbers, batch, steps, seed; the device kind enters the key because the spec is
//! `device_dependent`.

use super::shared::{float, int};
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[GPT];

pub const GPT: StageSpec = StageSpec {
    name: "train.gpt",
    version: 1,
    kind: StageKind::Generator,
    summary: "train a tiny GPT-style LM with libtorch (tied embeddings, AdamW, bf16 protocols \
              P1/P2/P3) and record its W every step to an HDF5 movie",
    inputs: &[
        PortSpec {
            name: "tokens",
            doc: "the token stream: a safetensors file with an integer tensor `tokens` [N] (the \
                  `tokens` output of `corpus.tokenize`)",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "masks",
            doc: "the vocabulary's masks: a safetensors file with BOOL `dead_mask` [V] (the \
                  `masks` output of `corpus.tokenize`); V is the model's vocabulary size",
            many: false,
            optional: false,
            ext: "",
        },
    ],
    outputs: &[
        PortSpec {
            name: "movie",
            doc: "the W movie (HDF5, format azimuth-movie 1): W snapshots, per-step loss, lr, \
                  grad norm, the dead rows' lattice motion ΔW′ and last motion step, h_mean",
            many: false,
            optional: false,
            ext: "h5",
        },
        PortSpec {
            name: "checkpoint",
            doc: "the final weights as a Hugging Face-style directory (model.safetensors with a \
                  tied `model.embed_tokens.weight`, config.json), readable by `w.extract`",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: the run's settings, parameter count, loss at the first and last step, \
                  the step-1 probes (logit range, dead-row gradient vs p_dead·h), frozen dead rows",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        int("layers", 1, 64, "2", "transformer blocks"),
        int("d_model", 2, 4096, "64", "model width D (W is [V, D])"),
        int("heads", 1, 64, "2", "attention heads (must divide d_model)"),
        int("ffn", 1, 65536, "256", "hidden width of each block's MLP"),
        int("context", 2, 4096, "128", "tokens per training window"),
        int("batch", 1, 65536, "32", "windows per step"),
        int("steps", 1, 10_000_000, "1000", "optimizer steps"),
        float("lr", 0.0, 10.0, "1e-3", "peak learning rate"),
        ParamSpec {
            name: "schedule",
            ty: ParamType::Choice(&["linear", "constant"]),
            default: Some("\"linear\""),
            doc: "learning rate schedule: `linear` decays from lr to 0 over the run without \
                  warm-up (the Hugging Face default), `constant` keeps lr",
        },
        float(
            "weight_decay",
            0.0,
            10.0,
            "0.01",
            "AdamW's decoupled weight decay (every parameter)",
        ),
        float("beta1", 0.0, 0.999999, "0.9", "AdamW β1"),
        float("beta2", 0.0, 0.999999, "0.999", "AdamW β2"),
        float("eps", 0.0, 1.0, "1e-8", "AdamW ε"),
        float(
            "max_grad_norm",
            0.0,
            1e9,
            "0.0",
            "clip the global gradient norm to this value before each step (0 = no clipping; the \
             Hugging Face Trainer used 1.0)",
        ),
        ParamSpec {
            name: "protocol",
            ty: ParamType::Choice(&["p1", "p2", "p3"]),
            default: Some("\"p1\""),
            doc: "bf16 protocol (S30.1): `p1` pure bf16 (bf16 parameters and AdamW state, \
                  everything computed in bf16); `p2` f32 master weights and AdamW state, matmuls \
                  in bf16, norms/softmax/loss in f32 (snapshots are f32); `p3` bf16 parameters \
                  and AdamW state with layer norms, softmax and loss in f32 (a bf16 model under \
                  bf16 autocast)",
        },
        ParamSpec {
            name: "init",
            ty: ParamType::Choice(&["normal", "singular", "f32_to_bf16", "pure_bf16"]),
            default: Some("\"normal\""),
            doc: "token embedding initialisation (S31): `normal` N(0, init_std²); `singular` one \
                  unit vector u ~ N(0, I) normalised, copied into every row; `f32_to_bf16` rows \
                  u + N(0, init_sigma²) in f32, rounded to bf16 once; `pure_bf16` u, noise and \
                  sum computed in bf16",
        },
        float(
            "init_std",
            0.0,
            100.0,
            "0.02",
            "σ of the `normal` init (1.0 gives N(0,1))",
        ),
        float(
            "init_sigma",
            0.0,
            100.0,
            "1e-5",
            "noise σ of the `f32_to_bf16` and `pure_bf16` inits",
        ),
        int(
            "label_shift",
            1,
            2,
            "1",
            "target = the token this many positions ahead: 1 is next-token training; 2 \
             reproduces the double shift of Hugging Face GPT-2 runs fed pre-shifted labels (S30.2)",
        ),
        int(
            "seed",
            0,
            i64::MAX,
            "42",
            "seed of the initialisation and of the window sampler",
        ),
        ParamSpec {
            name: "record",
            ty: ParamType::Choice(&["all", "dead"]),
            default: Some("\"all\""),
            doc: "which rows of W the movie's snapshots hold: every token, or only the dead rows \
                  (the per-step series and the dead rows' motion are recorded at every step \
                  either way)",
        },
        int(
            "record_every",
            1,
            10_000_000,
            "1",
            "take a W snapshot every this many steps (and at \
             step 0 and the last step)",
        ),
        ParamSpec {
            name: "h_mean",
            ty: ParamType::Bool,
            default: Some("true"),
            doc: "record h_mean[t], the mean final hidden state over the batch (S45)",
        },
    ],
    uses_torch: true,
    device_dependent: true,
    reads_provenance: false,
};
