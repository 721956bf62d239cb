//! Every figure is written as a PNG that decodes to the expected size with real content (several
//! colours, rendered text) and an SVG that carries its titles; empty or malformed data is an
//! error.

use std::collections::BTreeSet;
use std::path::Path;

use hippo_eval::figures::{
    Bar, BufferTrace, DEFAULT_TRAINING_METRICS, FigureError, FigurePaths, Labels, Series,
    ablation_bars, buffer_dynamics, line_chart, ppl_by_position, ppl_by_segment,
    read_metrics_jsonl, salience_heatmap, training_curves,
};
use hippo_train::trainer::metrics::{MetricsWriter, StepMetrics};

struct Png {
    width: u32,
    height: u32,
    /// RGB, row-major.
    rgb: Vec<u8>,
}

impl Png {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn distinct_colours(&self) -> usize {
        self.rgb
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Dark (text-like) pixels in rows `y0..y1`.
    fn dark_in_rows(&self, y0: u32, y1: u32) -> usize {
        (y0..y1.min(self.height))
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().all(|&c| c < 80))
            .count()
    }
}

fn decode_png(path: &Path) -> Png {
    let file = std::fs::File::open(path).expect("PNG written");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Png {
        width: info.width,
        height: info.height,
        rgb: buf,
    }
}

/// Checks both files; returns the decoded PNG and the SVG text.
fn check_written(paths: &FigurePaths, stem: &Path, size: Option<(u32, u32)>) -> (Png, String) {
    assert_eq!(paths.png, stem.with_extension("png"));
    assert_eq!(paths.svg, stem.with_extension("svg"));
    let png = decode_png(&paths.png);
    if let Some((w, h)) = size {
        assert_eq!((png.width, png.height), (w, h));
    }
    assert!(
        png.distinct_colours() >= 8,
        "{}: only {} colours",
        paths.png.display(),
        png.distinct_colours()
    );
    let svg = std::fs::read_to_string(&paths.svg).expect("SVG written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains(&format!("width=\"{}\"", png.width))
            && svg.contains(&format!("height=\"{}\"", png.height)),
        "SVG and PNG sizes differ"
    );
    assert!(svg.contains("<text"), "SVG has no text");
    (png, svg)
}

fn two_series(n: usize) -> Vec<Series> {
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let base: Vec<f64> = x.iter().map(|p| 30.0 - 8.0 * (1.0 + p).ln()).collect();
    let hippo: Vec<f64> = base.iter().map(|y| y - 1.5).collect();
    vec![
        Series::new("base", x.clone(), base),
        Series::new("HippoFormer", x.clone(), hippo.clone()).with_band(
            hippo.iter().map(|y| y - 0.5).collect(),
            hippo.iter().map(|y| y + 0.5).collect(),
        ),
    ]
}

#[test]
fn ppl_by_position_draws_text_and_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("ppl_by_position");
    let paths = ppl_by_position(&two_series(64), &stem).expect("drawn");
    let (png, svg) = check_written(&paths, &stem, Some((1024, 640)));
    // The caption is black text in the top band, where nothing else is drawn: the embedded font
    // rendered glyphs.
    assert!(png.dark_in_rows(0, 40) > 100, "no caption pixels");
    // Both line colours (tab10 blue and orange) are present.
    let has = |c: [u8; 3]| png.rgb.chunks_exact(3).any(|p| p == c);
    assert!(has([31, 119, 180]) && has([255, 127, 14]));
    for s in [
        "Perplexity by position in the segment",
        "position in segment (tokens)",
        "perplexity",
        "HippoFormer",
        "base",
    ] {
        assert!(svg.contains(s), "SVG lacks {s:?}");
    }
}

#[test]
fn ppl_by_segment_and_line_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("nested/ppl_by_segment");
    let paths = ppl_by_segment(&two_series(8), &stem).expect("drawn");
    let (_, svg) = check_written(&paths, &stem, Some((1024, 640)));
    assert!(svg.contains("Perplexity by segment index") && svg.contains("segment index"));

    let stem = dir.path().join("benefit");
    let one = [Series::new("long-range benefit", vec![3.0], vec![0.7])];
    let labels = Labels::new("Long-range benefit & <escaping>", "segment", "Δ NLL");
    let paths = line_chart(&one, &labels, &stem).expect("a single point is drawable");
    let (_, svg) = check_written(&paths, &stem, None);
    assert!(svg.contains("Long-range benefit &amp; &lt;escaping&gt;"));
    assert!(svg.contains("Δ NLL"));
}

