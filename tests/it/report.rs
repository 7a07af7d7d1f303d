//! The report as a user sees it. `azimuth report` on a small pipeline whose command stages write
//! real PNG plots, CSV tables, JSON summaries and Markdown (it adds the `report.html` stage the
//! pipeline does not declare, runs everything, and writes the page with this run added), checked
//! as HTML and in a real headless Chromium (Debian's `chromium`, which `scripts/test.sh`
//! installs): every section is present, every image decodes, and a corrupt PNG is reported as
//! broken by the page itself. Then a declared `report.html` stage over real built-in stages (W
//! analysis, decoded dead tokens, simulations): its numbers against a snapshot, byte-identical
//! re-runs, and a re-run when an upstream stage is renamed (its provenance is in the key).

use crate::support::Project;

/// Writes a valid 24-bit PNG (a w × h gradient), a CSV, a summary and a Markdown note, or with
/// `broken` a `.png` that is not one. One stage of a sweep over `n`.
const WRITER: &str = r##"
import json, struct, sys, zlib
png_path, csv_path, json_path, md_path, n, broken = sys.argv[1:7]
n = int(n)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
w, h = 40 + n, 30
raw = b"".join(b"\x00" + b"".join(bytes((x * 6 % 256, y * 8 % 256, n * 60 % 256)) for x in range(w)) for y in range(h))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
if broken == "1":
    png = b"not a png at all"
open(png_path, "wb").write(png)
open(csv_path, "w").write("step,loss\n" + "".join(f"{i},{1.0 / (i + n)}\n" for i in range(30)))
json.dump({"format": 1, "n": n, "black_holes": 13 * n, "gap": {"ratio": 1.5, "radius": 0.012}}, open(json_path, "w"))
open(md_path, "w").write(f"# note {n}\n\n<b>escaped</b>\n")
"##;

fn pipeline(broken: bool) -> String {
    format!(
        "stages:\n  plots:\n    cmd: [python3, \"${{inputs.script}}\", \"${{outputs.plot}}\", \"${{outputs.curve}}\", \
         \"${{outputs.summary}}\", \"${{outputs.note}}\", \"${{params.n}}\", \"{}\"]\n    inputs:\n      script: {{path: writer.py}}\n    \
         matrix: {{n: [1, 2]}}\n    outputs: {{plot: plot.png, curve: curve.csv, summary: summary.json, note: note.md}}\n",
        if broken { 1 } else { 0 }
    )
}

