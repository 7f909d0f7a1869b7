//! The sweep report's figures, drawn as SVG strings with plotters (text stays SVG `<text>`,
//! so the report needs no fonts and embeds them inline). Three shapes cover the report:
//! points with interval bars (and a Pareto front), lines per method, grouped bars.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

const SIZE: (u32, u32) = (720, 440);
const FONT: &str = "sans-serif";

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

fn color(i: usize) -> RGBColor {
    // Tableau 10: distinguishable, and readable printed in grey.
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

/// `[lo, hi]` padded by 8% (a single value gets ±1 or ±10%).
fn range(vals: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) =
        vals.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo { (hi - lo) * 0.08 } else { (hi.abs() * 0.1).max(1.0) };
    (lo - pad)..(hi + pad)
}

/// One method's estimate with its interval.
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Points with vertical interval bars, labelled, and the Pareto front through the ones no
/// other point beats on both axes (lower x is better; `higher_is_better` says for y).
pub fn scatter(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[Point],
    higher_is_better: bool,
) -> Result<String> {
    // The front drawn as the curve through the points it keeps.
    let front: Vec<(f64, f64)> =
        pareto(points, higher_is_better).iter().map(|&i| (points[i].x, points[i].y)).collect();
    curve_with_points(title, x_desc, y_desc, &front, points)
}

/// Labelled points with vertical interval bars and a curve among them: a Pareto front
/// ([`scatter`]) or a search's predicted size–KL curve beside the settings measured.
pub fn curve_with_points(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curve: &[(f64, f64)],
    points: &[Point],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xr = range(curve.iter().map(|p| p.0).chain(points.iter().map(|p| p.x)));
        let yr = range(curve.iter().map(|p| p.1).chain(points.iter().flat_map(|p| [p.lo, p.hi, p.y])));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(xr, yr)
            .map_err(err)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(err)?;
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), BLACK.mix(0.5).stroke_width(2)))
            .map_err(err)?;
        for (i, p) in points.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(p.x, p.lo), (p.x, p.hi)], c)))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((p.x, p.y))
                        + Circle::new((0, 0), 4, c.filled())
                        + Text::new(p.label.clone(), (6, -14), (FONT, 12)),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Indices of the points on the front, by increasing x.
pub fn pareto(points: &[Point], higher_is_better: bool) -> Vec<usize> {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let mut idx: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].x.is_finite() && points[i].y.is_finite()).collect();
    idx.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x).then(points[b].y.total_cmp(&points[a].y)));
    let mut front: Vec<usize> = vec![];
    for i in idx {
        if front.last().is_none_or(|&j| better(points[i].y, points[j].y)) {
            front.push(i);
        }
    }
    front
}

/// One line per series (name, points by increasing x), optionally on a log₂ x axis.
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let all = || series.iter().flat_map(|(_, v)| v.iter().copied());
        let yr = range(all().map(|p| p.1).chain([0.0]));
        let caption = (FONT, 18);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(err)?;
                for (i, (name, pts)) in series.iter().enumerate() {
                    let c = color(i);
                    chart
                        .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                        .map_err(err)?
                        .label(name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(err)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .border_style(BLACK.mix(0.3))
                    .background_style(WHITE)
                    .draw()
                    .map_err(err)?;
            }};
        }
        let mut b = ChartBuilder::on(&root);
        b.caption(title, caption).margin(12).x_label_area_size(40).y_label_area_size(64);
        if log_x {
            let (lo, hi) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (lo, hi) = if lo > hi { (1.0, 2.0) } else { (lo / 1.3, hi * 1.3) };
            draw!(b.build_cartesian_2d((lo..hi).log_scale(), yr).map_err(err)?);
        } else {
            let xr = range(all().map(|p| p.0));
            draw!(b.build_cartesian_2d(xr, yr).map_err(err)?);
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Bars for each category, one bar per series side by side.
pub fn bars(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let top =
            series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(0f64, f64::max);
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..(top * 1.1).max(1e-9))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len().max(1))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    categories.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as f64;
        let w = 0.8 / k;
        for (s, (name, vals)) in series.iter().enumerate() {
            let c = color(s);
            let x0 = |i: usize| i as f64 - 0.4 + s as f64 * w;
            chart
                .draw_series(
                    vals.iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, v)| Rectangle::new([(x0(i), 0.0), (x0(i) + w * 0.92, *v)], c.filled())),
                )
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(label: &str, x: f64, y: f64) -> Point {
        Point { label: label.into(), x, y, lo: y - 1.0, hi: y + 1.0 }
    }

    #[test]
    fn the_front_keeps_only_undominated_points() {
        // (bits, accuracy): c is beaten by b (fewer bits, higher accuracy).
        let p = [pt("a", 4.5, 40.0), pt("b", 8.0, 47.0), pt("c", 16.0, 46.0), pt("d", 3.0, 20.0)];
        assert_eq!(pareto(&p, true), vec![3, 0, 1]);
        // Lower is better (KL): the fewest bits with the lowest value so far.
        let p = [pt("a", 4.0, 0.1), pt("b", 3.0, 0.3), pt("c", 8.0, 0.01), pt("d", 5.0, 0.2)];
        assert_eq!(pareto(&p, false), vec![1, 0, 2]);
    }

    #[test]
    fn figures_are_svg_with_their_labels_as_text() {
        let s =
            scatter("F1 vs bits", "bits/weight", "F1", &[pt("nf4", 4.5, 40.0), pt("none", 32.0, 47.0)], true)
                .unwrap();
        assert!(s.starts_with("<svg") && s.contains(">\nnf4\n</text>") && s.contains("<circle"), "{s:.300}");
        let s = lines("decode", "batch", "tokens/s", &[("nf4".into(), vec![(1.0, 19.0), (4.0, 38.0)])], true)
            .unwrap();
        assert!(s.contains("nf4") && s.contains("<polyline"), "{s:.300}");
        let s =
            bars("memory", "MB", &["none".into(), "nf4".into()], &[("weights".into(), vec![500.0, 90.0])])
                .unwrap();
        assert!(s.contains(">\nnone\n</text>") && s.matches("<rect").count() >= 3, "{s:.300}");
    }
}
