//! `azimuth report`: runs the pipeline's `report.html` stage (adding one that gathers every
//! output, `spec::IMPLICIT_REPORT`, when the pipeline declares none) and writes its page with a
//! `run` section added: every instance's state before this command (cache hit, restored, or ran
//! now and why), the duration, finish time and host of the run that made its outputs, and the
//! totals. The stage's own page lives in the cache and is deterministic; the run section carries
//! times, so the page with it is written outside the cache (default `out/report.html`), like
//! `pipeline.lock`.
//!
//! The page itself (graph, numbers, figures, dead tokens, tables, sources) is drawn by the stage,
//! in `azimuth-stages` (`stages/src/report/`); this module only composes.

use std::fmt::Write as _;

use crate::plan::State;
use crate::spec::Pipeline;
use crate::store::format_time;

/// Where the stage's page leaves room for the run section (`report::page::RUN_MARKER` in the
/// stages crate; the Chromium test checks that the section lands).
pub const RUN_MARKER: &str = "<!-- azimuth:run -->";

/// Indexes of the instances that use `report.html`.
pub fn report_instances(p: &Pipeline) -> Vec<usize> {
    (0..p.instances.len())
        .filter(|&i| {
            matches!(&p.instances[i].body, crate::spec::Body::Builtin { name, .. }
                if name == "report.html")
        })
        .collect()
}

/// Escapes text for HTML.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Stages with more instances than this are sweeps: one summary row in the run table, their
/// instances in a folded table below it.
const SWEEP_UNFOLDED: usize = 4;

/// One instance's line of the run section.
struct RunRow {
    class: &'static str,
    what: String,
    duration_ms: Option<u64>,
    finished: String,
    host: String,
}

