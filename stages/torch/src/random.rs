//! `tensor.random`: a synthetic `rows x cols` matrix drawn from N(mean, std^2) with libtorch,
//! written as a one-tensor safetensors file.
//!
//! Determinism: `tch::manual_seed(seed)`, then `randn` in f32 on the resolved device, `* std +
//! mean` in f32, a cast to the output dtype on the same device (round-to-nearest-even), and a copy
//! to the CPU as raw bytes (`copy_data_u8`; never `from_slice::<bf16>`/`copy_data::<bf16>`, which
//! tch 0.26 mislabels as f16). The file is written by `io::write_safetensors`, whose header has
//! sorted metadata and no timestamps, so the same params on the same device kind and libtorch give
//! the same bytes; that is why the spec marks the stage `uses_torch` and `device_dependent` (CPU
//! and CUDA generators draw different numbers for the same seed).

pub(crate) use imp::run;

mod imp {
    use std::collections::BTreeMap;

    use safetensors::tensor::Dtype;
    use tch::{Device, Kind, Tensor};

    use azimuth_stage_api::specs::tensor::RANDOM as SPEC;
    use azimuth_stages::io::{write_safetensors, TensorOut};
    use azimuth_stages::params::Params;
    use azimuth_stages::{StageContext, StageError};

    /// Upper bound on `rows * cols`: 4e9 elements is already 16 GB of f32 in memory.
    const MAX_ELEMENTS: u64 = 4_000_000_000;

    pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
        let p = Params::new(&SPEC, ctx)?;
        let rows = p.int("rows")?;
        let cols = p.int("cols")?;
        let dtype = p.string("dtype")?;
        let mean = p.float("mean")?;
        let std = p.float("std")?;
        let seed = p.int("seed")?;
        let name = p.string("name")?;
        let out = p.output("tensor")?;

        let elements = (rows as u64) * (cols as u64); // both <= 1e7 / 1e6: no overflow
        if elements > MAX_ELEMENTS {
            return Err(p.error(format!(
                "rows * cols = {rows} * {cols} = {elements} elements exceeds the limit of \
                 {MAX_ELEMENTS} (4e9); lower `rows` or `cols`"
            )));
        }
        if name.is_empty() || name == "__metadata__" {
            return Err(p.error(format!(
                "param `name`: `{name}` cannot name a safetensors tensor; use e.g. `weight`"
            )));
        }
        let (kind, st_dtype) = match dtype.as_str() {
            "f32" => (Kind::Float, Dtype::F32),
            "bf16" => (Kind::BFloat16, Dtype::BF16),
            "f16" => (Kind::Half, Dtype::F16),
            other => unreachable!("`dtype` checked against the spec's choices, got {other}"),
        };
        let device = crate::device_of(&p, &ctx.device)?;

        tch::set_num_threads(ctx.threads.clamp(1, i32::MAX as usize) as i32);
        let torch_err =
            |what: &str, e: tch::TchError| p.error(format!("libtorch failed to {what}: {e}"));
        let t = {
            // libtorch's default generator is process-global and tch exposes no private one, so
            // seeding and drawing must not interleave with another stage drawing on another
            // thread of this process (tests run stages in parallel; a worker might too).
            let _draw = crate::seeded_draw();
            tch::manual_seed(seed);
            Tensor::f_randn([rows, cols], (Kind::Float, device))
                .map_err(|e| torch_err("draw the random matrix (out of memory?)", e))?
        };
        let t = t
            .f_mul_scalar(std)
            .and_then(|t| t.f_add_scalar(mean))
            .and_then(|t| t.f_to_kind(kind))
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_contiguous())
            .map_err(|e| torch_err("scale and cast the matrix", e))?;
        let numel = t.numel();
        debug_assert_eq!(numel as u64, elements);
        let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)
            .map_err(|e| torch_err("copy the matrix out", e))?;
        drop(t);

        let metadata: BTreeMap<String, String> = [
            ("generator", "azimuth tensor.random".to_string()),
            ("seed", seed.to_string()),
            ("std", float_text(std)),
            ("mean", float_text(mean)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tensor = TensorOut {
            name: &name,
            dtype: st_dtype,
            shape: vec![rows as usize, cols as usize],
            data: &bytes,
        };
        write_safetensors(out, &[tensor], &metadata).map_err(|e| {
            p.error(format!(
                "{e}; check that the directory exists, is writable and has space"
            ))
        })
    }

    /// A float as JSON writes it (shortest round-trip text, always with a `.` or exponent).
    fn float_text(x: f64) -> String {
        serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
    }
}
