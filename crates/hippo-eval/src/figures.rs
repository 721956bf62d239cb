//! Figures of the evaluation report, each written as `<stem>.png` and `<stem>.svg`.
//!
//! Drawn with `plotters`: the bitmap backend renders into memory and is encoded with the `png`
//! crate; the SVG backend renders to a string. Text goes through `ab_glyph` with DejaVu Sans
//! embedded in the binary (the `dejavu` crate), registered as the `sans-serif` family on first
//! use, so no system font is needed; the SVG names the `sans-serif` family and leaves the glyphs
//! to the viewer.
//!
//! The functions take plain data (numbers, labels, a metrics file) and know nothing about the
//! evaluation report types. Empty or malformed data is an error ([`FigureError`]), never a
//! panic or a blank picture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::{Deserialize, Serialize};

/// Errors of figure drawing.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// Nothing to draw.
    #[error("{figure}: {what} is empty")]
    Empty {
        /// The figure.
        figure: &'static str,
        /// The empty input.
        what: String,
    },
    /// Inputs that must have equal lengths do not.
    #[error("{figure}: {what}: {left} vs {right} values")]
    LengthMismatch {
        /// The figure.
        figure: &'static str,
        /// The two inputs.
        what: String,
        /// Length of the first.
        left: usize,
        /// Length of the second.
        right: usize,
    },
    /// A value that cannot be drawn.
    #[error("{figure}: {what}")]
    Invalid {
        /// The figure.
        figure: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A line of a metrics file is not a JSON object with a numeric `step`.
    #[error("{path}:{line}: {message}")]
    Metrics {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The plotting backend or the PNG encoder failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The file being drawn.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
    /// The embedded font could not be registered.
    #[error("the embedded DejaVu Sans font could not be registered with plotters")]
    Font,
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, FigureError>;

/// The two files of a figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigurePaths {
    /// `<stem>.png`.
    pub png: PathBuf,
    /// `<stem>.svg`.
    pub svg: PathBuf,
}

/// One line of a line chart, with an optional shaded band (e.g. a confidence interval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// x values.
    pub x: Vec<f64>,
    /// y values, one per x.
    pub y: Vec<f64>,
    /// Lower and upper edge of a band around the line, one each per x.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
}

impl Series {
    /// A line without a band.
    pub fn new(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Self {
            label: label.into(),
            x,
            y,
            band: None,
        }
    }

    /// The same line with a shaded band from `lo` to `hi`.
    pub fn with_band(mut self, lo: Vec<f64>, hi: Vec<f64>) -> Self {
        self.band = Some((lo, hi));
        self
    }
}

/// One bar with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// Category label under the bar.
    pub label: String,
    /// Bar height.
    pub mean: f64,
    /// Lower end of the error bar.
    pub lo: f64,
    /// Upper end of the error bar.
    pub hi: f64,
}

/// Titles of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// Caption above the chart.
    pub title: String,
    /// x-axis description.
    pub x: String,
    /// y-axis description.
    pub y: String,
}

impl Labels {
    /// Title and axis descriptions.
    pub fn new(title: impl Into<String>, x: impl Into<String>, y: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x: x.into(),
            y: y.into(),
        }
    }
}

/// Per-step training metrics read from a `metrics.jsonl` file: every numeric field of every line,
/// keyed by field name, as `(step, value)` in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingLog {
    /// Metric name → `(step, value)` points.
    pub metrics: BTreeMap<String, Vec<(f64, f64)>>,
}

impl TrainingLog {
    /// The points of one metric, if the log has it.
    pub fn get(&self, name: &str) -> Option<&[(f64, f64)]> {
        self.metrics.get(name).map(Vec::as_slice)
    }
}

/// Metrics drawn by default from a `hippo-train` log (those present are drawn).
pub const DEFAULT_TRAINING_METRICS: [&str; 8] = [
    "loss",
    "lm",
    "valid_ppl",
    "mean_salience",
    "tagged_ratio",
    "buffer_util",
    "grad_norm",
    "lr",
];

pub use crate::probe::BufferTrace;

