//! Figures for the AGRA report: signals with their explanations (the paper's
//! Figures 1, 2, 3 and 5), metric/loss curves (Figure 4) and method-comparison bars.
//!
//! Every figure is written twice, as `<stem>.svg` (scalable, for the paper) and
//! `<stem>.png` (quick viewing), by one drawing routine generic over the plotters
//! backend, so both files always show the same thing. Text uses the DejaVu Sans font
//! compiled into the binary, because machines running agra may have no system fonts.
//!
//! Inputs come from training runs that can diverge, so every routine tolerates empty,
//! constant and NaN data: NaN points leave gaps, and a flat or empty range is padded
//! to a usable axis instead of panicking inside plotters.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

/// Registers the bundled font under the family name plotters uses for sans-serif.
fn ensure_font() {
    FONT_ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // Cannot fail for the bundled file; if it ever did, text drawing would report it.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// Tableau palette: distinct on screen and in print; series `i` always gets colour `i`.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40),
    RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(127, 127, 127),
];
const IDEAL: RGBColor = RGBColor(110, 110, 110);
const PERTURBED: RGBColor = PALETTE[0];
const BUMP: RGBColor = PALETTE[1];
const ATTRIBUTION: RGBColor = PALETTE[2];
const RECONSTRUCTION: RGBColor = PALETTE[3];
const GRID: RGBColor = RGBColor(232, 232, 232);

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One signal with its explanation, as the paper's Figures 1, 2, 3, 5 draw it.
/// All arrays are `[dims, length]` row-major.
pub struct SignalPanel<'a> {
    pub title: String,
    pub ideal: &'a [f32],
    pub perturbed: &'a [f32],
    /// (position, dim) of each perturbation, marked on the plot.
    pub bumps: &'a [(f32, usize)],
    /// Drawn under the signal, in its own row.
    pub attribution: Option<&'a [f32]>,
    /// Std across members: a shaded band +/- spread around the attribution.
    pub spread: Option<&'a [f32]>,
    /// x0 - attribution, drawn dashed over the signal.
    pub reconstruction: Option<&'a [f32]>,
}

/// One line of a [`curves`] figure; `spread` draws a +/- band around it.
pub struct Series {
    pub name: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub spread: Option<Vec<f64>>,
}

/// A drawing that renders identically on any backend, so SVG and PNG never diverge.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// plotters errors are generic over the backend; flatten them to text for anyhow.
fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// Appends rather than replaces the extension, so stems like `fig4.k` keep their dot.
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(format!(".{ext}"));
    s.into()
}

fn render<DB: DrawingBackend, F: Figure>(root: DrawingArea<DB, Shift>, fig: &F) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    fig.draw(&root)?;
    root.present().map_err(pe)
}

fn emit<F: Figure>(stem: &Path, fig: &F) -> Result<()> {
    ensure_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (size, svg, png) = (fig.size(), with_ext(stem, "svg"), with_ext(stem, "png"));
    render(SVGBackend::new(&svg, size).into_drawing_area(), fig)
        .with_context(|| format!("writing {}", svg.display()))?;
    render(BitMapBackend::new(&png, size).into_drawing_area(), fig)
        .with_context(|| format!("writing {}", png.display()))
}

