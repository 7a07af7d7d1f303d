//! The model `train.gpt` trains: a GPT-2-style decoder (token + learned position embeddings,
//! pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm) whose output
//! head is the token embedding itself (tied: logits = h · Wᵀ), as in every run of science spec
//! Part III. W, the tied matrix, is the thing the movies record.
//!
//! Precision protocols (S30.1) decide two things here: the dtype the parameters are stored in
//! (bf16 for P1/P3, f32 for P2) and where computation leaves bf16:
//! - P1: everything in bf16, the loss included (PyTorch's cross-entropy on bf16 logits).
//! - P2: f32 parameters cast to bf16 at each use (so gradients flow back into the f32 master
//!   weights); the residual stream, layer norms, softmax and loss in f32, as bf16 autocast does.
//! - P3: bf16 parameters with layer norms and the loss computed in f32 (a bf16 model under bf16
//!   autocast); the residual stream stays bf16.
//!
//! Initialisation draws everything on the CPU from libtorch's generator after
//! `tch::manual_seed(seed)`, in a fixed order (token embedding, position embedding, then each
//! block), and only then moves it to the device, so a seed gives the same initial weights on
//! every device. Linear weights are N(0, 0.02²), the two residual projections of each block
//! N(0, (0.02/√(2·layers))²) as in GPT-2, biases 0, LayerNorm weights 1.

use tch::{nn, Device, Kind, Tensor};

/// The shape of the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub vocab: i64,
    pub d_model: i64,
    pub layers: i64,
    pub heads: i64,
    pub ffn: i64,
    pub context: i64,
}

/// The bf16 protocol of S30.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    P1,
    P2,
    P3,
}

impl Protocol {
    pub fn parse(s: &str) -> Protocol {
        match s {
            "p1" => Protocol::P1,
            "p2" => Protocol::P2,
            "p3" => Protocol::P3,
            other => unreachable!("`protocol` is checked against the spec's choices, got {other}"),
        }
    }

    /// The dtype parameters (and so AdamW's state) are stored in.
    pub fn param_kind(self) -> Kind {
        match self {
            Protocol::P1 | Protocol::P3 => Kind::BFloat16,
            Protocol::P2 => Kind::Float,
        }
    }
}

/// How the token embedding starts (S31).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// N(0, std²) per entry.
    Normal { std: f64 },
    /// One unit vector u ~ N(0, I) normalised, copied into every row.
    Singular,
    /// u + N(0, σ²) in f32, rounded to bf16 once.
    F32ToBf16 { sigma: f64 },
    /// u drawn and normalised in bf16, noise drawn in bf16 and scaled by σ, the sum in bf16.
    PureBf16 { sigma: f64 },
}

/// One pre-LayerNorm transformer block.
struct Block {
    ln1_w: Tensor,
    ln1_b: Tensor,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
    ln2_w: Tensor,
    ln2_b: Tensor,
    fc_w: Tensor,
    fc_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
}

/// The model's parameters (registered in a `VarStore`, so tch's AdamW updates them).
pub(crate) struct Gpt {
    pub cfg: Config,
    pub protocol: Protocol,
    /// The tied token embedding W [V, D].
    pub wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    lnf_w: Tensor,
    lnf_b: Tensor,
    /// Every parameter with its checkpoint name, in a fixed order.
    pub named: Vec<(String, Tensor)>,
    /// Run bf16 matmuls as f32 GEMMs on the exact bf16 values (see [`Gpt::linear`]).
    f32_gemm: bool,
}

/// What one forward pass gives: the logits and the final (post-LayerNorm) hidden states.
pub(crate) struct Forward {
    /// [B, T, V] in the compute dtype.
    pub logits: Tensor,
    /// [B, T, D] in f32.
    pub hidden: Tensor,
}