/// Reads a `metrics.jsonl` as written by `hippo_train::trainer::metrics::MetricsWriter`: one JSON
/// object per line with a numeric `step`; every other numeric field becomes a metric (fields
/// that are absent or `null` on a line, such as `valid_ppl` between validations, are skipped).
/// Blank lines are ignored; a file without a single step is an error.
pub fn read_metrics_jsonl(path: &Path) -> Result<TrainingLog> {
    let text = std::fs::read_to_string(path).map_err(|source| FigureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| FigureError::Metrics {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut log = TrainingLog::default();
    let mut rows = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad(i + 1, "not a JSON object".into()))?;
        let step = obj
            .get("step")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| bad(i + 1, "no numeric \"step\" field".into()))?;
        for (key, v) in obj {
            if key == "step" {
                continue;
            }
            if let Some(x) = v.as_f64() {
                log.metrics.entry(key.clone()).or_default().push((step, x));
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(FigureError::Empty {
            figure: "training log",
            what: path.display().to_string(),
        });
    }
    Ok(log)
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Font family every text in the figures uses.
const FONT: &str = "sans-serif";

/// tab10 colours.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Axis tick text: up to 4 decimals without trailing zeros; scientific outside [1e-3, 1e5).
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.to_string() }
    }
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok { Ok(()) } else { Err(FigureError::Font) }
}

/// Internal drawing result: the backend's message.
type Drawn = std::result::Result<(), String>;

fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A figure that can be drawn on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn;
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Draws `fig` to `<stem>.png` and `<stem>.svg` (creating the parent folder).
fn render<F: Figure>(fig: &F, stem: &Path) -> Result<FigurePaths> {
    ensure_font()?;
    let paths = FigurePaths {
        png: with_ext(stem, "png"),
        svg: with_ext(stem, "svg"),
    };
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| FigureError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let (w, h) = fig.size();
    let draw_err = |path: &Path| {
        let path = path.to_path_buf();
        move |message| FigureError::Draw { path, message }
    };

    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(msg)
            .and_then(|()| fig.draw(&root))
            .and_then(|()| root.present().map_err(msg))
            .map_err(draw_err(&paths.png))?;
    }
    write_png(&paths.png, &pixels, (w, h))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(msg)
            .and_then(|()| fig.draw(&root))
            .and_then(|()| root.present().map_err(msg))
            .map_err(draw_err(&paths.svg))?;
    }
    std::fs::write(&paths.svg, svg).map_err(|source| FigureError::Io {
        path: paths.svg.clone(),
        source,
    })?;
    Ok(paths)
}

fn write_png(path: &Path, rgb: &[u8], (w, h): (u32, u32)) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|source| FigureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(rgb)?;
            writer.finish()
        })
        .map_err(|e| FigureError::Draw {
            path: path.to_path_buf(),
            message: format!("PNG encoding: {e}"),
        })
}

// ---------------------------------------------------------------------------------------------
// Validation helpers.

fn check_finite(figure: &'static str, what: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(FigureError::Invalid {
            figure,
            what: format!("{what}[{i}] is {}", values[i]),
        }),
        None => Ok(()),
    }
}

fn check_series(figure: &'static str, series: &[Series]) -> Result<()> {
    if series.is_empty() {
        return Err(FigureError::Empty {
            figure,
            what: "the series list".into(),
        });
    }
    for s in series {
        if s.x.is_empty() {
            return Err(FigureError::Empty {
                figure,
                what: format!("series {:?}", s.label),
            });
        }
        let same = |what: &str, n: usize| {
            if n == s.x.len() {
                Ok(())
            } else {
                Err(FigureError::LengthMismatch {
                    figure,
                    what: format!("series {:?}: x and {what}", s.label),
                    left: s.x.len(),
                    right: n,
                })
            }
        };
        same("y", s.y.len())?;
        check_finite(figure, &format!("series {:?} x", s.label), &s.x)?;
        check_finite(figure, &format!("series {:?} y", s.label), &s.y)?;
        if let Some((lo, hi)) = &s.band {
            same("band lower edge", lo.len())?;
            same("band upper edge", hi.len())?;
            check_finite(figure, &format!("series {:?} band", s.label), lo)?;
            check_finite(figure, &format!("series {:?} band", s.label), hi)?;
        }
    }
    Ok(())
}