/// Range of the finite values, padded 5%; empty data gets 0..1 and a flat range is
/// widened, because plotters cannot map a zero-width or NaN axis.
fn range(vals: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.into_iter().filter(|v| v.is_finite() && v.abs() < 1e300) {
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 1e-9 * lo.abs().max(hi.abs()).max(1e-30) {
        let pad = if lo != 0.0 { lo.abs() * 0.1 } else { 0.5 };
        return (lo - pad, hi + pad);
    }
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Splits a polyline at points where any coordinate is non-finite, so a NaN shows as
/// a gap rather than a spike; works for (x, y) and (x, y, spread) tuples alike.
fn runs<T: Copy>(pts: impl IntoIterator<Item = T>, ok: impl Fn(&T) -> bool) -> Vec<Vec<T>> {
    let mut out = vec![Vec::new()];
    for p in pts {
        if ok(&p) {
            out.last_mut().unwrap().push(p);
        } else if !out.last().unwrap().is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Row `d` of a `[dims, length]` array as (index, value) points.
fn row(data: &[f32], d: usize, length: usize) -> impl Iterator<Item = (f64, f64)> + '_ {
    data[d * length..(d + 1) * length].iter().enumerate().map(|(i, &v)| (i as f64, v as f64))
}

/// Short tick/value text: "1" not "1.000", scientific only for very large or small values.
fn fmt_num(v: f64) -> String {
    // Ticks are computed as lo + k * step, so "zero" can arrive as -2.8e-17.
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        return format!("{v:.2e}");
    }
    let t = format!("{v:.3}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" { "0".into() } else { t.into() }
}

/// A tick label on an axis spanning `span`: `fmt_num`'s three decimals, or as many as ten
/// ticks over a narrower span need to differ (0.0345 and 0.035, not 0.035 twice).
fn fmt_tick(v: f64, span: f64) -> String {
    let digits = if span > 0.0 { (-(span / 10.0).log10()).ceil().clamp(0.0, 8.0) as usize } else { 0 };
    if digits <= 3 || v.abs() >= 1e4 {
        return fmt_num(v);
    }
    let v = if v.abs() < span * 1e-9 { 0.0 } else { v };
    format!("{v:.digits$}")
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn line<DB: DrawingBackend>(
    chart: &mut Chart<DB>, pts: impl IntoIterator<Item = (f64, f64)>, style: ShapeStyle, dashed: bool,
) -> Result<()> {
    for seg in runs(pts, |p| p.0.is_finite() && p.1.is_finite()) {
        if dashed {
            chart.draw_series(DashedLineSeries::new(seg, 7, 5, style)).map_err(pe)?;
        } else {
            chart.draw_series(LineSeries::new(seg, style)).map_err(pe)?;
        }
    }
    Ok(())
}

/// Shaded band from (x, centre, half-width) triples; a non-finite triple breaks it.
fn band<DB: DrawingBackend>(
    chart: &mut Chart<DB>, pts: impl IntoIterator<Item = (f64, f64, f64)>, c: RGBColor,
) -> Result<()> {
    for run in runs(pts, |p| p.0.is_finite() && p.1.is_finite() && p.2.is_finite()) {
        let upper = run.iter().map(|&(x, y, s)| (x, y + s.abs()));
        let poly: Vec<_> = upper.chain(run.iter().rev().map(|&(x, y, s)| (x, y - s.abs()))).collect();
        chart.draw_series([Polygon::new(poly, c.mix(0.25).filled())]).map_err(pe)?;
    }
    Ok(())
}

/// How a legend entry shows its series.
#[derive(Clone, Copy)]
enum Key { Line, Dashed, Marker, Band }

/// Draws one legend entry at pixel `(x, y)` (vertical centre) and returns its width.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>, (x, y): (i32, i32), c: RGBColor, key: Key, label: &str,
) -> Result<i32> {
    let seg = |a: i32, b: i32| PathElement::new(vec![(x + a, y), (x + b, y)], c.stroke_width(3));
    match key {
        Key::Line => area.draw(&seg(0, 28)),
        Key::Dashed => area.draw(&seg(0, 10)).and_then(|_| area.draw(&seg(16, 28))),
        Key::Marker => area.draw(&TriangleMarker::new((x + 14, y), 6, c.filled())),
        Key::Band => area
            .draw(&Rectangle::new([(x, y - 7), (x + 28, y + 7)], c.mix(0.25).filled()))
            .and_then(|_| area.draw(&seg(0, 28))),
    }
    .map_err(pe)?;
    let style = TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Left, VPos::Center));
    let (w, _) = area.estimate_text_size(label, &style).map_err(pe)?;
    area.draw(&Text::new(label.to_string(), (x + 34, y), style)).map_err(pe)?;
    Ok(34 + w as i32)
}

/// Draws signals and their explanations: one column per panel; rows are each
/// dimension's signal (ideal, perturbed, dashed reconstruction, bump markers), then,
/// if any panel has one, each dimension's attribution with its +/- spread band.
/// Errors if an array's length is not `dims * length` or a bump names a missing dim.
pub fn signals(stem: &Path, dims: usize, length: usize, panels: &[SignalPanel]) -> Result<()> {
    for p in panels {
        let fields = [("ideal", Some(p.ideal)), ("perturbed", Some(p.perturbed)), ("attribution", p.attribution),
            ("spread", p.spread), ("reconstruction", p.reconstruction)];
        for (name, data) in fields {
            if let Some(d) = data.filter(|d| d.len() != dims * length) {
                bail!("panel {:?}: {name} has {} values, expected {dims}x{length}", p.title, d.len());
            }
        }
        if let Some(b) = p.bumps.iter().find(|b| b.1 >= dims) {
            bail!("panel {:?}: bump at {} is in dim {}, but there are {dims}", p.title, b.0, b.1);
        }
    }
    emit(stem, &SignalsFig { dims, length, panels }).with_context(|| format!("drawing signals {}", stem.display()))
}

struct SignalsFig<'a, 'b> { dims: usize, length: usize, panels: &'a [SignalPanel<'b>] }

