//! Unit tests of pipeline loading: sweeps, binding of references, interpolation, selectors.

use std::path::Path;

use serde_json::json;

use super::*;

fn load(yaml: &str) -> Pipeline {
    from_source(
        Path::new("pipeline.yaml"),
        Path::new("/p"),
        yaml.to_string(),
        &Registry::default(),
    )
    .unwrap_or_else(|e| panic!("{}", e.render()))
}

fn errors(yaml: &str) -> String {
    from_source(
        Path::new("pipeline.yaml"),
        Path::new("/p"),
        yaml.to_string(),
        &Registry::default(),
    )
    .unwrap_err()
    .render()
}

fn names(p: &Pipeline) -> Vec<&str> {
    p.instances.iter().map(|i| i.name.as_str()).collect()
}

fn ups(p: &Pipeline, name: &str, port: &str) -> Vec<String> {
    let i = &p.instances[p.instance(name).unwrap()];
    i.inputs
        .iter()
        .find(|x| x.port == port)
        .unwrap()
        .sources
        .iter()
        .map(|s| match s {
            InputSource::Upstream { instance, .. } => p.instances[*instance].name.clone(),
            InputSource::External { path } => path.clone(),
        })
        .collect()
}

const SWEEP: &str = r#"
params:
  sigmas: [1e-9, 1e-8]
stages:
  sim:
    matrix: {sigma: "${sigmas}", seed: [1, 2]}
    cmd: [run, "${params.sigma}", "${outputs.t}"]
    outputs: {t: t.csv}
  per_sigma:
    matrix: {sigma: "${sigmas}"}
    cmd: [agg, "${inputs.t}", "${outputs.o}"]
    inputs: {t: sim.t}
    outputs: {o: o}
  all:
    cmd: [agg, "${inputs.t}", "${outputs.o}"]
    inputs: {t: sim.t}
    outputs: {o: o}
  one:
    cmd: [cp, "${inputs.t}", "${outputs.o}"]
    inputs: {t: "sim[sigma=1e-8, seed=2].t"}
    outputs: {o: o}
"#;

#[test]
fn matrix_expands_to_named_instances_in_order() {
    let p = load(SWEEP);
    assert_eq!(
        &names(&p)[..4],
        [
            "sim[seed=1,sigma=1e-9]",
            "sim[seed=2,sigma=1e-9]",
            "sim[seed=1,sigma=1e-8]",
            "sim[seed=2,sigma=1e-8]"
        ]
    );
    let i = &p.instances[0];
    assert_eq!(i.params["sigma"], json!(1e-9));
    assert_eq!(i.params["seed"], json!(1));
    assert_eq!(p.out_dir(0), Path::new("out/sim/seed=1,sigma=1e-9"));
}