/// `[min, max]` of `values`, widened by 5% (or by 1 / 5% of |v| when all are equal).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.05 * lo.abs() };
        (lo - pad, hi + pad)
    }
}

// ---------------------------------------------------------------------------------------------
// Line charts.

struct LineChart<'a> {
    series: &'a [Series],
    labels: &'a Labels,
}

impl LineChart<'_> {
    /// x: the data's extent (padded only when it is a single value); y: padded extent of the
    /// lines and bands.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let xs = || self.series.iter().flat_map(|s| s.x.iter().copied());
        let (a, b) = xs().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
        let x = if b > a { (a, b) } else { padded_range(xs()) };
        let ys = self.series.iter().flat_map(|s| {
            let band = s.band.iter().flat_map(|(l, h)| l.iter().chain(h).copied());
            s.y.iter().copied().chain(band)
        });
        (x, padded_range(ys))
    }
}

impl Figure for LineChart<'_> {
    fn size(&self) -> (u32, u32) {
        (1024, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let ((x0, x1), (y0, y1)) = self.ranges();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.labels.title, (FONT, 26))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_desc(&self.labels.x)
            .y_desc(&self.labels.y)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(msg)?;
        for (i, s) in self.series.iter().enumerate() {
            let c = colour(i);
            if let Some((lo, hi)) = &s.band {
                let mut pts: Vec<(f64, f64)> =
                    s.x.iter().copied().zip(hi.iter().copied()).collect();
                pts.extend(s.x.iter().copied().zip(lo.iter().copied()).rev());
                chart
                    .draw_series(std::iter::once(Polygon::new(pts, c.mix(0.18).filled())))
                    .map_err(msg)?;
            }
            let pts: Vec<(f64, f64)> = s.x.iter().copied().zip(s.y.iter().copied()).collect();
            let line = chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(msg)?;
            line.label(&s.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
            });
            if pts.len() <= 40 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(msg)?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(msg)?;
        Ok(())
    }
}

/// A line chart of `series` with the given titles.
pub fn line_chart(series: &[Series], labels: &Labels, out_stem: &Path) -> Result<FigurePaths> {
    check_series("line chart", series)?;
    render(&LineChart { series, labels }, out_stem)
}

/// Perplexity by position within a segment (base vs HippoFormer): one series per model,
/// x = position (0-based token index in the segment), y = perplexity.
pub fn ppl_by_position(series: &[Series], out_stem: &Path) -> Result<FigurePaths> {
    check_series("perplexity by position", series)?;
    let labels = Labels::new(
        "Perplexity by position in the segment",
        "position in segment (tokens)",
        "perplexity",
    );
    render(
        &LineChart {
            series,
            labels: &labels,
        },
        out_stem,
    )
}

/// Perplexity by segment index within a document: one series per model, x = segment index
/// (0 = first segment), y = perplexity; a band draws a confidence interval.
pub fn ppl_by_segment(series: &[Series], out_stem: &Path) -> Result<FigurePaths> {
    check_series("perplexity by segment", series)?;
    let labels = Labels::new(
        "Perplexity by segment index",
        "segment index in document",
        "perplexity",
    );
    render(
        &LineChart {
            series,
            labels: &labels,
        },
        out_stem,
    )
}

// ---------------------------------------------------------------------------------------------
// Bars.

struct BarChart<'a> {
    bars: &'a [Bar],
    labels: &'a Labels,
}