const CELL: (u32, u32) = (380, 230);
const LEGEND_LINE: u32 = 26;

impl SignalsFig<'_, '_> {
    fn has_attr(&self) -> bool {
        self.panels.iter().any(|p| p.attribution.is_some())
    }
    fn rows(&self) -> usize {
        (self.dims * if self.has_attr() { 2 } else { 1 }).max(1)
    }
    fn width(&self) -> u32 {
        self.panels.len().max(1) as u32 * CELL.0
    }

    /// Legend entries wrapped into lines that fit the width (one column is narrower
    /// than the whole legend); widths are estimated at ~8 px a character.
    fn legend_lines(&self) -> Vec<Vec<(RGBColor, Key, &'static str)>> {
        let mut keys = vec![(IDEAL, Key::Line, "ideal"), (PERTURBED, Key::Line, "perturbed")];
        if self.panels.iter().any(|p| p.reconstruction.is_some()) {
            keys.push((RECONSTRUCTION, Key::Dashed, "reconstruction"));
        }
        keys.push((BUMP, Key::Marker, "perturbation"));
        if self.has_attr() {
            let spread = self.panels.iter().any(|p| p.spread.is_some());
            keys.push((ATTRIBUTION, Key::Band, if spread { "attribution ± std" } else { "attribution" }));
        }
        let (mut lines, mut x) = (vec![vec![]], 12);
        for k in keys {
            let w = 58 + 8 * k.2.chars().count() as u32;
            if x + w > self.width() && !lines.last().unwrap().is_empty() {
                lines.push(vec![]);
                x = 12;
            }
            x += w;
            lines.last_mut().unwrap().push(k);
        }
        lines
    }
    fn legend_h(&self) -> u32 {
        self.legend_lines().len() as u32 * LEGEND_LINE + 10
    }

    fn cell<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, p: &SignalPanel, r: usize, c: usize) -> Result<()> {
        let (dims, len, last_row) = (self.dims, self.length, r + 1 == self.rows());
        let (attr_row, d) = (r >= dims, r % dims.max(1));
        let attr = p.attribution.filter(|_| attr_row);
        if dims == 0 || (attr_row && attr.is_none()) {
            let msg = if dims == 0 { "no data" } else { "no attribution" };
            let style = TextStyle::from((FONT, 15)).color(&IDEAL).pos(Pos::new(HPos::Center, VPos::Center));
            let (w, h) = area.dim_in_pixel();
            return area.draw(&Text::new(msg, (w as i32 / 2, h as i32 / 2), style)).map_err(pe);
        }
        let x1 = (len as f64 - 1.0).max(1.0);
        let spread = |i: usize| p.spread.map_or(0.0, |s| (s[d * len + i] as f64).abs());
        let (y0, y1) = match attr {
            Some(a) => range(row(a, d, len).flat_map(|(i, y)| [y + spread(i as usize), y - spread(i as usize), 0.0])),
            None => range([Some(p.ideal), Some(p.perturbed), p.reconstruction].into_iter().flatten()
                .flat_map(|a| row(a, d, len).map(|(_, y)| y))),
        };
        let mut b = ChartBuilder::on(area);
        b.margin(8).x_label_area_size(if last_row { 40 } else { 24 }).y_label_area_size(62);
        if r == 0 {
            b.caption(&p.title, (FONT, 18));
        }
        let mut chart = b.build_cartesian_2d(0.0..x1, y0..y1).map_err(pe)?;
        let mut mesh = chart.configure_mesh();
        mesh.bold_line_style(GRID).light_line_style(TRANSPARENT).label_style((FONT, 12)).axis_desc_style((FONT, 14));
        mesh.x_labels(6).y_labels(5).x_label_formatter(&|v| fmt_num(*v)).y_label_formatter(&|v| fmt_num(*v));
        if c == 0 {
            mesh.y_desc(format!("{}, dim {d}", if attr_row { "attribution" } else { "signal" }));
        }
        if last_row {
            mesh.x_desc("position");
        }
        mesh.draw().map_err(pe)?;

        // Bumps are marked in attribution rows too, to show whether the explanation finds them.
        for &(pos, _) in p.bumps.iter().filter(|b| b.1 == d && len > 0) {
            let x = pos as f64;
            if !(0.0..=x1).contains(&x) {
                continue;
            }
            chart.draw_series(DashedLineSeries::new(vec![(x, y0), (x, y1)], 3, 4, BUMP.mix(0.6).stroke_width(1)))
                .map_err(pe)?;
            if attr.is_none() {
                let y = p.perturbed[d * len + (x.round() as usize).min(len - 1)] as f64;
                let y = if y.is_finite() { y } else { y1 };
                chart.draw_series([TriangleMarker::new((x, y), 7, BUMP.filled())]).map_err(pe)?;
            }
        }
        if let Some(a) = attr {
            line(&mut chart, [(0.0, 0.0), (x1, 0.0)], BLACK.mix(0.3).stroke_width(1), false)?;
            if p.spread.is_some() {
                band(&mut chart, row(a, d, len).map(|(x, y)| (x, y, spread(x as usize))), ATTRIBUTION)?;
            }
            line(&mut chart, row(a, d, len), ATTRIBUTION.stroke_width(2), false)?;
        } else {
            line(&mut chart, row(p.ideal, d, len), IDEAL.stroke_width(2), false)?;
            line(&mut chart, row(p.perturbed, d, len), PERTURBED.stroke_width(2), false)?;
            if let Some(rec) = p.reconstruction {
                line(&mut chart, row(rec, d, len), RECONSTRUCTION.stroke_width(2), true)?;
            }
        }
        Ok(())
    }
}

