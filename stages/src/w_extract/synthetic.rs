//! `w.synthetic_checkpoint`: a Qwen-shaped Hugging Face checkpoint whose dead-token structure is
//! planted and therefore known exactly, so the W stages can be tested for exact recovery and
//! benchmarked at full scale (151,936 × 2,560 bf16) without the real weights.
//!
//! Every value comes from a counter-based generator (SplitMix64 of (seed, role, row, counter)),
//! so the bytes depend only on the params, never on the thread count. Rows, by role:
//! - the **anchor** a: coordinates N(0, anchor_std²) rounded to bf16 (no zeros); black hole 1;
//! - **black holes** 2…K: the anchor with 1–3 coordinates moved one grid step inside their binade
//!   (same exponents everywhere, as in S08), each repeated `populations[k]` times;
//! - **core singletons**: the anchor with 1–12 coordinates moved 1–3 steps inside their binade
//!   (exponent distance 0 from the anchor);
//! - **Oort rows**: anchor + r·u (u a random unit vector) at radii geometrically spaced from
//!   void_inner/9.6 to void_inner, then one *lift*: the anchor's smallest coordinate set to its
//!   own sign and mantissa but tolerance+1 binades lower, so the exponent distance is at least
//!   tolerance+1 (inside rule B's void, outside rule A);
//! - **halo rows**: the same construction at radii geometrically spaced from void_outer to
//!   max(1, 2·void_outer): they close the void from outside and make the distance profile
//!   continuous, as the trained rows nearest the dead region do in Qwen;
//! - **live rows**: coordinates N(0, live_std²) (row norm ≈ live_std·√D), regenerated in the
//!   vanishing case that one lies within the exponent tolerance of the anchor.
//!
//! The special roles go to token ids drawn by a seeded permutation; black holes are numbered in
//! `truth` by (population descending, smallest member ascending), S04's canonical rule. Radii are
//! planted before bf16 rounding, so measured distances differ from them by the rounding noise
//! (≈ 4e-4 at D = 2,560, well inside the planted void).

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;
use serde_json::json;

use azimuth_stage_api::specs::w_extract::SYNTHETIC_CHECKPOINT as SPEC;

use crate::bf16;
use crate::io::{write_safetensors, TensorOut};
use crate::params::Params;
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever the bytes written for the same params change.
const FORMAT: u32 = 1;

