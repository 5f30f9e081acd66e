//! `--plot FILE.svg`: the client's view of each trial as a hand-written SVG, for people who
//! would rather look than read. One panel per trial; in it one lane per node (a band where
//! the node owned the overlay IP, a dot per client attempt it answered: green when `ok` as
//! PRIMARY, orange when answered otherwise) and a lane for attempts nobody answered (red);
//! the fault is a red line, each promotion a blue line.

use std::fmt::Write;

use crate::client::Attempt;
use crate::lab::Lab;
use crate::scenario::Trial;

const W: f64 = 900.0;
const LEFT: f64 = 110.0;
const LANE: f64 = 22.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(lab: &Lab, trials: &[Trial]) -> String {
    let lanes = lab.nodes.len() + 1;
    let panel_h = 40.0 + lanes as f64 * LANE + 30.0;
    let height = panel_h * trials.len().max(1) as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (k, t) in trials.iter().enumerate() {
        let top = k as f64 * panel_h + 10.0;
        let t0 = t.faults.first().copied().unwrap_or(t.start);
        let (from, to) = (t.start.max(t0 - 300.0), t.end);
        let span = (to - from).max(1.0);
        let x = |ms: f64| LEFT + (ms - from) / span * (W - LEFT - 10.0);
        let _ = writeln!(
            s,
            r#"<text x="4" y="{}" font-weight="bold">{}</text>"#,
            top + 12.0,
            esc(&format!(
                "{} / trial {}: node{} -> node{} ({} ms shown, 0 = fault)",
                t.scenario,
                t.index + 1,
                t.old + 1,
                t.new + 1,
                span.round()
            ))
        );
        let lane_y = |i: usize| top + 24.0 + i as f64 * LANE;
        for (i, n) in lab.nodes.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="4" y="{}">node{} {}</text>"#,
                lane_y(i) + 14.0,
                i + 1,
                esc(&n.server)
            );
            // Ownership bands from the owner-change list.
            let mut changes = t.owner_changes.clone();
            changes.push((to, vec![]));
            for w in changes.windows(2) {
                if w[0].1.get(i).copied().unwrap_or(false) {
                    let (a, b) = (x(w[0].0.max(from)), x(w[1].0));
                    let _ = writeln!(
                        s,
                        r##"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#cfe3ff"/>"##,
                        lane_y(i) + 2.0,
                        (b - a).max(0.5),
                        LANE - 4.0
                    );
                }
            }
        }
        let none_lane = lab.nodes.len();
        let _ = writeln!(
            s,
            r#"<text x="4" y="{}">no answer</text>"#,
            lane_y(none_lane) + 14.0
        );
        let attempts: Vec<Attempt> = lab.client().attempts_between(from, to);
        for a in &attempts {
            let lane = a
                .server
                .as_deref()
                .and_then(|srv| lab.nodes.iter().position(|n| n.server == srv))
                .unwrap_or(none_lane);
            let color = if lane == none_lane {
                "#d62728"
            } else if a.outcome == "ok" {
                "#2ca02c"
            } else {
                "#ff7f0e"
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{}</title></circle>"#,
                x(a.start),
                lane_y(lane) + LANE / 2.0,
                esc(&format!(
                    "{:+.1} ms: {} {}",
                    a.start - t0,
                    a.outcome,
                    a.server.as_deref().unwrap_or("")
                ))
            );
        }
        let bottom = lane_y(lanes);
        let mut vline = |at: f64, color: &str, label: &str| {
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{color}" stroke-width="1.5"/><text x="{3:.1}" y="{4:.1}" fill="{color}">{5}</text>"#,
                x(at),
                lane_y(0),
                bottom,
                x(at) + 2.0,
                bottom + 12.0,
                esc(label)
            );
        };
        for f in &t.faults {
            vline(*f, "#d62728", &format!("fault {:+.0}", f - t0));
        }
        for p in &t.promotions {
            vline(
                p.at,
                "#1f77b4",
                &format!("promote {} {:+.0}", p.server, p.at - t0),
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