/// The `run` section: each instance's state before (`before`) and its run record after
/// (`after`) this command; a sweep's instances are summarised in one row and listed in a
/// folded table.
pub fn run_section(p: &Pipeline, before: &[State], after: &[State]) -> String {
    let rows: Vec<RunRow> = before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let (class, what) = match (b, a.record()) {
                (State::Fresh { .. }, Some(_)) => ("fresh", "cache hit".to_string()),
                (State::Restorable { .. }, Some(_)) => {
                    ("restorable", "cache hit, restored to out/".to_string())
                }
                (State::Dirty { reasons, .. }, Some(_)) => {
                    let why: Vec<String> = reasons.iter().map(|r| r.sentence()).collect();
                    ("ran", format!("ran now: {}", why.join("; ")))
                }
                (_, None) => ("dirty", "not run".to_string()),
            };
            let record = a.record();
            RunRow {
                class,
                what,
                duration_ms: record.map(|r| r.duration_ms),
                finished: record.map(|r| format_time(r.finished_at)).unwrap_or_default(),
                host: record.map(|r| r.host.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let count = |class: &str| rows.iter().filter(|r| r.class == class).count();
    let total_ms: u64 = rows.iter().filter_map(|r| r.duration_ms).sum();
    let seconds = |ms: Option<u64>| {
        ms.map(|ms| format!("{:.2} s", ms as f64 / 1000.0))
            .unwrap_or_default()
    };
    let uses = |i: usize| match &p.instances[i].body {
        crate::spec::Body::Builtin { name, version } => format!("{name}@{version}"),
        crate::spec::Body::Cmd { argv } => {
            format!("cmd {}", argv.first().map(String::as_str).unwrap_or(""))
        }
    };
    let line = |name: &str, i: usize, r: &RunRow| {
        format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html(name),
            html(&uses(i)),
            p.instances[i].kind.as_str(),
            r.class,
            html(&r.what),
            seconds(r.duration_ms),
            r.finished,
            html(&r.host)
        )
    };
    const HEAD: &str = "<tr><th>instance</th><th>uses</th><th>kind</th><th>state</th>\
                        <th>duration</th><th>finished</th><th>host</th></tr>\n";
    let mut table = String::new();
    let mut folded = String::new();
    let mut done = vec![false; p.instances.len()];
    for i in 0..p.instances.len() {
        if done[i] {
            continue;
        }
        let stage = &p.instances[i].stage;
        let members: Vec<usize> = (i..p.instances.len())
            .filter(|&j| &p.instances[j].stage == stage)
            .collect();
        if members.len() <= SWEEP_UNFOLDED {
            done[i] = true;
            table.push_str(&line(&p.instances[i].name, i, &rows[i]));
            continue;
        }
        // A sweep: one row for the stage, its instances folded below the table.
        let mut by_class: Vec<(&str, usize)> = Vec::new();
        for &j in &members {
            done[j] = true;
            match by_class.iter_mut().find(|(c, _)| *c == rows[j].class) {
                Some((_, n)) => *n += 1,
                None => by_class.push((rows[j].class, 1)),
            }
        }
        let label = |c: &str| match c {
            "fresh" => "cache hits",
            "restorable" => "restored",
            "ran" => "ran now",
            _ => "not run",
        };
        let summary = RunRow {
            class: by_class.first().map_or("fresh", |(c, _)| c),
            what: by_class
                .iter()
                .map(|(c, n)| format!("{n} {}", label(c)))
                .collect::<Vec<_>>()
                .join(", "),
            duration_ms: Some(members.iter().filter_map(|&j| rows[j].duration_ms).sum()),
            finished: members
                .iter()
                .map(|&j| rows[j].finished.clone())
                .max()
                .unwrap_or_default(),
            host: {
                let mut hosts: Vec<&str> = members.iter().map(|&j| rows[j].host.as_str()).collect();
                hosts.sort_unstable();
                hosts.dedup();
                hosts.join(", ")
            },
        };
        table.push_str(&line(&format!("{stage} ×{}", members.len()), i, &summary));
        let _ = write!(
            folded,
            "<details data-stage=\"{}\"><summary><code>{}</code>: {} instances</summary><table>{HEAD}",
            html(stage),
            html(stage),
            members.len()
        );
        for &j in &members {
            folded.push_str(&line(&p.instances[j].name, j, &rows[j]));
        }
        folded.push_str("</table></details>\n");
    }
    format!(
        "<section id=\"run\"><h2>This run</h2><p>{} instances: <span class=\"fresh\">{} cache \
         hits</span>, <span class=\"restorable\">{} restored</span>, <span class=\"ran\">\
         {} ran now</span>{}. The runs that made these results took {:.1} s of stage time in \
         all.</p><table>{HEAD}{table}</table>{folded}</section>\n",
        p.instances.len(),
        count("fresh"),
        count("restorable"),
        count("ran"),
        match count("dirty") {
            0 => String::new(),
            n => format!(", <span class=\"dirty\">{n} not run</span>"),
        },
        total_ms as f64 / 1000.0
    )
}

/// The stage's page with the run section at its marker (or after `<body>`'s heading when the
/// page has no marker).
pub fn splice(page: &str, section: &str) -> String {
    match page.find(RUN_MARKER) {
        Some(at) => format!(
            "{}{section}{}",
            &page[..at],
            &page[at + RUN_MARKER.len()..]
        ),
        None => match page.find("</h1>") {
            Some(at) => format!("{}{section}{}", &page[..at + 5], &page[at + 5..]),
            None => format!("{page}{section}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_section_replaces_the_marker() {
        let page = format!("<h1>t</h1><section id=\"summary\"></section>{RUN_MARKER}<p>rest</p>");
        let out = splice(&page, "<section id=\"run\"></section>");
        assert_eq!(
            out,
            "<h1>t</h1><section id=\"summary\"></section><section id=\"run\"></section><p>rest</p>"
        );
        assert_eq!(splice("<h1>t</h1><p>x</p>", "S"), "<h1>t</h1>S<p>x</p>");
    }
}
