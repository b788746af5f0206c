//! Figures as PNG (plotters, bitmap backend): the t-SNE latent scatter of the
//! paper's Figure 2, training loss curves and the budget curves of the report.
//!
//! Text (titles, legends, tick labels) needs a system font (plotters' `ttf`
//! feature, through fontconfig). When drawing with text fails, the figure is
//! drawn again without any text rather than failing.

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

/// Blue of the encoder's latents (matplotlib's `tab:blue`, as in the paper).
pub const ENCODER_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Orange of the prior's / sampler's latents (`tab:orange`).
pub const SAMPLER_COLOR: RGBColor = RGBColor(255, 127, 14);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

/// Render a `w`×`h` figure with `draw(area, with_text)` and save it as PNG
/// (atomically). If drawing with text fails (no usable font), it is drawn
/// again without text.
fn render_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl Fn(&Area, bool) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let attempt = |buf: &mut [u8], text: bool| -> Result<()> {
        let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        draw(&root, text)?;
        root.present().map_err(perr)
    };
    if let Err(e) = attempt(&mut buf, true) {
        tracing::warn!(
            "{}: drawing with text failed ({e:#}); drawing without text",
            path.display()
        );
        buf.fill(255);
        attempt(&mut buf, false).with_context(|| format!("cannot draw {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::util::with_atomic_path(path, |tmp| {
        image::RgbImage::from_raw(w, h, buf)
            .context("bad figure buffer")?
            .save_with_format(tmp, image::ImageFormat::Png)
            .with_context(|| format!("cannot write {}", path.display()))
    })
}