impl Figure for BarChart<'_> {
    fn size(&self) -> (u32, u32) {
        (1024.max(110 * self.bars.len() as u32 + 160).min(4000), 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let n = self.bars.len() as i32;
        let (y0, y1) = padded_range(
            self.bars
                .iter()
                .flat_map(|b| [b.lo, b.hi, b.mean])
                .chain([0.0]),
        );
        let mut chart = ChartBuilder::on(root)
            .caption(&self.labels.title, (FONT, 26))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n - 1).into_segmented(), y0..y1)
            .map_err(msg)?;
        let names: Vec<&str> = self.bars.iter().map(|b| b.label.as_str()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.bars.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| names.get(i))
                    .map_or_else(String::new, |s| (*s).to_string()),
                _ => String::new(),
            })
            .x_desc(&self.labels.x)
            .y_desc(&self.labels.y)
            .y_label_formatter(&tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(msg)?;
        if y0 < 0.0 && y1 > 0.0 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::Exact(0), 0.0), (SegmentValue::Last, 0.0)],
                    BLACK.stroke_width(1),
                )))
                .map_err(msg)?;
        }
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, b)| {
                let i = i as i32;
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.mean),
                    ],
                    colour(i as usize).mix(0.85).filled(),
                );
                r.set_margin(0, 0, 14, 14);
                r
            }))
            .map_err(msg)?;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, b)| {
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i as i32),
                    b.lo,
                    b.mean,
                    b.hi,
                    BLACK.stroke_width(2),
                    16,
                )
            }))
            .map_err(msg)?;
        Ok(())
    }
}

/// Bars with error bars (e.g. ablations: mean ± CI of Δ perplexity vs the full model).
/// `y_label` names the plotted quantity.
pub fn ablation_bars(bars: &[Bar], y_label: &str, out_stem: &Path) -> Result<FigurePaths> {
    const FIGURE: &str = "ablation bars";
    if bars.is_empty() {
        return Err(FigureError::Empty {
            figure: FIGURE,
            what: "the bar list".into(),
        });
    }
    for b in bars {
        check_finite(FIGURE, &format!("bar {:?}", b.label), &[b.mean, b.lo, b.hi])?;
        if b.lo > b.hi {
            return Err(FigureError::Invalid {
                figure: FIGURE,
                what: format!("bar {:?}: interval lo {} > hi {}", b.label, b.lo, b.hi),
            });
        }
    }
    let labels = Labels::new("Ablations (mean with 95% CI)", "ablation", y_label);
    render(
        &BarChart {
            bars,
            labels: &labels,
        },
        out_stem,
    )
}

// ---------------------------------------------------------------------------------------------
// Panels (training curves, buffer dynamics).

struct Panels<'a> {
    title: &'a str,
    x_label: &'a str,
    /// (panel title, points).
    panels: Vec<(String, &'a [(f64, f64)])>,
    columns: usize,
}

impl Figure for Panels<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.columns) as u32;
        (if self.columns == 1 { 1024 } else { 1280 }, 70 + 300 * rows)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let root = root
            .margin(12, 0, 0, 0)
            .titled(self.title, (FONT, 28))
            .map_err(msg)?;
        let rows = self.panels.len().div_ceil(self.columns);
        let areas = root.split_evenly((rows, self.columns));
        for (i, ((name, pts), area)) in self.panels.iter().zip(&areas).enumerate() {
            let (x0, x1) = padded_range(pts.iter().map(|p| p.0));
            let (y0, y1) = padded_range(pts.iter().map(|p| p.1));
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(msg)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 15))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(msg)?;
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(msg)?;
            if pts.len() <= 60 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(msg)?;
            }
        }
        Ok(())
    }
}