#[test]
fn ablation_bars_with_intervals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("ablations");
    let bars = [
        Bar {
            label: "no_salience".into(),
            mean: 1.2,
            lo: 0.8,
            hi: 1.6,
        },
        Bar {
            label: "no_drift".into(),
            mean: -0.3,
            lo: -0.7,
            hi: 0.1,
        },
        Bar {
            label: "no_replay".into(),
            mean: 2.4,
            lo: 2.0,
            hi: 2.9,
        },
    ];
    let paths = ablation_bars(&bars, "Δ perplexity vs full", &stem).expect("drawn");
    let (png, svg) = check_written(&paths, &stem, Some((1024, 640)));
    for s in [
        "no_salience",
        "no_drift",
        "no_replay",
        "Δ perplexity vs full",
        "Ablations",
    ] {
        assert!(svg.contains(s), "SVG lacks {s:?}");
    }
    // Bars are filled with the palette mixed at 85% over white: some pixel of each bar colour
    // family is present (a strongly blue-ish, orange-ish and green-ish pixel).
    let any = |f: &dyn Fn([u8; 3]) -> bool| png.rgb.chunks_exact(3).any(|p| f([p[0], p[1], p[2]]));
    assert!(
        any(&|[r, g, b]| b > 150 && r < 100 && g < 150),
        "no blue bar"
    );
    assert!(
        any(&|[r, g, b]| r > 230 && g > 110 && g < 170 && b < 80),
        "no orange bar"
    );
    assert!(
        any(&|[r, g, b]| g > 140 && r < 100 && b < 100),
        "no green bar"
    );

    let bad = [Bar {
        label: "x".into(),
        mean: 0.0,
        lo: 1.0,
        hi: -1.0,
    }];
    assert!(matches!(
        ablation_bars(&bad, "y", &stem),
        Err(FigureError::Invalid { .. })
    ));
}

#[test]
fn training_curves_from_the_trainers_metrics_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.jsonl");
    let mut w = MetricsWriter::open(&path, None).expect("writer");
    for step in 1..=30usize {
        let s = step as f64;
        w.write(&StepMetrics {
            step,
            epoch: 0,
            loss: 4.0 / s.sqrt(),
            lm: 3.5 / s.sqrt(),
            salience_weighted: 3.0 / s.sqrt(),
            sparsity: 0.6,
            memory_util: 0.1,
            drift_reg: 0.01,
            usefulness: 0.69,
            mean_salience: 0.3 + 0.005 * s,
            tagged_ratio: 0.2,
            buffer_util: (s / 30.0).min(1.0),
            mean_drift: 0.0,
            grad_norm: 1.0 + (s * 0.7).sin().abs(),
            lr: 1e-4 * (s / 10.0).min(1.0),
            lora_lr: 1e-4,
            tokens: 4096,
            targets: 4000,
            tokens_per_sec: 1234.0,
            step_seconds: 3.3,
            valid_loss: (step % 10 == 0).then_some(3.0),
            valid_ppl: (step % 10 == 0).then(|| 20.0 - s / 10.0),
        })
        .expect("line written");
    }
    drop(w);
    let log = read_metrics_jsonl(&path).expect("read back");
    let loss = log.get("loss").expect("loss");
    assert_eq!(loss.len(), 30);
    assert_eq!(loss[0], (1.0, 4.0));
    // Validation metrics only on the steps that validated.
    let ppl = log.get("valid_ppl").expect("valid_ppl");
    assert_eq!(ppl, &[(10.0, 19.0), (20.0, 18.0), (30.0, 17.0)]);

    let present: Vec<&str> = DEFAULT_TRAINING_METRICS
        .into_iter()
        .filter(|m| log.get(m).is_some())
        .collect();
    assert_eq!(present.len(), DEFAULT_TRAINING_METRICS.len());
    let stem = dir.path().join("training_curves");
    let paths = training_curves(&log, &present, &stem).expect("drawn");
    let rows = present.len().div_ceil(2) as u32;
    let (_, svg) = check_written(&paths, &stem, Some((1280, 70 + 300 * rows)));
    for s in [
        "Training curves",
        "valid_ppl",
        "grad_norm",
        "optimizer step",
    ] {
        assert!(svg.contains(s), "SVG lacks {s:?}");
    }

    let err = training_curves(&log, &["nope"], &stem).expect_err("unknown metric");
    assert!(err.to_string().contains("\"nope\"") && err.to_string().contains("loss"));
    assert!(matches!(
        training_curves(&log, &[], &stem),
        Err(FigureError::Empty { .. })
    ));
}

#[test]
fn metrics_file_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"step\": 1, \"loss\": 2.0}\n{\"loss\": 3.0}\n").expect("write");
    let err = read_metrics_jsonl(&path).expect_err("no step");
    assert!(matches!(err, FigureError::Metrics { line: 2, .. }), "{err}");
    std::fs::write(&path, "\n").expect("write");
    assert!(matches!(
        read_metrics_jsonl(&path),
        Err(FigureError::Empty { .. })
    ));
    assert!(matches!(
        read_metrics_jsonl(&dir.path().join("missing.jsonl")),
        Err(FigureError::Io { .. })
    ));
}