/// Seeded N(0, σ²) numbers (SplitMix64 + Box–Muller), for the t-SNE start.
fn seeded_normal(n: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut state = crate::rng::mix(seed ^ 0x7453_4e45);
    let mut uniform = || {
        state = crate::rng::mix(state);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            (sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Rows of a `[n, d]` tensor as f32.
fn rows(x: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let s = x.size();
    if s.len() != 2 {
        bail!("expected a [n, d] tensor, got {s:?}");
    }
    let v = Vec::<f32>::try_from(
        x.detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .flatten(0, -1),
    )?;
    Ok((v, s[0] as usize, s[1] as usize))
}

/// t-SNE of the rows of `x` (`[n, d]`) to 2-D: Barnes–Hut (θ = 0.5), perplexity
/// 30 (less for fewer than 91 points), 1,000 iterations, Euclidean distance,
/// started from N(0, 10⁻⁸) drawn from `seed`.
pub fn tsne_embed(x: &Tensor, seed: u64) -> Result<Vec<[f32; 2]>> {
    let (data, n, d) = rows(x)?;
    if n < 4 {
        bail!("t-SNE needs at least 4 points, got {n}");
    }
    if data.iter().any(|v| !v.is_finite()) {
        bail!("t-SNE input has NaN or infinite values");
    }
    let samples: Vec<&[f32]> = data.chunks(d.max(1)).collect();
    let perplexity = 30f32.min(((n - 1) / 3) as f32).max(1.0);
    let mut tsne: bhtsne::tSNE<f32, &[f32], 2> = bhtsne::tSNE::new(&samples);
    tsne.perplexity(perplexity)
        .epochs(1000)
        .initial_embedding(seeded_normal(n * 2, 1e-4, seed))
        .barnes_hut(0.5, |a: &&[f32], b: &&[f32]| {
            a.iter()
                .zip(b.iter())
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f32>()
                .sqrt()
        });
    let y = tsne.embedding();
    Ok(y.chunks(2).map(|c| [c[0], c[1]]).collect())
}

/// Paper Fig. 2: t-SNE of two latent sets `a` (`[n, d]`, blue, e.g. the
/// encoder's) and `b` (`[m, d]`, orange, the prior's or the sampler's), embedded
/// together with [`tsne_embed`], as one scatter plot with a legend and title.
pub fn tsne_scatter(
    a: &Tensor,
    b: &Tensor,
    label_a: &str,
    label_b: &str,
    title: &str,
    path: &Path,
    seed: u64,
) -> Result<()> {
    let (na, nb) = (a.size()[0] as usize, b.size()[0] as usize);
    if a.size().len() != 2 || b.size().len() != 2 || a.size()[1] != b.size()[1] {
        bail!(
            "tsne_scatter: latent sets must be [n, d] and [m, d], got {:?} and {:?}",
            a.size(),
            b.size()
        );
    }
    let both = Tensor::cat(&[a.to_kind(Kind::Float), b.to_kind(Kind::Float)], 0);
    let t0 = std::time::Instant::now();
    let y = tsne_embed(&both, seed)?;
    tracing::info!(
        "t-SNE of {} + {} points: {:.1} s",
        na,
        nb,
        t0.elapsed().as_secs_f64()
    );
    let (pa, pb) = y.split_at(na);
    scatter_png(
        &[
            (pa, ENCODER_COLOR, label_a.to_string()),
            (pb, SAMPLER_COLOR, label_b.to_string()),
        ],
        title,
        path,
    )
}

/// t-SNE of the rows of `x` (`[n, d]`) coloured by their class `labels`
/// (`[n]`, int64): whether the map shows the classes the latents keep
/// (issue 29; the encoder-vs-sampler plot of [`tsne_scatter`] cannot).
/// Returns the 2-D points, in the order of `x`.
pub fn tsne_classes(
    x: &Tensor,
    labels: &Tensor,
    title: &str,
    path: &Path,
    seed: u64,
) -> Result<Vec<[f32; 2]>> {
    let lab = Vec::<i64>::try_from(labels.to_kind(Kind::Int64).to_device(tch::Device::Cpu))
        .map_err(|e| anyhow::anyhow!("tsne_classes: labels: {e}"))?;
    if x.size().len() != 2 || lab.len() as i64 != x.size()[0] {
        bail!(
            "tsne_classes: need [n, d] points and n labels, got {:?} and {}",
            x.size(),
            lab.len()
        );
    }
    let y = tsne_embed(&x.to_kind(Kind::Float), seed)?;
    let mut classes: Vec<i64> = lab.clone();
    classes.sort_unstable();
    classes.dedup();
    let groups: Vec<(Vec<[f32; 2]>, RGBColor, String)> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let pts = y
                .iter()
                .zip(&lab)
                .filter(|(_, &l)| l == c)
                .map(|(p, _)| *p)
                .collect();
            (pts, TAB10[i % TAB10.len()], format!("class {c}"))
        })
        .collect();
    let refs: Vec<(&[[f32; 2]], RGBColor, String)> = groups
        .iter()
        .map(|(p, c, l)| (p.as_slice(), *c, l.clone()))
        .collect();
    scatter_png(&refs, title, path)?;
    Ok(y)
}

/// A square scatter plot of point groups (colour, legend label) in one frame.
fn scatter_png(groups: &[(&[[f32; 2]], RGBColor, String)], title: &str, path: &Path) -> Result<()> {
    let y: Vec<[f32; 2]> = groups.iter().flat_map(|g| g.0.iter().copied()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in &y {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    let (mx, my) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
    let (xr, yr) = (x0 - mx..x1 + mx, y0 - my..y1 + my);
    render_png(path, (800, 800), |root, text| {
        let mut b = ChartBuilder::on(root);
        b.margin(15);
        if text {
            b.caption(title, ("sans-serif", 26))
                .x_label_area_size(30)
                .y_label_area_size(45);
        }
        let mut chart = b.build_cartesian_2d(xr.clone(), yr.clone()).map_err(perr)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08));
        if !text {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(perr)?;
        for (pts, color, label) in groups {
            let color = *color;
            let s = chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p[0], p[1]), 2, color.mix(0.55).filled())),
                )
                .map_err(perr)?;
            if text {
                s.label(format!("{label} ({})", pts.len()))
                    .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 18))
                .draw()
                .map_err(perr)?;
        }
        Ok(())
    })
}

/// `(step, value)` series of `key` from a `metrics.jsonl`: from the step lines
/// (`"kind":"step"`) when they have the key, else from the epoch lines (plotted
/// at their `step`). Non-finite values are dropped.
pub fn read_metric_series(metrics_jsonl: &Path, key: &str) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(metrics_jsonl)
        .with_context(|| format!("cannot read {}", metrics_jsonl.display()))?;
    let mut by_kind: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // a torn last line of a running job
        };
        let slot = match v.get("kind").and_then(|k| k.as_str()) {
            Some("step") | None => 0,
            Some("epoch") => 1,
            Some(_) => continue,
        };
        if let (Some(s), Some(y)) = (
            v.get("step").and_then(|s| s.as_f64()),
            v.get(key).and_then(|y| y.as_f64()),
        ) {
            if y.is_finite() {
                by_kind[slot].push((s, y));
            }
        }
    }
    let [steps, epochs] = by_kind;
    Ok(if steps.is_empty() { epochs } else { steps })
}