/// The token embedding's initial values as f32 on the CPU (exactly representable in bf16 for
/// the bf16 inits), drawn from libtorch's generator.
fn init_embedding(cfg: &Config, init: Init) -> Tensor {
    let (v, d) = (cfg.vocab, cfg.d_model);
    let cpu = (Kind::Float, Device::Cpu);
    match init {
        Init::Normal { std } => Tensor::randn([v, d], cpu) * std,
        Init::Singular => {
            let u = Tensor::randn([d], cpu);
            let u = &u / u.norm();
            u.unsqueeze(0).expand([v, d], false).contiguous()
        }
        Init::F32ToBf16 { sigma } => {
            let u = Tensor::randn([d], cpu);
            let u = &u / u.norm();
            let rows = u.unsqueeze(0) + Tensor::randn([v, d], cpu) * sigma;
            rows.to_kind(Kind::BFloat16).to_kind(Kind::Float)
        }
        Init::PureBf16 { sigma } => {
            let bf = (Kind::BFloat16, Device::Cpu);
            let u = Tensor::randn([d], bf);
            let u = &u / u.norm();
            let noise = Tensor::randn([v, d], bf) * sigma;
            (u.unsqueeze(0) + noise).to_kind(Kind::Float)
        }
    }
}

impl Gpt {
    /// Draws the initial weights (see the module doc) and registers them in `vs`.
    pub fn new(vs: &nn::VarStore, cfg: Config, protocol: Protocol, init: Init) -> Gpt {
        let cpu = (Kind::Float, Device::Cpu);
        let (d, f, l) = (cfg.d_model, cfg.ffn, cfg.layers);
        let resid_std = 0.02 / ((2 * l) as f64).sqrt();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let root = vs.root();
        let kind = protocol.param_kind();
        let mut add = |name: String, t: Tensor| -> Tensor {
            let t = t.to_kind(kind).to_device(vs.device());
            let var = root.add(&name.replace('.', "_"), t, true);
            named.push((name, var.shallow_clone()));
            var
        };
        let wte = add(
            "model.embed_tokens.weight".into(),
            init_embedding(&cfg, init),
        );
        let wpe = add(
            "model.embed_positions.weight".into(),
            Tensor::randn([cfg.context, d], cpu) * 0.02,
        );
        let mut blocks = Vec::new();
        for i in 0..l {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            blocks.push(Block {
                ln1_w: add(p("ln_1.weight"), Tensor::ones([d], cpu)),
                ln1_b: add(p("ln_1.bias"), Tensor::zeros([d], cpu)),
                qkv_w: add(p("attn.qkv.weight"), Tensor::randn([d, 3 * d], cpu) * 0.02),
                qkv_b: add(p("attn.qkv.bias"), Tensor::zeros([3 * d], cpu)),
                proj_w: add(
                    p("attn.proj.weight"),
                    Tensor::randn([d, d], cpu) * resid_std,
                ),
                proj_b: add(p("attn.proj.bias"), Tensor::zeros([d], cpu)),
                ln2_w: add(p("ln_2.weight"), Tensor::ones([d], cpu)),
                ln2_b: add(p("ln_2.bias"), Tensor::zeros([d], cpu)),
                fc_w: add(p("mlp.fc.weight"), Tensor::randn([d, f], cpu) * 0.02),
                fc_b: add(p("mlp.fc.bias"), Tensor::zeros([f], cpu)),
                out_w: add(p("mlp.proj.weight"), Tensor::randn([f, d], cpu) * resid_std),
                out_b: add(p("mlp.proj.bias"), Tensor::zeros([d], cpu)),
            });
        }
        let lnf_w = add("model.norm.weight".into(), Tensor::ones([d], cpu));
        let lnf_b = add("model.norm.bias".into(), Tensor::zeros([d], cpu));
        Gpt {
            f32_gemm: vs.device() == Device::Cpu,
            cfg,
            protocol,
            wte,
            wpe,
            blocks,
            lnf_w,
            lnf_b,
            named,
        }
    }