#[test]
fn buffer_dynamics_three_panels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("buffer");
    let n = 12;
    let trace = BufferTrace {
        utilisation: (0..n).map(|i| (i as f64 / 8.0).min(1.0)).collect(),
        mean_priority: (0..n).map(|i| 0.5 + 0.03 * i as f64).collect(),
        accepted_writes: (0..n).map(|i| (16 - i).max(2) as f64).collect(),
    };
    let paths = buffer_dynamics(&trace, &stem).expect("drawn");
    let (_, svg) = check_written(&paths, &stem, Some((1024, 70 + 300 * 3)));
    for s in [
        "Memory buffer over a document",
        "buffer utilisation",
        "mean effective priority",
        "accepted writes",
        "segment index",
    ] {
        assert!(svg.contains(s), "SVG lacks {s:?}");
    }
    let short = BufferTrace {
        accepted_writes: vec![1.0],
        ..trace
    };
    assert!(matches!(
        buffer_dynamics(&short, &stem),
        Err(FigureError::LengthMismatch { .. })
    ));
}

#[test]
fn salience_heatmap_over_a_passage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("salience");
    let text = "The\u{2581}hippocampus binds events into episodes; sharp-wave ripples replay \
                them during rest, and salient moments are tagged for consolidation.\n";
    let tokens: Vec<String> = text
        .split_inclusive(' ')
        .flat_map(|w| {
            // Split long words in two, like subword tokens.
            let cut = w.char_indices().nth(5).map_or(w.len(), |(i, _)| i);
            [w[..cut].to_string(), w[cut..].to_string()]
        })
        .filter(|t| !t.is_empty())
        .collect();
    let salience: Vec<f32> = (0..tokens.len())
        .map(|i| ((i * 37) % 11) as f32 / 10.0)
        .collect();
    let paths = salience_heatmap(&tokens, &salience, &stem).expect("drawn");
    let (png, svg) = check_written(&paths, &stem, None);
    assert_eq!(png.width, 1200);
    // The most salient tokens sit on the full heat colour.
    assert!(png.rgb.chunks_exact(3).any(|p| p == [215, 48, 39]));
    // Token text renders over the heat boxes (dark glyph pixels below the title).
    assert!(png.dark_in_rows(64, png.height) > 300);
    assert!(svg.contains(">\nippocampus\n<") && svg.contains("Salience over a passage"));
    assert!(svg.contains('\u{21b5}'), "line break shown as ↵");

    // A longer passage wraps onto more lines: a taller picture.
    let long: Vec<String> = tokens
        .iter()
        .cycle()
        .take(tokens.len() * 6)
        .cloned()
        .collect();
    let long_s: Vec<f32> = salience.iter().cycle().take(long.len()).copied().collect();
    let tall = salience_heatmap(&long, &long_s, &dir.path().join("long")).expect("drawn");
    assert!(decode_png(&tall.png).height > png.height);
}

#[test]
fn empty_or_malformed_data_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = dir.path().join("x");
    assert!(matches!(
        ppl_by_position(&[], &stem),
        Err(FigureError::Empty { .. })
    ));
    assert!(matches!(
        ppl_by_segment(&[Series::new("a", vec![], vec![])], &stem),
        Err(FigureError::Empty { .. })
    ));
    assert!(matches!(
        ppl_by_segment(&[Series::new("a", vec![0.0, 1.0], vec![1.0])], &stem),
        Err(FigureError::LengthMismatch { .. })
    ));
    assert!(matches!(
        ppl_by_segment(&[Series::new("a", vec![0.0], vec![f64::NAN])], &stem),
        Err(FigureError::Invalid { .. })
    ));
    assert!(matches!(
        ablation_bars(&[], "y", &stem),
        Err(FigureError::Empty { .. })
    ));
    assert!(matches!(
        salience_heatmap(&[], &[], &stem),
        Err(FigureError::Empty { .. })
    ));
    assert!(matches!(
        salience_heatmap(&["a".into()], &[0.1, 0.2], &stem),
        Err(FigureError::LengthMismatch { .. })
    ));
    let empty = BufferTrace {
        utilisation: vec![],
        mean_priority: vec![],
        accepted_writes: vec![],
    };
    assert!(matches!(
        buffer_dynamics(&empty, &stem),
        Err(FigureError::Empty { .. })
    ));
    // Nothing was written for the failed calls.
    assert!(!stem.with_extension("png").exists() && !stem.with_extension("svg").exists());
}