/// Training curves: each of `keys` from `metrics.jsonl` against the step, one
/// panel per key, log y axis when all values are positive. Keys without
/// values get an empty panel; it is an error when no key has any.
pub fn loss_curves(metrics_jsonl: &Path, keys: &[&str], path: &Path) -> Result<()> {
    if keys.is_empty() {
        bail!("loss_curves: no keys to plot");
    }
    let series = keys
        .iter()
        .map(|k| read_metric_series(metrics_jsonl, k))
        .collect::<Result<Vec<_>>>()?;
    if series.iter().all(|s| s.is_empty()) {
        bail!("{}: none of {keys:?} has values", metrics_jsonl.display());
    }
    // One step axis for all panels.
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    for &(x, _) in series.iter().flatten() {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let panel_h = 260u32;
    render_png(path, (900, panel_h * keys.len() as u32), |root, text| {
        let panels = root.split_evenly((keys.len(), 1));
        for ((panel, key), s) in panels.iter().zip(keys).zip(&series) {
            draw_curve(panel, key, s, (x0, x1), text)?;
        }
        Ok(())
    })
}

/// Tick label: plain decimals with up to 4 significant digits, else scientific.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let t = format!("{v:.digits$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    } else {
        format!("{v:.1e}")
    }
}

fn draw_curve(
    area: &Area,
    key: &str,
    s: &[(f64, f64)],
    (x0, x1): (f64, f64),
    text: bool,
) -> Result<()> {
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(_, y) in s {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if s.is_empty() {
        (y0, y1) = (0.0, 1.0);
    }
    // Log scale for positive values spanning more than a factor 2 (a log axis
    // over a narrower range would show no tick labels).
    let log = !s.is_empty() && y0 > 0.0 && y1 > 2.0 * y0;
    let color = ENCODER_COLOR;
    let mut b = ChartBuilder::on(area);
    b.margin(10).margin_right(30);
    if text {
        let cap = if s.is_empty() {
            format!("{key} (no values)")
        } else {
            format!("{key}{}", if log { " (log)" } else { "" })
        };
        b.caption(cap, ("sans-serif", 18))
            .x_label_area_size(28)
            .y_label_area_size(70);
    }
    let line = s.iter().copied();
    if log {
        let (lo, hi) = if y1 > y0 {
            (y0 / 1.1, y1 * 1.1)
        } else {
            (y0 / 2.0, y0 * 2.0)
        };
        let mut chart = b
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(perr)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(BLACK.mix(0.04));
        if text {
            mesh.x_desc("step")
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(perr)?;
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(1)))
            .map_err(perr)?;
        if s.len() <= 50 {
            chart
                .draw_series(s.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(perr)?;
        }
    } else {
        let pad = if y1 > y0 {
            (y1 - y0) * 0.05
        } else {
            (y0.abs() * 0.05).max(1e-6)
        };
        let mut chart = b
            .build_cartesian_2d(x0..x1, y0 - pad..y1 + pad)
            .map_err(perr)?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(BLACK.mix(0.04));
        if text {
            mesh.x_desc("step")
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(perr)?;
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(1)))
            .map_err(perr)?;
        if s.len() <= 50 {
            chart
                .draw_series(s.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(perr)?;
        }
    }
    Ok(())
}

/// matplotlib's `tab10`: one colour per row of the budget figure, per class of
/// [`tsne_classes`].
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The budget figure: for each data set (and preset) of `lines`, rec FID and
/// sample FID (rows) against the epochs and against the training wall time
/// (columns, both on log₂ axes), one line per row of Table 1 (legend), each
/// point the mean over seeds with ± one standard deviation as an error bar.
pub fn budget_curves(lines: &[super::aggregate::BudgetLine], path: &Path) -> Result<()> {
    use super::aggregate::{BudgetPoint, Stat};
    let mut panels: Vec<&str> = Vec::new();
    for l in lines {
        if !panels.contains(&l.panel.as_str()) {
            panels.push(&l.panel);
        }
    }
    if panels.is_empty() {
        bail!("budget_curves: no curves");
    }
    type Pick = fn(&BudgetPoint) -> Option<Stat>;
    let metrics: [(&str, Pick); 2] = [("rec FID", |p| p.rec), ("sample FID", |p| p.sample)];
    let axes: [(&str, Pick); 2] = [
        ("epochs", |p| {
            Some(Stat {
                mean: p.epochs,
                std: 0.0,
                n: 1,
            })
        }),
        ("training wall time (s)", |p| p.wall_s),
    ];
    let (w, panel_h) = (1200u32, 320u32);
    render_png(
        path,
        (w, panel_h * 2 * panels.len() as u32),
        |root, text| {
            let grid = root.split_evenly((2 * panels.len(), 2));
            for (pi, panel) in panels.iter().enumerate() {
                for (mi, (mname, metric)) in metrics.iter().enumerate() {
                    for (ai, (aname, axis)) in axes.iter().enumerate() {
                        let area = &grid[(2 * pi + mi) * 2 + ai];
                        // (line index, x = log₂ of the axis, y mean, y std) of every point.
                        let mut pts: Vec<(usize, f64, f64, f64)> = Vec::new();
                        for (li, l) in lines.iter().enumerate().filter(|(_, l)| l.panel == *panel) {
                            for p in &l.points {
                                if let (Some(x), Some(y)) = (axis(p), metric(p)) {
                                    if x.mean > 0.0 && y.mean.is_finite() {
                                        pts.push((li, x.mean.log2(), y.mean, y.std));
                                    }
                                }
                            }
                        }
                        let title = format!("{panel}: {mname} vs {aname}");
                        draw_budget_panel(area, &title, aname, lines, &pts, text)?;
                    }
                }
            }
            Ok(())
        },
    )
}

fn draw_budget_panel(
    area: &Area,
    title: &str,
    x_name: &str,
    lines: &[super::aggregate::BudgetLine],
    pts: &[(usize, f64, f64, f64)],
    text: bool,
) -> Result<()> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(_, x, y, s) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y - s);
        y1 = y1.max(y + s);
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let xpad = ((x1 - x0) * 0.08).max(0.25);
    let ypad = ((y1 - y0) * 0.08).max(1e-3 * y1.abs().max(1.0));
    let mut b = ChartBuilder::on(area);
    b.margin(10).margin_right(20);
    if text {
        b.caption(title, ("sans-serif", 17))
            .x_label_area_size(36)
            .y_label_area_size(55);
    }
    let mut chart = b
        .build_cartesian_2d(x0 - xpad..x1 + xpad, y0 - ypad..y1 + ypad)
        .map_err(perr)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(BLACK.mix(0.04));
    // Epochs: labels at powers of two only; wall time: 3 significant digits.
    let epochs_axis = x_name == "epochs";
    let fmt_x = |v: &f64| {
        let x = 2f64.powf(*v);
        if epochs_axis {
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        } else {
            let digits = (2 - x.abs().max(1e-9).log10().floor() as i32).max(0) as usize;
            let r = 10f64.powi(x.abs().max(1e-9).log10().floor() as i32 - 2);
            let t = format!("{:.digits$}", (x / r).round() * r);
            if t.contains('.') {
                t.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                t
            }
        }
    };
    let fmt_y = |v: &f64| tick(*v);
    let desc = format!("{x_name} (log₂)");
    if text {
        mesh.x_desc(desc.as_str())
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(perr)?;
    let cap = 0.04 * (x1 - x0 + 2.0 * xpad);
    for (li, l) in lines.iter().enumerate() {
        let mine: Vec<(f64, f64, f64)> = pts
            .iter()
            .filter(|p| p.0 == li)
            .map(|p| (p.1, p.2, p.3))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let color = TAB10[li % TAB10.len()];
        let s = chart
            .draw_series(LineSeries::new(
                mine.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(perr)?;
        if text {
            s.label(l.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(
                mine.iter()
                    .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
            )
            .map_err(perr)?;
        for &(x, y, sd) in mine.iter().filter(|p| p.2 > 0.0) {
            let style = color.stroke_width(1);
            for seg in [
                vec![(x, y - sd), (x, y + sd)],
                vec![(x - cap, y - sd), (x + cap, y - sd)],
                vec![(x - cap, y + sd), (x + cap, y + sd)],
            ] {
                chart
                    .draw_series(std::iter::once(PathElement::new(seg, style)))
                    .map_err(perr)?;
            }
        }
    }
    if text && !pts.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(perr)?;
    }
    Ok(())
}
