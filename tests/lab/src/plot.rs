//! The pictures, drawn with `plotters` (SVG backend), for people who would rather look than
//! read.
//!
//! `--plot FILE.svg` of a drill: one panel per trial with a time axis in ms (0 = the first
//! fault); in it one lane per node (a band where the node owned the overlay IP, a dot per
//! client attempt it answered, at the attempt's end: green when `ok` as PRIMARY, orange when
//! answered otherwise) and a lane for attempts nobody answered (red). The fault, each
//! promotion and the first `ok` answer after it are vertical lines; their times are written
//! in the legend beside the chart, never on the chart, so that labels of events a few ms
//! apart cannot collide (the hand-written SVG this replaces printed `fault +0` over
//! `promote SQLNODE2 +3`).
//!
//! `bench --plot FILE.svg`: per scenario, the CDF of promotion → client (ms, log axis: the
//! implementations differ by orders of magnitude) with one line per implementation, and
//! its p50/p99 and how many promotions were served at all in the legend. A promotion the
//! client never saw served stays out of the curve, which then ends below 1.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::lab::Lab;
use crate::scenario::Trial;
use crate::stats::summarize_optional;

const W: u32 = 1100;
const LEGEND_W: u32 = 340;
const LANE_PX: u32 = 34;
const OWNED: RGBColor = RGBColor(190, 215, 250);
const OK: RGBColor = RGBColor(44, 160, 44);
const OTHER: RGBColor = RGBColor(255, 127, 14);
const NONE: RGBColor = RGBColor(214, 39, 40);
const FAULT: RGBColor = RGBColor(214, 39, 40);
const PROMOTION: RGBColor = RGBColor(31, 119, 180);
const SERVED: RGBColor = RGBColor(23, 120, 23);
/// Line colours of the CDF's implementations, in bench order.
const IMPLS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// What a legend entry shows before its text.
#[derive(Clone, Copy)]
enum Mark {
    Band(RGBColor),
    Dot(RGBColor),
    Line(RGBColor),
}