#[test]
fn matrix_ranges_generate_their_values() {
    let p = load("stages:\n  s:\n    cmd: [x]\n    matrix:\n      sigma: {geomspace: [1.0e-9, 1.0e-7, 3]}\n      w: {linspace: [0, 1, 5]}\n    outputs: {o: o}\n");
    let sigmas: Vec<f64> = p
        .instances
        .iter()
        .step_by(5)
        .map(|i| i.params["sigma"].as_f64().unwrap())
        .collect();
    assert_eq!(sigmas.len(), 3);
    assert_eq!((sigmas[0], sigmas[2]), (1e-9, 1e-7));
    assert!((sigmas[1] / 1e-8 - 1.0).abs() < 1e-12);
    let ws: Vec<f64> = p.instances[..5]
        .iter()
        .map(|i| i.params["w"].as_f64().unwrap())
        .collect();
    assert_eq!(ws, [0.0, 0.25, 0.5, 0.75, 1.0]);
    for (bad, why) in [
        ("{geomspace: [0, 1, 3]}", "positive ends"),
        ("{linspace: [0, 1]}", "[start, stop, count]"),
        ("{range: [0, 1, 2]}", "not a range"),
    ] {
        let text = format!(
            "stages:\n  s:\n    cmd: [x]\n    matrix:\n      sigma: {bad}\n    outputs: {{o: o}}\n"
        );
        let e = errors(&text);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn references_pair_shared_sweep_keys_and_gather_the_rest() {
    let p = load(SWEEP);
    assert_eq!(
        ups(&p, "per_sigma[sigma=1e-9]", "t"),
        ["sim[seed=1,sigma=1e-9]", "sim[seed=2,sigma=1e-9]"]
    );
    assert_eq!(ups(&p, "all", "t").len(), 4);
    assert_eq!(ups(&p, "one", "t"), ["sim[seed=2,sigma=1e-8]"]);
}

#[test]
fn whole_value_interpolation_keeps_types_and_embedded_formats() {
    let p = load("params:\n  lr: 3e-4\n  steps: 10\nstages:\n  t:\n    cmd: [train, \"--lr=${lr}\"]\n    params: {lr: \"${lr}\", steps: \"${steps}\", tag: \"run-${steps}\", cost: \"$$5\"}\n    outputs: {o: o}\n");
    let i = &p.instances[0];
    assert_eq!(i.params["lr"], json!(3e-4));
    assert_eq!(i.params["steps"], json!(10));
    assert_eq!(i.params["tag"], json!("run-10"));
    assert_eq!(i.params["cost"], json!("$5"));
    assert_eq!(
        i.body,
        Body::Cmd {
            argv: vec!["train".into(), "--lr=0.0003".into()]
        }
    );
}

#[test]
fn selectors_match_values_not_spelling() {
    let p = load(SWEEP);
    let sel = parse_selector("sim[sigma=0.000000001]").unwrap();
    assert_eq!(p.instances.iter().filter(|i| sel.matches(i)).count(), 2);
    let sel = parse_selector("sim").unwrap();
    assert_eq!(p.instances.iter().filter(|i| sel.matches(i)).count(), 4);
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let e = errors("stages:\n  a:\n    cmd: [x]\n    outputs: {o: /abs}\n  b:\n    cmd: [x]\n    inputs: {i: zz.o}\n    outputs: {o: o}\n  c:\n    usess: x\n");
    assert!(e.contains("output path `/abs` of `o` is absolute"), "{e}");
    assert!(e.contains("unknown stage `zz`"), "{e}");
    assert!(e.contains("unknown key `usess` in stage `c`"), "{e}");
    assert!(e.contains("stage `c` has neither `uses` nor `cmd`"), "{e}");
    assert!(e.contains("4 problems"), "{e}");
}

#[test]
fn a_pinned_value_outside_the_grid_is_an_error() {
    let e = errors(&SWEEP.replace("sigma=1e-8, seed=2", "sigma=5, seed=2"));
    assert!(e.contains("matches no instance of stage `sim`"), "{e}");
}

#[cfg(feature = "builtin-stages")]
#[test]
fn builtin_params_get_defaults_and_types() {
    let p = from_source(
        Path::new("pipeline.yaml"),
        Path::new("/p"),
        "stages:\n  g:\n    uses: tensor.random\n    params: {rows: 2, cols: 3, std: 1}\n".into(),
        &Registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let i = &p.instances[0];
    assert_eq!(
        i.params["std"],
        json!(1.0),
        "integers widen to floats for float params"
    );
    assert_eq!(i.params["dtype"], json!("bf16"), "defaults are filled in");
    assert!(i.device_dependent && i.uses_torch);
    assert_eq!(i.device.as_deref(), Some("auto"));
}

#[test]
fn independent_stages_keep_declaration_order() {
    let p = load("stages:\n  z:\n    cmd: [a, \"${outputs.o}\"]\n    outputs: {o: o}\n  m:\n    cmd: [a, \"${inputs.i}\", \"${outputs.o}\"]\n    inputs: {i: y.o}\n    outputs: {o: o}\n  a:\n    cmd: [a, \"${outputs.o}\"]\n    outputs: {o: o}\n  y:\n    cmd: [a, \"${outputs.o}\"]\n    outputs: {o: o}\n");
    assert_eq!(names(&p), ["z", "a", "y", "m"]);
}

/// A built-in analyzer sweeps over a key it does not take, to pair with a generator's sweep: the
/// key names and binds its instances but is not passed on as a param. A key that pairs with no
/// upstream sweep is still an unknown param.
#[cfg(feature = "builtin-stages")]
#[test]
fn a_builtin_may_pair_on_a_sweep_key_it_does_not_take() {
    let with_builtins = |yaml: &str| {
        from_source(
            Path::new("pipeline.yaml"),
            Path::new("/p"),
            yaml.to_string(),
            &Registry::builtin(),
        )
    };
    let yaml = "stages:\n  g:\n    uses: tensor.random\n    matrix: {std: [1, 2]}\n    params: {rows: 2, cols: 3}\n  s:\n    uses: tensor.summary\n    matrix: {std: [1, 2]}\n    inputs: {tensors: g.tensor}\n";
    let p = with_builtins(yaml).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(ups(&p, "s[std=2]", "tensors"), ["g[std=2]"]);
    let s = &p.instances[p.instance("s[std=2]").unwrap()];
    assert!(!s.params.contains_key("std"), "{:?}", s.params);
    let typo = yaml.replace(
        "  s:\n    uses: tensor.summary\n    matrix: {std:",
        "  s:\n    uses: tensor.summary\n    matrix: {sdt:",
    );
    let err = with_builtins(&typo).unwrap_err().render();
    assert!(err.contains("unknown param `sdt`"), "{err}");
}

/// `stage.*` takes every output of the chosen instances; `"*"` every output of every other stage,
/// which makes them all upstream (so consuming such a stage is a cycle).
#[test]
fn star_references_gather_outputs() {
    let p = load(
        r#"
stages:
  a:
    matrix: {k: [1, 2]}
    cmd: [a, "${outputs.x}", "${outputs.y}"]
    outputs: {x: x.txt, y: y.txt}
  b:
    cmd: [b, "${inputs.all}", "${outputs.z}"]
    inputs: {all: "a[*].*"}
    outputs: {z: z.txt}
  everything:
    cmd: [r, "${inputs.in}", "${outputs.page}"]
    inputs: {in: "*"}
    outputs: {page: page.html}
"#,
    );
    let outputs = |name: &str, port: &str| -> Vec<String> {
        let names = ups(&p, name, port);
        let i = &p.instances[p.instance(name).unwrap()];
        let input = i.inputs.iter().find(|x| x.port == port).unwrap();
        names
            .iter()
            .zip(&input.sources)
            .map(|(n, s)| match s {
                InputSource::Upstream { output, .. } => format!("{n}.{output}"),
                InputSource::External { .. } => n.clone(),
            })
            .collect()
    };
    assert_eq!(
        outputs("b", "all"),
        ["a[k=1].x", "a[k=1].y", "a[k=2].x", "a[k=2].y"]
    );
    assert_eq!(
        outputs("everything", "in"),
        ["a[k=1].x", "a[k=1].y", "a[k=2].x", "a[k=2].y", "b.z"]
    );
    assert_eq!(names(&p).last(), Some(&"everything"));
    let gathers = |n: &str| p.instances[p.instance(n).unwrap()].gathers_all;
    assert!(gathers("everything") && !gathers("b"), "only a `\"*\"` input marks a stage");
    let e = errors(
        r#"
stages:
  a:
    cmd: [a, "${outputs.x}"]
    outputs: {x: x.txt}
  all:
    cmd: [r, "${inputs.in}", "${outputs.page}"]
    inputs: {in: "*"}
    outputs: {page: page.html}
  after:
    cmd: [c, "${inputs.p}", "${outputs.q}"]
    inputs: {p: all.page}
    outputs: {q: q.txt}
"#,
    );
    assert!(e.contains("cycle"), "{e}");
}

/// `executor:` at the top sets every stage's default; a stage may override it. `slurm:` options
/// and `resources.time` are read; bad values are errors with their location.
#[test]
fn executors_slurm_options_and_time_limits() {
    let p = load(
        r#"
executor: slurm
slurm: {partition: gpu, account: lab, args: ["--constraint=a100"]}
stages:
  a:
    cmd: [a, "${outputs.x}"]
    outputs: {x: x.txt}
    resources: {cpus: 4, time: "1:30:00"}
  b:
    executor: local
    cmd: [b, "${inputs.x}", "${outputs.y}"]
    inputs: {x: a.x}
    outputs: {y: y.txt}
    resources: {time: 90m}
"#,
    );
    let a = &p.instances[p.instance("a").unwrap()];
    let b = &p.instances[p.instance("b").unwrap()];
    assert_eq!(a.executor, Executor::Slurm);
    assert_eq!(b.executor, Executor::Local);
    assert_eq!((a.resources.cpus, a.resources.time), (4, 5400));
    assert_eq!(b.resources.time, 5400);
    assert_eq!(p.slurm.partition.as_deref(), Some("gpu"));
    assert_eq!(p.slurm.account.as_deref(), Some("lab"));
    assert_eq!(p.slurm.args, ["--constraint=a100"]);
    let e = errors(
        r#"
executor: pbs
slurm: {partition: "-x", nodes: 3}
stages:
  a:
    cmd: [a, "${outputs.x}"]
    outputs: {x: x.txt}
    resources: {time: soon}
"#,
    );
    assert!(e.contains("`executor` must be `local` or `slurm`"), "{e}");
    assert!(e.contains("`slurm.partition` must be a name"), "{e}");
    assert!(e.contains("unknown key `nodes` in `slurm`"), "{e}");
    assert!(e.contains("`time` must be a duration"), "{e}");
}