    /// The number of parameters (W counted once).
    pub fn parameter_count(&self) -> i64 {
        self.named.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// A parameter as the computation uses it: bf16 for P2's f32 masters, itself otherwise.
    fn w(&self, t: &Tensor) -> Tensor {
        match self.protocol {
            Protocol::P2 => t.to_kind(Kind::BFloat16),
            Protocol::P1 | Protocol::P3 => t.shallow_clone(),
        }
    }

    /// `a · w (+ bias)` for bf16 operands, with f32 accumulation and one rounding to bf16, which
    /// is what libtorch's bf16 GEMM computes. On the CPU it runs as an f32 GEMM on the (exactly
    /// widened) bf16 values: CPUs without bf16 units (AVX2-only x86, like these machines) run
    /// libtorch's bf16 GEMM about 8x slower than its f32 GEMM (56.6 vs 7.2 ms for 4096x64x256
    /// here). On CUDA and MPS the native bf16 kernels run. Gradients follow the same path back.
    fn linear(&self, a: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        if self.f32_gemm && a.kind() == Kind::BFloat16 {
            let y = a.to_kind(Kind::Float).matmul(&w.to_kind(Kind::Float));
            let y = match bias {
                Some(b) => y + b.to_kind(Kind::Float),
                None => y,
            };
            y.to_kind(Kind::BFloat16)
        } else {
            let y = a.matmul(w);
            match bias {
                Some(b) => y + b,
                None => y,
            }
        }
    }

    /// LayerNorm in the protocol's norm dtype, returned in the dtype matmuls take.
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let d = self.cfg.d_model;
        match self.protocol {
            Protocol::P1 => x.layer_norm([d], Some(w), Some(b), 1e-5, false),
            Protocol::P2 => x
                .to_kind(Kind::Float)
                .layer_norm([d], Some(w), Some(b), 1e-5, false)
                .to_kind(Kind::BFloat16),
            Protocol::P3 => x
                .to_kind(Kind::Float)
                .layer_norm(
                    [d],
                    Some(&w.to_kind(Kind::Float)),
                    Some(&b.to_kind(Kind::Float)),
                    1e-5,
                    false,
                )
                .to_kind(Kind::BFloat16),
        }
    }

    /// The forward pass on token ids `x` [B, T] (int64, T ≤ context).
    // `stream = stream + ..` on purpose: `+=` would be libtorch's in-place add, which corrupts
    // the residual stream autograd saved for the LayerNorm's backward.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, x: &Tensor) -> Forward {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (d, h) = (self.cfg.d_model, self.cfg.heads);
        let hd = d / h;
        let wte = self.w(&self.wte);
        // The residual stream: f32 under P2 (autocast leaves embeddings and additions in f32).
        let mut stream = Tensor::embedding(&self.wte, x, -1, false, false)
            + self.wpe.narrow(0, 0, t).unsqueeze(0);
        for blk in &self.blocks {
            let a = self.layer_norm(&stream, &blk.ln1_w, &blk.ln1_b);
            let qkv = self.linear(&a, &self.w(&blk.qkv_w), Some(&self.w(&blk.qkv_b)));
            let heads = |i: i64| {
                qkv.narrow(2, i * d, d)
                    .reshape([b, t, h, hd])
                    .transpose(1, 2)
            };
            let y = Tensor::scaled_dot_product_attention::<Tensor>(
                &heads(0),
                &heads(1),
                &heads(2),
                None,
                0.0,
                true,
                None,
                false,
            );
            let y = y.transpose(1, 2).reshape([b, t, d]);
            stream = stream + self.linear(&y, &self.w(&blk.proj_w), Some(&self.w(&blk.proj_b)));
            let m = self.layer_norm(&stream, &blk.ln2_w, &blk.ln2_b);
            let m = self
                .linear(&m, &self.w(&blk.fc_w), Some(&self.w(&blk.fc_b)))
                .gelu("none");
            stream = stream + self.linear(&m, &self.w(&blk.out_w), Some(&self.w(&blk.out_b)));
        }
        let hidden = self.layer_norm(&stream, &self.lnf_w, &self.lnf_b);
        let logits = self.linear(&hidden, &wte.tr(), None);
        Forward {
            logits,
            hidden: hidden.to_kind(Kind::Float),
        }
    }

    /// Mean cross-entropy of `logits` [B, T, V] against `targets` [B, T]: in bf16 under P1, in
    /// f32 otherwise.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let v = self.cfg.vocab;
        let flat = logits.reshape([-1, v]);
        let flat = match self.protocol {
            Protocol::P1 => flat,
            Protocol::P2 | Protocol::P3 => flat.to_kind(Kind::Float),
        };
        flat.cross_entropy_loss::<Tensor>(
            &targets.reshape([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
    }
}