impl Figure for SignalsFig<'_, '_> {
    fn size(&self) -> (u32, u32) {
        (self.width(), self.legend_h() + self.rows() as u32 * CELL.1)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        // One shared legend strip on top, so no panel loses space or has data covered.
        let (legend, grid) = root.split_vertically(self.legend_h());
        for (l, keys) in self.legend_lines().into_iter().enumerate() {
            let (mut x, y) = (12, (5 + LEGEND_LINE * l as u32 + LEGEND_LINE / 2) as i32);
            for (c, key, label) in keys {
                x += draw_key(&legend, (x, y), c, key, label)? + 24;
            }
        }
        if self.panels.is_empty() {
            return grid.draw(&Text::new("no panels", (20, 20), TextStyle::from((FONT, 15)).color(&IDEAL))).map_err(pe);
        }
        let cols = self.panels.len();
        for (k, cell) in grid.split_evenly((self.rows(), cols)).iter().enumerate() {
            self.cell(cell, &self.panels[k % cols], k / cols, k % cols)?;
        }
        Ok(())
    }
}

/// Line chart with the legend right of the plot (never over the data) and an optional
/// shaded +/- band per series; for "metric vs number of averaged members k" (Figure 4)
/// and training-loss curves. Points with a NaN x, y or spread are skipped; `x`, `y`
/// and `spread` are zipped, so values beyond the shortest are ignored.
pub fn curves(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    emit(stem, &CurvesFig { title, x_label, y_label, series }).with_context(|| format!("drawing curves {}", stem.display()))
}

struct CurvesFig<'a> { title: &'a str, x_label: &'a str, y_label: &'a str, series: &'a [Series] }

const PLOT: (u32, u32) = (720, 480);

impl Figure for CurvesFig<'_> {
    fn size(&self) -> (u32, u32) {
        let longest = self.series.iter().map(|s| s.name.chars().count() as u32).max();
        (PLOT.0 + longest.map_or(0, |n| (n * 9 + 60).min(360)), PLOT.1)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (plot, legend) = root.split_horizontally(PLOT.0);
        let spread = |s: &Series, i| s.spread.as_ref().map_or(0.0, |sp| sp.get(i).map_or(f64::NAN, |v: &f64| v.abs()));
        let (x0, x1) = range(self.series.iter().flat_map(|s| s.x.iter().copied()));
        let (y0, y1) = range(self.series.iter().flat_map(|s| {
            s.y.iter().enumerate().flat_map(move |(i, &y)| [y - spread(s, i), y + spread(s, i), y])
        }));
        let mut chart = ChartBuilder::on(&plot).caption(self.title, (FONT, 22)).margin(14).x_label_area_size(50)
            .y_label_area_size(78).build_cartesian_2d(x0..x1, y0..y1).map_err(pe)?;
        chart.configure_mesh()
            .bold_line_style(GRID).light_line_style(TRANSPARENT)
            .label_style((FONT, 14)).axis_desc_style((FONT, 16))
            .x_desc(self.x_label).y_desc(self.y_label)
            // The x axes count (members averaged, epochs): no more ticks than whole numbers,
            // or a run of two members got ticks at 1.1, 1.2, ...
            .x_labels(((x1 - x0).round().max(0.0) as usize + 1).clamp(2, 10))
            .x_label_formatter(&|v| fmt_num(*v)).y_label_formatter(&|v| fmt_tick(*v, y1 - y0))
            .draw().map_err(pe)?;
        // Bands first, so no band veils another series' line.
        for (i, s) in self.series.iter().enumerate() {
            if let Some(sp) = &s.spread {
                band(&mut chart, s.x.iter().zip(&s.y).zip(sp).map(|((&x, &y), &e)| (x, y, e)), colour(i))?;
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let pts: Vec<_> = s.x.iter().copied().zip(s.y.iter().copied()).collect();
            line(&mut chart, pts.iter().copied(), colour(i).stroke_width(2), false)?;
            // Few points (one per k) read better with markers, and a lone point needs one.
            if pts.len() <= 40 {
                let ok = pts.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite());
                chart.draw_series(ok.map(|p| Circle::new(p, 3, colour(i).filled()))).map_err(pe)?;
            }
            let key = if s.spread.is_some() { Key::Band } else { Key::Line };
            draw_key(&legend, (8, 60 + 24 * i as i32), colour(i), key, &s.name)?;
        }
        Ok(())
    }
}