/// Draws `entries` top-down in `area` (a column beside the chart).
fn legend(area: &Area<'_>, title: &str, entries: &[(Mark, String)]) -> Result<(), String> {
    let font = ("sans-serif", 13).into_font();
    area.draw(&Text::new(
        title.to_owned(),
        (8, 14),
        font.clone().style(FontStyle::Bold),
    ))
    .map_err(err)?;
    for (k, (mark, text)) in entries.iter().enumerate() {
        let y = 36 + 19 * k as i32;
        match *mark {
            Mark::Band(c) => area.draw(&Rectangle::new([(8, y - 6), (26, y + 6)], c.filled())),
            Mark::Dot(c) => area.draw(&Circle::new((17, y), 4, c.filled())),
            Mark::Line(c) => area.draw(&PathElement::new(vec![(8, y), (26, y)], c.stroke_width(3))),
        }
        .map_err(err)?;
        area.draw(&Text::new(text.clone(), (34, y - 7), font.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// `+3.1 ms` or, for several, `+0, +503, +1007 ms` (at most five shown).
fn times(xs: &[f64]) -> String {
    match xs {
        [x] => format!("{x:+.1} ms"),
        _ => {
            let mut v: Vec<String> = xs.iter().take(5).map(|x| format!("{x:+.0}")).collect();
            if xs.len() > 5 {
                v.push("...".into());
            }
            format!("{} ms", v.join(", "))
        }
    }
}

/// The drill's picture: one panel per trial (see the module doc). A drawing error yields an
/// SVG that says so.
pub fn svg(lab: &Lab, trials: &[Trial]) -> String {
    let lanes = lab.nodes.len() + 1;
    let panel = 110 + LANE_PX * lanes as u32;
    let panel = panel.max(60 + 19 * 8);
    let height = panel * trials.len().max(1) as u32;
    let mut s = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut s, (W, height)).into_drawing_area();
        let r = root.fill(&WHITE).map_err(err).and_then(|_| {
            let panels = root.split_evenly((trials.len().max(1), 1));
            trials
                .iter()
                .zip(panels)
                .try_for_each(|(t, area)| trial_panel(lab, t, &area))
        });
        r.and_then(|_| root.present().map_err(err))
    };
    match drawn {
        Ok(()) => s,
        Err(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"4\" y=\"20\">{}</text></svg>\n",
            e.replace('&', "&amp;").replace('<', "&lt;")
        ),
    }
}

/// Where each lane's band and dots go: node `i` at the top, the no-answer lane last.
fn lane_y(lanes: usize, lane: usize) -> f64 {
    (lanes - 1 - lane) as f64
}

fn trial_panel(lab: &Lab, t: &Trial, area: &Area<'_>) -> Result<(), String> {
    let t0 = t.faults.first().copied().unwrap_or(t.start);
    let (from, to) = (t.start.max(t0 - 300.0), t.end);
    let lanes = lab.nodes.len() + 1;
    let (chart_area, legend_area) = area.split_horizontally(W - LEGEND_W);
    let names: Vec<String> = lab
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("node{} {}", i + 1, n.server))
        .chain(std::iter::once("no answer".to_owned()))
        .collect();
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(
            format!(
                "{} / trial {}: node{} -> node{}",
                t.scenario,
                t.index + 1,
                t.old + 1,
                t.new + 1
            ),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(130)
        .build_cartesian_2d((from - t0)..(to - t0), -0.5..(lanes as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("ms after the fault")
        .x_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        // Enough key points that every whole lane number is one; only those get a name.
        .y_labels(2 * lanes + 1)
        .y_label_formatter(&|v| {
            if (v - v.round()).abs() > 0.01 || v.round() < 0.0 {
                return String::new();
            }
            let lane = lanes - 1 - (v.round() as usize).min(lanes - 1);
            names[lane].clone()
        })
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    // Ownership bands from the owner-change list.
    let mut changes = t.owner_changes.clone();
    changes.push((to, vec![]));
    for i in 0..lab.nodes.len() {
        let y = lane_y(lanes, i);
        let bands = changes
            .windows(2)
            .filter(|w| w[0].1.get(i).copied().unwrap_or(false))
            .map(|w| {
                let (a, b) = (w[0].0.max(from) - t0, w[1].0 - t0);
                Rectangle::new([(a, y - 0.35), (b, y + 0.35)], OWNED.filled())
            });
        chart.draw_series(bands).map_err(err)?;
    }
    let attempts = lab.client().attempts_between(from, to);
    let dots = attempts.iter().map(|a| {
        let node = a
            .server
            .as_deref()
            .and_then(|srv| lab.nodes.iter().position(|n| n.server == srv));
        let color = match node {
            None => NONE,
            Some(_)
                if a.outcome == "ok"
                    && a.primary_answer_from(a.server.as_deref().unwrap_or("")) =>
            {
                OK
            }
            Some(_) => OTHER,
        };
        let lane = node.unwrap_or(lanes - 1);
        Circle::new((a.end - t0, lane_y(lanes, lane)), 3, color.filled())
    });
    chart.draw_series(dots).map_err(err)?;
    let top = lanes as f64 - 0.5;
    let vline = |x: f64, c: RGBColor| {
        PathElement::new(vec![(x - t0, -0.5), (x - t0, top)], c.stroke_width(2))
    };
    let promotions: Vec<f64> = t.promotions.iter().map(|p| p.at).collect();
    let served: Vec<f64> = t.result.settle.iter().flatten().copied().collect();
    chart
        .draw_series(t.faults.iter().map(|x| vline(*x, FAULT)))
        .map_err(err)?;
    chart
        .draw_series(promotions.iter().map(|x| vline(*x, PROMOTION)))
        .map_err(err)?;
    chart
        .draw_series(served.iter().map(|x| vline(*x, SERVED)))
        .map_err(err)?;
    let rel = |v: &[f64]| times(&v.iter().map(|x| x - t0).collect::<Vec<_>>());
    let promoted = t
        .promotions
        .last()
        .map_or(String::new(), |p| p.server.clone());
    let mut entries = vec![
        (Mark::Band(OWNED), "owned the overlay IP".to_owned()),
        (Mark::Dot(OK), "answered ok as PRIMARY".to_owned()),
        (Mark::Dot(OTHER), "answered otherwise".to_owned()),
        (
            Mark::Dot(NONE),
            "no answer (refused, timeout...)".to_owned(),
        ),
        (Mark::Line(FAULT), format!("fault {}", rel(&t.faults))),
    ];
    if !promotions.is_empty() {
        entries.push((
            Mark::Line(PROMOTION),
            format!("promote {promoted} {}", rel(&promotions)),
        ));
        let text = if served.is_empty() {
            "client never served".to_owned()
        } else {
            format!("client served {}", rel(&served))
        };
        entries.push((Mark::Line(SERVED), text));
    }
    legend(
        &legend_area.margin(30, 0, 0, 0),
        "dot = attempt's end",
        &entries,
    )
}

/// The ticks of a log axis from `lo` to `hi`: 1, 2 and 5 times each power of ten between
/// them. plotters' own log key points leave a range inside one or two decades (tdsvip's
/// 30–60 ms) without a single named tick.
fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return Vec::new();
    }
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    (first..=last)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// One CDF panel: the scenario and, per implementation, its promotion -> client values.
pub type CdfPanel = (String, Vec<(String, Vec<Option<f64>>)>);

/// `bench --plot`: one panel per scenario, in each one CDF line per implementation of its
/// promotion → client times (`None`: never served).
pub fn cdf_svg(panels: &[CdfPanel]) -> Result<String, String> {
    let h = 380;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (W, h * panels.len().max(1) as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        for ((scenario, impls), area) in panels
            .iter()
            .zip(root.split_evenly((panels.len().max(1), 1)))
        {
            cdf_panel(scenario, impls, &area)?;
        }
        root.present().map_err(err)?;
    }
    Ok(s)
}

fn cdf_panel(
    scenario: &str,
    impls: &[(String, Vec<Option<f64>>)],
    area: &Area<'_>,
) -> Result<(), String> {
    let present = || impls.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let lo = present().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = present().fold(0.0, f64::max);
    let (lo, hi) = if hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (1.0, 10_000.0)
    };
    let (chart_area, legend_area) = area.split_horizontally(W - LEGEND_W);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(
            format!("{scenario}: promotion -> client, CDF over trials"),
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(one_two_five(lo, hi)),
            0.0..1.0,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("ms from the promotion to the client's first ok answer (log)")
        .y_desc("fraction of promotions")
        .light_line_style(WHITE)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    let mut entries = Vec::new();
    for (k, (name, values)) in impls.iter().enumerate() {
        let color = IMPLS[k % IMPLS.len()];
        let mut v: Vec<f64> = values.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = values.len().max(1) as f64;
        let mut points = Vec::new();
        for (i, x) in v.iter().enumerate() {
            points.push((*x, i as f64 / n));
            points.push((*x, (i + 1) as f64 / n));
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?;
        let sum = summarize_optional(values);
        let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.0}"));
        entries.push((
            Mark::Line(color),
            format!(
                "{name}: p50 {} / p99 {} ms, {}/{} served",
                f(sum.p50),
                f(sum.p99),
                v.len(),
                values.len()
            ),
        ));
    }
    legend(&legend_area.margin(40, 0, 0, 0), scenario, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_names_one_two_five_even_inside_one_decade() {
        assert_eq!(one_two_five(25.0, 75.0), vec![50.0]);
        assert_eq!(
            one_two_five(27.0, 1500.0),
            vec![50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(one_two_five(0.5, 3.0), vec![0.5, 1.0, 2.0]);
        assert!(one_two_five(0.0, 10.0).is_empty());
        assert!(one_two_five(f64::NAN, 10.0).is_empty());
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(200.0), "200");
    }

    #[test]
    fn event_times_in_the_legend() {
        assert_eq!(times(&[3.06]), "+3.1 ms");
        assert_eq!(times(&[0.0, 503.2, 1007.0]), "+0, +503, +1007 ms");
        let many: Vec<f64> = (0..7).map(|k| k as f64 * 10.0).collect();
        assert_eq!(times(&many), "+0, +10, +20, +30, +40, ... ms");
    }

    #[test]
    fn cdf_is_an_svg_with_one_line_per_implementation() {
        let svg = cdf_svg(&[(
            "kill-primary".into(),
            vec![
                ("tdsvip".into(), vec![Some(30.0), Some(40.0), None]),
                ("keepalived".into(), vec![Some(900.0), Some(1100.0)]),
            ],
        )])
        .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("tdsvip: p50 40 / p99 - ms, 2/3 served"));
        assert!(svg.contains("keepalived: p50 900 / p99 1100 ms, 2/2 served"));
    }
}