/// Training curves: one panel per metric of `log` named in `metrics` (e.g.
/// [`DEFAULT_TRAINING_METRICS`] filtered by [`TrainingLog::get`]), x = optimizer step.
/// A name the log lacks is an error that lists the metrics it has.
pub fn training_curves(
    log: &TrainingLog,
    metrics: &[&str],
    out_stem: &Path,
) -> Result<FigurePaths> {
    const FIGURE: &str = "training curves";
    if metrics.is_empty() {
        return Err(FigureError::Empty {
            figure: FIGURE,
            what: "the metric list".into(),
        });
    }
    let mut panels = Vec::with_capacity(metrics.len());
    for &name in metrics {
        let pts = log.get(name).ok_or_else(|| FigureError::Invalid {
            figure: FIGURE,
            what: format!(
                "the log has no metric {name:?} (it has: {})",
                log.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        if pts.is_empty() {
            return Err(FigureError::Empty {
                figure: FIGURE,
                what: format!("metric {name:?}"),
            });
        }
        if let Some(p) = pts.iter().find(|p| !(p.0.is_finite() && p.1.is_finite())) {
            return Err(FigureError::Invalid {
                figure: FIGURE,
                what: format!("metric {name:?} has a non-finite point {p:?}"),
            });
        }
        panels.push((name.to_string(), pts));
    }
    render(
        &Panels {
            title: "Training curves",
            x_label: "optimizer step",
            columns: if panels.len() == 1 { 1 } else { 2 },
            panels,
        },
        out_stem,
    )
}

/// Buffer dynamics over one document: utilisation, mean effective priority and accepted writes
/// after each segment, stacked panels against the segment index.
pub fn buffer_dynamics(trace: &BufferTrace, out_stem: &Path) -> Result<FigurePaths> {
    const FIGURE: &str = "buffer dynamics";
    let n = trace.utilisation.len();
    if n == 0 {
        return Err(FigureError::Empty {
            figure: FIGURE,
            what: "the utilisation trace".into(),
        });
    }
    for (what, v) in [
        ("mean priority", &trace.mean_priority),
        ("accepted writes", &trace.accepted_writes),
    ] {
        if v.len() != n {
            return Err(FigureError::LengthMismatch {
                figure: FIGURE,
                what: format!("utilisation and {what}"),
                left: n,
                right: v.len(),
            });
        }
    }
    check_finite(FIGURE, "utilisation", &trace.utilisation)?;
    check_finite(FIGURE, "mean priority", &trace.mean_priority)?;
    check_finite(FIGURE, "accepted writes", &trace.accepted_writes)?;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect()
    };
    let (u, p, w) = (
        pts(&trace.utilisation),
        pts(&trace.mean_priority),
        pts(&trace.accepted_writes),
    );
    render(
        &Panels {
            title: "Memory buffer over a document",
            x_label: "segment index",
            panels: vec![
                ("buffer utilisation (occupied fraction)".into(), &u),
                ("mean effective priority".into(), &p),
                ("accepted writes".into(), &w),
            ],
            columns: 1,
        },
        out_stem,
    )
}

// ---------------------------------------------------------------------------------------------
// Salience heatmap.

/// A token laid out on the page.
struct Placed {
    /// The token without surrounding whitespace (SVG viewers collapse it).
    text: String,
    x: i32,
    /// Width of the token's leading whitespace: where `text` starts inside the box.
    indent: i32,
    line: usize,
    w: i32,
    salience: f64,
}

struct Heatmap {
    placed: Vec<Placed>,
    lines: usize,
    title: String,
}

const HEAT_W: u32 = 1200;
const HEAT_MARGIN: i32 = 24;
const HEAT_TOP: i32 = 64;
const HEAT_LINE: i32 = 28;
const HEAT_FONT: f64 = 19.0;
const HEAT_BAR: i32 = 70;

/// White → red by salience in [0, 1].
fn heat(s: f64) -> RGBColor {
    let s = s.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
    RGBColor(lerp(255.0, 215.0), lerp(255.0, 48.0), lerp(255.0, 39.0))
}

/// Display form of a token: SentencePiece's `▁` as a space, line breaks as `↵`, tabs as spaces.
fn display_token(t: &str) -> String {
    t.chars()
        .map(|c| match c {
            '\u{2581}' | '\t' => ' ',
            '\n' | '\r' => '\u{21b5}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

impl Heatmap {
    fn layout(tokens: &[String], salience: &[f32]) -> std::result::Result<Self, String> {
        let font = FontDesc::new(FontFamily::Name(FONT), HEAT_FONT, FontStyle::Normal);
        let max_x = HEAT_W as i32 - HEAT_MARGIN;
        let (mut x, mut line) = (HEAT_MARGIN, 0usize);
        let mut placed = Vec::with_capacity(tokens.len());
        for (t, &s) in tokens.iter().zip(salience) {
            let text = display_token(t);
            let w = font.box_size(&text).map_err(msg)?.0 as i32 + 2;
            let w = w.clamp(6, max_x - HEAT_MARGIN);
            let trimmed = text.trim_start();
            let lead = &text[..text.len() - trimmed.len()];
            let indent = if lead.is_empty() {
                0
            } else {
                font.box_size(lead).map_err(msg)?.0 as i32
            };
            if x + w > max_x && x > HEAT_MARGIN {
                line += 1;
                x = HEAT_MARGIN;
            }
            placed.push(Placed {
                text: trimmed.trim_end().to_string(),
                x,
                indent,
                line,
                w,
                salience: f64::from(s),
            });
            x += w;
        }
        Ok(Self {
            placed,
            lines: line + 1,
            title: format!("Salience over a passage ({} tokens)", tokens.len()),
        })
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        let h = HEAT_TOP + HEAT_LINE * self.lines as i32 + HEAT_BAR + HEAT_MARGIN;
        (HEAT_W, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let title = TextStyle::from((FONT, 26).into_font()).color(&BLACK);
        root.draw(&Text::new(self.title.clone(), (HEAT_MARGIN, 18), title))
            .map_err(msg)?;
        let text = TextStyle::from((FONT, HEAT_FONT).into_font()).color(&BLACK);
        for p in &self.placed {
            let y = HEAT_TOP + HEAT_LINE * p.line as i32;
            root.draw(&Rectangle::new(
                [(p.x, y), (p.x + p.w, y + HEAT_LINE - 2)],
                heat(p.salience).filled(),
            ))
            .map_err(msg)?;
            if !p.text.is_empty() {
                root.draw(&Text::new(
                    p.text.clone(),
                    (p.x + 1 + p.indent, y + 3),
                    text.clone(),
                ))
                .map_err(msg)?;
            }
        }
        // Colour bar.
        let y = HEAT_TOP + HEAT_LINE * self.lines as i32 + 24;
        let (x0, width) = (HEAT_MARGIN + 90, 400);
        let small = TextStyle::from((FONT, 16).into_font()).color(&BLACK);
        root.draw(&Text::new("salience", (HEAT_MARGIN, y + 2), small.clone()))
            .map_err(msg)?;
        for k in 0..width {
            let c = heat(f64::from(k) / f64::from(width - 1));
            root.draw(&Rectangle::new(
                [(x0 + k, y), (x0 + k + 1, y + 18)],
                c.filled(),
            ))
            .map_err(msg)?;
        }
        root.draw(&Rectangle::new(
            [(x0, y), (x0 + width, y + 18)],
            BLACK.stroke_width(1),
        ))
        .map_err(msg)?;
        for (v, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
            let x = x0 + (v * f64::from(width)) as i32;
            root.draw(&Text::new(label, (x - 4, y + 22), small.clone()))
                .map_err(msg)?;
        }
        Ok(())
    }
}

/// Salience heatmap over a passage: each token drawn in reading order on a background from white
/// (salience 0) to red (salience 1), with a colour bar. `tokens` are the decoded token strings
/// (SentencePiece `▁` is shown as a space, a line break as `↵`); `salience` has one value in
/// [0, 1] per token (values outside are clamped for colour).
pub fn salience_heatmap(
    tokens: &[String],
    salience: &[f32],
    out_stem: &Path,
) -> Result<FigurePaths> {
    const FIGURE: &str = "salience heatmap";
    if tokens.is_empty() {
        return Err(FigureError::Empty {
            figure: FIGURE,
            what: "the token list".into(),
        });
    }
    if tokens.len() != salience.len() {
        return Err(FigureError::LengthMismatch {
            figure: FIGURE,
            what: "tokens and salience".into(),
            left: tokens.len(),
            right: salience.len(),
        });
    }
    if let Some(i) = salience.iter().position(|s| !s.is_finite()) {
        return Err(FigureError::Invalid {
            figure: FIGURE,
            what: format!("salience[{i}] is {}", salience[i]),
        });
    }
    ensure_font()?;
    let fig = Heatmap::layout(tokens, salience).map_err(|message| FigureError::Draw {
        path: out_stem.to_path_buf(),
        message,
    })?;
    render(&fig, out_stem)
}