const TAG_ANCHOR: u64 = 1;
const TAG_LIVE: u64 = 2;
const TAG_HOLE: u64 = 3;
const TAG_SINGLE: u64 = 4;
const TAG_OORT: u64 = 5;
const TAG_HALO: u64 = 6;
const TAG_PERM: u64 = 7;

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `k`-th 64-bit draw of stream (seed, tag, a).
fn draw(seed: u64, tag: u64, a: u64, k: u64) -> u64 {
    mix(mix(mix(seed ^ tag.wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ a) ^ k)
}

/// A uniform in the open interval (0, 1).
fn uniform(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Fills `out` with N(0, 1) draws of stream (seed, tag, a), Box–Muller pairs by counter.
fn normals(seed: u64, tag: u64, a: u64, out: &mut [f64]) {
    for (m, pair) in out.chunks_mut(2).enumerate() {
        let u1 = uniform(draw(seed, tag, a, 2 * m as u64));
        let u2 = uniform(draw(seed, tag, a, 2 * m as u64 + 1));
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = r * c;
        if pair.len() > 1 {
            pair[1] = r * s;
        }
    }
}

/// `b` moved `steps` grid steps (toward larger or smaller magnitude, whichever stays inside the
/// binade); `None` if neither direction stays inside it.
fn step_in_binade(b: u16, steps: u8) -> Option<u16> {
    let m = bf16::mantissa(b);
    if bf16::exponent(b) == 0 || bf16::exponent(b) == 0xFF {
        return None;
    }
    if m as u16 + steps as u16 <= 0x7F {
        Some(b + steps as u16)
    } else if m >= steps {
        Some(b - steps as u16)
    } else {
        None
    }
}

/// What a token id holds.
#[derive(Clone, Copy)]
enum Role {
    Live,
    Hole(usize),
    Single(usize),
    Oort(usize),
    Halo(usize),
}

#[derive(Serialize)]
struct TruthHole {
    id: usize,
    population: usize,
    representative: u32,
    members: Vec<u32>,
}

#[derive(Serialize)]
struct TruthRadius {
    id: u32,
    planted_radius: f64,
}

#[derive(Serialize)]
struct Truth {
    format: u32,
    rows: usize,
    cols: usize,
    seed: u64,
    tolerance: u32,
    /// Token id of the anchor (black hole 1's representative).
    anchor: u32,
    /// The coordinate lifted `tolerance + 1` binades down in every Oort and halo row.
    lifted_dimension: usize,
    black_holes: Vec<TruthHole>,
    singletons: Vec<u32>,
    oort: Vec<TruthRadius>,
    halo_first: TruthRadius,
    halo: Vec<u32>,
    /// Rule A at `tolerance` = black hole tokens + core singletons; rule B = rule A + Oort rows.
    rule_a: Vec<u32>,
    rule_b: Vec<u32>,
    rule_a_vectors: usize,
    rule_b_vectors: usize,
    void_inner: f64,
    void_outer: f64,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let rows = p.int("rows")? as usize;
    let cols = p.int("cols")? as usize;
    let seed = p.int("seed")? as u64;
    let pops: Vec<usize> = p
        .int_list("populations")?
        .iter()
        .map(|&x| x as usize)
        .collect();
    let n_single = p.int("singletons")? as usize;
    let n_oort = p.int("oort")? as usize;
    let n_halo = p.int("halo")? as usize;
    let tol = p.int("tolerance")? as u32;
    let anchor_std = p.float("anchor_std")?;
    let live_std = p.float("live_std")?;
    let void_inner = p.float("void_inner")?;
    let void_outer = p.float("void_outer")?;
    let (ckpt_out, truth_out) = (p.output("checkpoint")?, p.output("truth")?);

    if pops.windows(2).any(|w| w[0] < w[1]) || (pops.len() > 1 && pops[0] == pops[1]) {
        return Err(p.error(format!(
            "param `populations` must be sorted largest first with a unique largest (black hole 1 \
             is the anchor), got {pops:?}"
        )));
    }
    let special = pops.iter().sum::<usize>() + n_single + n_oort + n_halo;
    if special >= rows {
        return Err(p.error(format!(
            "the planted rows ({special}: black holes {}, singletons {n_single}, oort {n_oort}, \
             halo {n_halo}) must leave live rows in `rows` = {rows}; raise `rows` or plant fewer",
            pops.iter().sum::<usize>()
        )));
    }
    if void_inner >= void_outer {
        return Err(p.error(format!(
            "`void_inner` ({void_inner}) must be below `void_outer` ({void_outer})"
        )));
    }

    // The anchor: no zero coordinates, and every coordinate normal with room to move.
    let mut z = vec![0.0; cols];
    normals(seed, TAG_ANCHOR, 0, &mut z);
    let anchor: Vec<u16> = z
        .iter()
        .map(|&x| {
            let b = bf16::from_f32((x * anchor_std) as f32);
            if bf16::exponent(b) < tol as u8 + 2 {
                // keep tiny draws clear of zero and subnormals (tol + 2 binades above the bottom)
                bf16::from_f32(f32::from_bits(((tol + 2) << 23) | 0x0040_0000)) | (b & 0x8000)
            } else {
                b
            }
        })
        .collect();
    // The lifted dimension: the anchor's smallest-magnitude coordinate (first on ties).
    let lifted = (0..cols)
        .min_by_key(|&j| (anchor[j] & 0x7FFF, j))
        .expect("cols ≥ 8");
    let lift = |row: &mut [u16]| {
        let a = anchor[lifted];
        row[lifted] = (a & 0x807F) | (((bf16::exponent(a) as u16) - (tol as u16 + 1)) << 7);
    };

    // Variants of the anchor: `moves` coordinates moved `steps` inside their binade.
    let variant = |tag: u64, i: u64, attempt: u64, moves: usize, max_steps: u8| -> Vec<u16> {
        let mut row = anchor.clone();
        let mut k = 0;
        let mut moved = 0;
        while moved < moves {
            let r = draw(seed, tag, i, (attempt << 32) | k);
            k += 1;
            let j = (r % cols as u64) as usize;
            let steps = 1 + ((r >> 32) % max_steps as u64) as u8;
            if row[j] != anchor[j] {
                continue;
            }
            if let Some(b) = step_in_binade(anchor[j], steps) {
                row[j] = b;
                moved += 1;
            }
        }
        row
    };
    let mut seen: HashSet<Vec<u16>> = HashSet::new();
    seen.insert(anchor.clone());
    let mut holes = vec![anchor.clone()];
    for k in 1..pops.len() {
        let mut attempt = 0;
        loop {
            let v = variant(TAG_HOLE, k as u64, attempt, 1 + k % 3, 1);
            attempt += 1;
            if seen.insert(v.clone()) {
                holes.push(v);
                break;
            }
        }
    }
    let mut singles = Vec::with_capacity(n_single);
    for i in 0..n_single {
        let mut attempt = 0;
        loop {
            let moves = 1 + (draw(seed, TAG_SINGLE, i as u64, u64::MAX) % 12) as usize;
            let v = variant(TAG_SINGLE, i as u64, attempt, moves, 3);
            attempt += 1;
            if seen.insert(v.clone()) {
                singles.push(v);
                break;
            }
        }
    }
    // anchor + r·u, rounded, then lifted.
    let shell = |tag: u64, i: usize, r: f64| -> Vec<u16> {
        let mut u = vec![0.0; cols];
        normals(seed, tag, i as u64, &mut u);
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut row: Vec<u16> = anchor
            .iter()
            .zip(&u)
            .map(|(&a, &x)| bf16::from_f32((bf16::to_f64(a) + r * x / norm) as f32))
            .collect();
        lift(&mut row);
        row
    };
    let geometric = |lo: f64, hi: f64, n: usize, i: usize| -> f64 {
        if n <= 1 {
            hi
        } else {
            lo * (hi / lo).powf(i as f64 / (n - 1) as f64)
        }
    };
    let oort_radius = |i| geometric(void_inner / 9.6, void_inner, n_oort, i);
    let halo_max = (2.0 * void_outer).max(1.0);
    let halo_radius = |i| geometric(void_outer, halo_max, n_halo, i);
    let oorts: Vec<Vec<u16>> = (0..n_oort)
        .map(|i| shell(TAG_OORT, i, oort_radius(i)))
        .collect();
    let halos: Vec<Vec<u16>> = (0..n_halo)
        .into_par_iter()
        .map(|i| shell(TAG_HALO, i, halo_radius(i)))
        .collect();

    // Token ids by a seeded permutation: holes in order, then singletons, Oort, halo.
    let mut order: Vec<u32> = (0..rows as u32).collect();
    order.par_sort_unstable_by_key(|&t| (draw(seed, TAG_PERM, t as u64, 0), t));
    let mut roles = vec![Role::Live; rows];
    let mut next = order.iter().copied();
    let mut members: Vec<Vec<u32>> = Vec::new();
    for (k, &pop) in pops.iter().enumerate() {
        let mut m: Vec<u32> = next.by_ref().take(pop).collect();
        m.sort_unstable();
        for &t in &m {
            roles[t as usize] = Role::Hole(k);
        }
        members.push(m);
    }
    let mut take = |n: usize, role: fn(usize) -> Role| -> Vec<u32> {
        let ids: Vec<u32> = next.by_ref().take(n).collect();
        for (i, &t) in ids.iter().enumerate() {
            roles[t as usize] = role(i);
        }
        ids
    };
    let single_ids = take(n_single, Role::Single);
    let oort_ids = take(n_oort, Role::Oort);
    let halo_ids = take(n_halo, Role::Halo);

    // W, row by row in parallel.
    let row_bytes = cols * 2;
    let mut data = vec![0u8; rows * row_bytes];
    let put = |dst: &mut [u8], row: &[u16]| {
        for (d, &b) in dst.chunks_exact_mut(2).zip(row) {
            d.copy_from_slice(&b.to_le_bytes());
        }
    };
    data.par_chunks_mut(row_bytes).enumerate().for_each_init(
        || (vec![0.0f64; cols], vec![0u16; cols]),
        |(z, row), (t, dst)| match roles[t] {
            Role::Hole(k) => put(dst, &holes[k]),
            Role::Single(i) => put(dst, &singles[i]),
            Role::Oort(i) => put(dst, &oorts[i]),
            Role::Halo(i) => put(dst, &halos[i]),
            Role::Live => {
                for attempt in 0u64.. {
                    normals(seed, TAG_LIVE, ((t as u64) << 16) | attempt, z);
                    for (b, &x) in row.iter_mut().zip(z.iter()) {
                        *b = bf16::from_f32((x * live_std) as f32);
                    }
                    if bf16::exponent_distance(row, &anchor) > tol {
                        break;
                    }
                }
                put(dst, row);
            }
        },
    );

    // The checkpoint directory.
    std::fs::create_dir(ckpt_out).map_err(|e| {
        p.error(format!(
            "cannot create output directory `{}`: {e}",
            ckpt_out.display()
        ))
    })?;
    let ones: Vec<u8> = std::iter::repeat_n(bf16::from_f32(1.0).to_le_bytes(), cols)
        .flatten()
        .collect();
    let shard = |n: usize| format!("model-{n:05}-of-00003.safetensors");
    let small = |name: &'static str| TensorOut {
        name,
        dtype: Dtype::BF16,
        shape: vec![cols],
        data: &ones,
    };
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let shards: [(usize, Vec<TensorOut<'_>>); 3] = [
        (1, vec![small("model.layers.0.input_layernorm.weight")]),
        (
            2,
            vec![TensorOut {
                name: "model.embed_tokens.weight",
                dtype: Dtype::BF16,
                shape: vec![rows, cols],
                data: &data,
            }],
        ),
        (3, vec![small("model.norm.weight")]),
    ];
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (n, tensors) in &shards {
        for t in tensors {
            weight_map.insert(t.name.to_string(), shard(*n));
            total += t.data.len();
        }
        write_safetensors(&ckpt_out.join(shard(*n)), tensors, &meta).map_err(|e| p.error(e))?;
    }
    let write_json = |name: &str, v: &serde_json::Value| -> Result<(), StageError> {
        let bytes = crate::io::json_bytes(v).map_err(|e| p.error(e))?;
        p.write_output(&ckpt_out.join(name), &bytes)
    };
    write_json(
        "model.safetensors.index.json",
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )?;
    write_json(
        "config.json",
        &json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "hidden_size": cols,
            "vocab_size": rows,
            "tie_word_embeddings": true,
            "torch_dtype": "bfloat16",
            "azimuth_synthetic": {"stage": format!("{}@{}", SPEC.name, SPEC.version), "seed": seed},
        }),
    )?;

    // The truth, black holes in canonical numbering.
    let mut numbered: Vec<(usize, Vec<u32>)> = members.into_iter().enumerate().collect();
    numbered.sort_by_key(|(_, m)| (std::cmp::Reverse(m.len()), m[0]));
    let anchor_id = numbered.first().map_or(u32::MAX, |(_, m)| m[0]);
    let mut rule_a: Vec<u32> = numbered
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    rule_a.extend(&single_ids);
    rule_a.sort_unstable();
    let mut rule_b = rule_a.clone();
    rule_b.extend(&oort_ids);
    rule_b.sort_unstable();
    let truth = Truth {
        format: FORMAT,
        rows,
        cols,
        seed,
        tolerance: tol,
        anchor: anchor_id,
        lifted_dimension: lifted,
        black_holes: numbered
            .iter()
            .enumerate()
            .map(|(n, (_, m))| TruthHole {
                id: n + 1,
                population: m.len(),
                representative: m[0],
                members: m.clone(),
            })
            .collect(),
        singletons: {
            let mut s = single_ids.clone();
            s.sort_unstable();
            s
        },
        oort: oort_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| TruthRadius {
                id,
                planted_radius: oort_radius(i),
            })
            .collect(),
        halo_first: TruthRadius {
            id: halo_ids.first().copied().unwrap_or(u32::MAX),
            planted_radius: halo_radius(0),
        },
        halo: halo_ids.clone(),
        rule_a_vectors: pops.len() + n_single,
        rule_b_vectors: pops.len() + n_single + n_oort,
        rule_a,
        rule_b,
        void_inner,
        void_outer,
    };
    p.write_json(truth_out, &truth)
}