/// The DOM of `page` after load, as headless Chromium serialises it; `None` if no browser is
/// installed (an error when `AZIMUTH_REQUIRE_CHROMIUM` is set, as `scripts/test.sh` does).
fn browser_dom(page: &std::path::Path) -> Option<String> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(browser) = found else {
        assert!(
            std::env::var_os("AZIMUTH_REQUIRE_CHROMIUM").is_none(),
            "AZIMUTH_REQUIRE_CHROMIUM is set but no `chromium` is installed (scripts/setup-browser.sh)"
        );
        eprintln!("report test: no chromium; checking the HTML only");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn report_shows_every_section_figure_and_table_in_a_real_browser() {
    let p = Project::new();
    p.file("writer.py", WRITER);
    p.pipeline(&pipeline(false));
    let r = p.run(&["report"]).ok();
    assert!(r.stdout.contains("out/report.html"), "{}", r.stdout);
    let html = p.read("out/report.html");
    for id in [
        "summary", "run", "dag", "numbers", "figures", "tables", "sources",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    // This run: the two sweep points and the added report stage all ran now.
    assert!(
        html.contains("3 instances: <span class=\"fresh\">0 cache hits</span>"),
        "{html}"
    );
    assert!(html.contains("<span class=\"ran\">3 ran now</span>"));
    assert!(html.contains("ran now: never run"));
    // The graph folds the sweep and shows the added stage.
    assert!(html.contains("data-stage=\"plots\" data-instances=\"2\""));
    assert!(html.contains("data-stage=\"azimuth-report\""));
    assert!(html.contains("<code>plots[n=1]</code>") && html.contains("<code>plots[n=2]</code>"));
    // Every figure is inline and captioned with the digest of its artifact; the added stage is
    // not in pipeline.lock.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 2);
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let lock = p.read("pipeline.lock");
    assert!(!lock.contains("azimuth-report"), "{lock}");
    let lines: Vec<&str> = lock.lines().map(str::trim).collect();
    let digests: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0] == "plot:")
        .filter_map(|w| w[1].strip_prefix("digest: b3:"))
        .collect();
    assert_eq!(digests.len(), 2, "{lock}");
    for d in digests {
        assert!(
            html.contains(&format!("<figure data-artifact=\"{d}\">")),
            "figure {d}"
        );
    }
    // Key numbers, flattened one level, and the tables with their row counts.
    assert!(html.contains("<tr><th>black_holes</th><td>26</td></tr>"));
    assert!(html.contains("<tr><th>gap.ratio</th><td>1.5</td></tr>"));
    assert!(html.contains("· 30 rows</h3>"));
    assert!(
        html.contains("&lt;b&gt;escaped&lt;/b&gt;"),
        "Markdown is shown as text"
    );
    // Every artifact is listed with its digest and how it is shown.
    assert_eq!(html.matches("<td>figure</td>").count(), 2);
    assert_eq!(html.matches("<td>numbers</td>").count(), 2);

    if let Some(dom) = browser_dom(&p.path().join("out/report.html")) {
        assert!(
            dom.contains("data-images-ok=\"2\"") && dom.contains("data-images-broken=\"0\""),
            "{}",
            &dom[..dom.len().min(600)]
        );
        for id in [
            "summary", "run", "dag", "numbers", "figures", "tables", "sources",
        ] {
            assert!(
                dom.contains(&format!("id=\"{id}\"")),
                "rendered section {id}"
            );
        }
        assert!(dom.contains("<svg"), "the graph is inline SVG");
    }

    // Again: everything is a cache hit, and the stage's own page (in the cache, linked into
    // out/) has no run section.
    p.run(&["report"]).ok();
    let again = p.read("out/report.html");
    assert!(
        again.contains("3 instances: <span class=\"fresh\">3 cache hits</span>"),
        "{again}"
    );
    let own = p.read("out/azimuth-report/report.html");
    assert!(!own.contains("<section id=\"run\">"));
    assert!(own.contains(RUN_MARKER));
}

/// The page's own check can fail: a `.png` output that is not a PNG shows up as broken.
#[test]
fn report_flags_an_image_that_does_not_decode() {
    let p = Project::new();
    p.file("writer.py", WRITER);
    p.pipeline(&pipeline(true));
    p.run(&["report", "-o", "elsewhere/page.html"]).ok();
    assert!(p.exists("elsewhere/page.html"));
    if let Some(dom) = browser_dom(&p.path().join("elsewhere/page.html")) {
        assert!(
            dom.contains("data-images-ok=\"0\"") && dom.contains("data-images-broken=\"2\""),
            "{}",
            &dom[..dom.len().min(600)]
        );
        assert!(dom.contains("data-broken=\"1\""));
    }
}

const RUN_MARKER: &str = "<!-- azimuth:run -->";

/// Real built-in stages: a small planted W (3 black holes), its dead sets and decoded tokens, a
/// Monument Valley sweep and the tidal toy, gathered by a declared `report.html` stage.
const BUILTIN_PIPELINE: &str = r#"
stages:
  checkpoint:
    uses: w.synthetic_checkpoint
    params: {rows: 4000, cols: 64, populations: [30, 20, 5], singletons: 10, oort: 3, halo: 300}
  model:
    uses: w.extract
    inputs: {checkpoint: checkpoint.checkpoint}
  black_holes:
    uses: w.black_holes
    inputs: {w: model.w}
  dead:
    uses: w.dead_sets
    inputs: {w: model.w, black_holes: black_holes.members}
  tokens:
    uses: w.tokens
    inputs: {vocab: {path: vocab.json}, w: model.w, black_holes: black_holes.members, dead: dead.masks}
  anchor:
    uses: sim.anchor
    params: {source: synthetic, dim: 64}
  valley:
    uses: sim.monument_valley
    inputs: {anchor: anchor.anchor}
    matrix: {scale: [1.0e-9, 1.0e-3]}
    params: {trials: 3, vocab: 2000, survivors: 100}
  tidal:
    uses: sim.tidal_toy
  report:
    uses: report.html
    inputs: {artifacts: "*"}