/// Bar chart, one bar per `(label, value, +/- error)` in the given order and colour,
/// with error bars and the value printed above; compares methods on a metric.
/// A NaN value draws no bar; a NaN or zero error draws no error bar.
pub fn bars(stem: &Path, title: &str, y_label: &str, bars: &[(String, f64, f64)]) -> Result<()> {
    emit(stem, &BarsFig { title, y_label, bars }).with_context(|| format!("drawing bars {}", stem.display()))
}

struct BarsFig<'a> { title: &'a str, y_label: &'a str, bars: &'a [(String, f64, f64)] }

impl BarsFig<'_> {
    /// Wide enough per bar that its label fits under it without touching the next.
    fn per_bar(&self) -> u32 {
        (self.bars.iter().map(|b| b.0.chars().count() as u32).max().unwrap_or(0) * 8 + 24).clamp(90, 240)
    }
}

impl Figure for BarsFig<'_> {
    fn size(&self) -> (u32, u32) {
        ((self.per_bar() * self.bars.len() as u32 + 120).max(420), 460)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: f64| if e.is_finite() { e.abs() } else { 0.0 };
        let (y0, y1) = range(self.bars.iter().flat_map(|&(_, v, e)| [0.0, v - err(e), v + err(e)]));
        // Bars start at zero, so keep zero on the axis and leave room above for value labels.
        let (y0, y1) = (y0.min(0.0), y1.max(0.0) + 0.06 * (y1 - y0));
        let n = self.bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root).caption(self.title, (FONT, 22)).margin(14).x_label_area_size(40)
            .y_label_area_size(78).build_cartesian_2d(-0.5..n - 0.5, y0..y1).map_err(pe)?;
        chart.configure_mesh()
            .disable_x_mesh().x_labels(0)
            .bold_line_style(GRID).light_line_style(TRANSPARENT)
            .label_style((FONT, 14)).axis_desc_style((FONT, 16))
            .y_desc(self.y_label).y_label_formatter(&|v| fmt_num(*v))
            .draw().map_err(pe)?;
        // Category labels are placed by hand under each bar: a numeric axis would put
        // its ticks at round numbers, not at the bars.
        let label_style = TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Center, VPos::Top));
        let half = 0.5 - 14.0 / self.per_bar() as f64;
        for (i, (name, v, e)) in self.bars.iter().enumerate() {
            let (x, e) = (i as f64, err(*e));
            let (px, py) = chart.backend_coord(&(x, y0));
            root.draw(&Text::new(name.as_str(), (px, py + 8), label_style.clone())).map_err(pe)?;
            if !v.is_finite() {
                continue;
            }
            // One colour for single members and one for AGRA averages, so each pair reads as
            // a comparison (a colour per bar repeated its hues across methods).
            let fill = colour(usize::from(name.starts_with("agra-")));
            chart.draw_series([Rectangle::new([(x - half, 0.0), (x + half, *v)], fill.mix(0.85).filled())])
                .map_err(pe)?;
            if e > 0.0 {
                let style = BLACK.stroke_width(2);
                let cap = |y| EmptyElement::at((x, y)) + PathElement::new(vec![(-8, 0), (8, 0)], style);
                chart.draw_series([PathElement::new(vec![(x, v - e), (x, v + e)], style)]).map_err(pe)?;
                chart.draw_series([cap(v - e), cap(v + e)]).map_err(pe)?;
            }
            let text = if e > 0.0 { format!("{} ± {}", fmt_num(*v), fmt_num(e)) } else { fmt_num(*v) };
            let style = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series([EmptyElement::at((x, v.max(0.0) + e)) + Text::new(text, (0, -4), style)]).map_err(pe)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
