//! `azimuth report` as a user sees it: a small pipeline whose stages write real PNG plots, CSV
//! tables, JSON summaries and Markdown is run, the report is written, and the page is checked
//! both as HTML and in a real headless Chromium (Debian's `chromium`, which `scripts/test.sh`
//! installs): every section is present, every image decodes, and a corrupt PNG is reported as
//! broken by the page itself.

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
    p.run(&["run"]).ok();
    let r = p.run(&["report"]).ok();
    assert!(r.stdout.contains("out/report.html"), "{}", r.stdout);
    let html = p.read("out/report.html");
    for id in ["summary", "dag", "stages", "numbers", "figures", "tables"] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    assert!(html.contains("2 instances of 1 stages: <span class=\"fresh\">2 fresh</span>"));
    // The graph folds the sweep; both instances are listed with their state.
    assert!(html.contains("data-stage=\"plots\" data-instances=\"2\""));
    assert!(html.contains("<code>plots[n=1]</code>") && html.contains("<code>plots[n=2]</code>"));
    // Every figure is inline and captioned with the digest of its artifact.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 2);
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let lock = p.read("pipeline.lock");
    let lines: Vec<&str> = lock.lines().map(str::trim).collect();
    let digests: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0] == "plot:")
        .filter_map(|w| w[1].strip_prefix("digest: b3:"))
        .collect();
    assert_eq!(digests.len(), 2, "{lock}");
    for d in digests {
        assert!(
            html.contains(&format!("data-artifact=\"{d}\"")),
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

    if let Some(dom) = browser_dom(&p.path().join("out/report.html")) {
        assert!(
            dom.contains("data-images-ok=\"2\"") && dom.contains("data-images-broken=\"0\""),
            "{}",
            &dom[..dom.len().min(600)]
        );
        for id in ["summary", "dag", "stages", "numbers", "figures", "tables"] {
            assert!(
                dom.contains(&format!("id=\"{id}\"")),
                "rendered section {id}"
            );
        }
        assert!(dom.contains("<svg"), "the graph is inline SVG");
    }
}

/// The page's own check can fail: a `.png` output that is not a PNG shows up as broken.
#[test]
fn report_flags_an_image_that_does_not_decode() {
    let p = Project::new();
    p.file("writer.py", WRITER);
    p.pipeline(&pipeline(true));
    p.run(&["run"]).ok();
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

/// Dirty instances are listed with their reason and contribute no results.
#[test]
fn report_of_a_pipeline_that_never_ran_lists_dirty_stages() {
    let p = Project::new();
    p.file("writer.py", WRITER);
    p.pipeline(&pipeline(false));
    let r = p.run(&["report"]).ok();
    assert!(
        r.stdout.contains("2 dirty instances have no results"),
        "{}",
        r.stdout
    );
    let html = p.read("out/report.html");
    assert!(html.contains("<span class=\"dirty\">2 dirty</span>"));
    assert!(html.contains("never run"), "the reason is shown");
    assert_eq!(html.matches("data:image/png").count(), 0);
}