"#;

fn builtin_project() -> Project {
    let p = Project::new();
    let tokens: Vec<String> = (0..3000).map(|i| format!("\"tok{i}\"")).collect();
    p.file(
        "vocab.json",
        &format!("{{\"format\":1,\"tokens\":[{}]}}", tokens.join(",")),
    );
    p.pipeline(BUILTIN_PIPELINE);
    p
}

/// The report's numbers for a fixed pipeline are a snapshot: any change to a stage's results
/// or to what the report picks shows up here (rewrite it with `AZIMUTH_UPDATE_SNAPSHOTS=1` after
/// checking the diff). Re-running the stage gives the same bytes.
#[test]
fn a_declared_report_stage_matches_its_numbers_snapshot_and_is_deterministic() {
    let p = builtin_project();
    p.run(&["run", "-j", "2"]).ok();
    let numbers = p.read("out/report/numbers.json");
    let snapshot_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots/report_numbers.json");
    if std::env::var_os("AZIMUTH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_path.parent().unwrap()).unwrap();
        std::fs::write(&snapshot_path, &numbers).unwrap();
    }
    let snapshot = std::fs::read_to_string(&snapshot_path).unwrap_or_default();
    if numbers != snapshot {
        let first = numbers
            .lines()
            .zip(snapshot.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(numbers.lines().count().min(snapshot.lines().count()));
        panic!(
            "out/report/numbers.json differs from {} from line {} (now `{}`, snapshot `{}`); \
             check the change, then AZIMUTH_UPDATE_SNAPSHOTS=1 rewrites it:\n{numbers}",
            snapshot_path.display(),
            first + 1,
            numbers.lines().nth(first).unwrap_or("(end)"),
            snapshot.lines().nth(first).unwrap_or("(end)")
        );
    }
    let v: serde_json::Value = serde_json::from_str(&numbers).unwrap();
    let headline = |q: &str| {
        v["headlines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["quantity"] == q)
            .map(|h| h["value"].clone())
            .unwrap_or_else(|| panic!("headline {q}"))
    };
    // The planted structure, read back through the report.
    assert_eq!(headline("black holes"), 3);
    assert_eq!(headline("largest black hole"), 30);
    assert_eq!(headline("tokens in black holes"), 55);

    let html = p.read("out/report/report.html");
    for id in [
        "summary", "dag", "numbers", "dead-tokens", "figures", "tables", "sources",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    assert!(!html.contains("<section id=\"run\">"), "no run-time facts in the stage's page");
    // The only figure is the tidal toy's, filed under its family.
    let figures = &html[html.find("<section id=\"figures\">").unwrap()..];
    let figures = &figures[..figures.find("</section>").unwrap()];
    assert_eq!(figures.matches("<figure").count(), 1, "{figures}");
    assert!(figures.contains("<h3>Simulations</h3>") && figures.contains("<code>tidal</code>"));
    // The decoded dead tokens: the 55 black-hole members are among them, with their text.
    assert!(html.contains("(55 in black holes)"), "dead-token counts");
    assert!(html.contains("<td class=\"tok\">tok"), "decoded text");

    let report = p.read_bytes("out/report/report.html");
    p.run(&["run", "--force", "report"]).ok();
    assert_eq!(p.read_bytes("out/report/report.html"), report, "same bytes again");
    assert_eq!(p.read("out/report/numbers.json"), numbers);

    // Renaming an upstream stage changes the captions, so the report must re-run; the other
    // stages keep their keys.
    p.pipeline(&BUILTIN_PIPELINE.replace("tidal:", "tidal_toy:"));
    let s = p.run(&["status"]);
    assert!(
        s.stdout.contains("where its inputs come from"),
        "{}",
        s.stdout
    );
    let r = p.run(&["run"]).ok();
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("1 ran, 1 restored"), "{said}");
}
