//! `results.json` round-trips into the identical table; a leaky run is labelled everywhere;
//! the metrics come out of a real (tiny) evaluation.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;
use hippo_data::{Document, Split, Tokenize, TokenizedCorpus};
use hippo_eval::metrics::{MetricInputs, paper_metrics};
use hippo_eval::results::{RESULTS_FORMAT, Seeds};
use hippo_eval::{
    DocText, EvalMetadata, EvalOptions, EvalResults, Scorer, evaluate_full_context,
    evaluate_long_context, evaluate_traced, evaluate_with_memory_off, smoothing_kernel,
};
use hippo_model::{HippoFormer, HippoFormerConfig, QueryMode};

/// Bytes mapped into a 256-token vocabulary (ids 3..=252), BOS = 2.
struct Bytes;

impl Tokenize for Bytes {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        Ok(std::iter::once(2)
            .chain(text.bytes().map(|b| u32::from(b) % 250 + 3))
            .collect())
    }
    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok("bytes-test".into())
    }
}

const TEXTS: [&str; 3] = [
    "the cat sat on the mat and the dog sat on the log",
    "short one",
    "a much longer document that will span several segments of the stream, so that memory carries",
];

fn corpus() -> Arc<TokenizedCorpus> {
    let docs: Vec<Document> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| Document {
            id: format!("d{i}"),
            title: String::new(),
            text: (*t).into(),
            source: "test".into(),
            url: None,
        })
        .collect();
    Arc::new(TokenizedCorpus::build(&docs, &Bytes, "test", Split::Test).unwrap())
}

fn texts() -> Vec<DocText> {
    TEXTS
        .iter()
        .map(|t| DocText {
            text: (*t).into(),
            offsets: std::iter::once((0, 0))
                .chain((0..t.len()).map(|i| (i, i + 1)))
                .collect(),
        })
        .collect()
}

fn run(cfg: HippoFormerConfig, allow_leaky: bool) -> EvalResults {
    let device = Device::flex();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let g = hippo_gemma::load(dir.to_str().unwrap(), &device)
        .unwrap()
        .model;
    let m = HippoFormer::new(g.clone(), cfg, &device).unwrap();
    let opts = EvalOptions {
        seq_len: 8,
        streams: 2,
        max_docs: None,
        allow_leaky,
    };
    let c = corpus();
    let (long, _) = evaluate_long_context(&g, c.clone(), &opts, 24, &device, &mut |_| {}).unwrap();
    let (base, base_trace) =
        evaluate_traced(&Scorer::Base(&g), c.clone(), &opts, &device, &mut |_| {}).unwrap();
    let [(hippo, trace), (off, off_trace)] =
        evaluate_with_memory_off(&m, c.clone(), &opts, &device, &mut |_| {}).unwrap();
    let (full, full_trace) =
        evaluate_full_context(&g, c.clone(), &opts, &device, &mut |_| {}).unwrap();
    let long_range =
        hippo_eval::long_range(&c, &base_trace, &trace, &off_trace, Some(&full_trace), 2, 3)
            .unwrap();
    let kernel = smoothing_kernel(&m).unwrap();
    let texts = texts();
    let metrics = paper_metrics(&MetricInputs {
        base: &base,
        base_long: Some(&long),
        hippo: &hippo,
        trace: &trace,
        texts: Some(&texts),
        kernel: &kernel,
        min_segment: 2,
        noise_seed: 5,
    })
    .unwrap();
    EvalResults {
        format: RESULTS_FORMAT,
        metadata: EvalMetadata {
            git_commit: "0123abc".into(),
            timestamp: hippo_eval::results::utc_timestamp(),
            config: m.config.clone(),
            checkpoint: None,
            checkpoint_step: None,
            base_model: dir.display().to_string(),
            tokenizer: "bytes".into(),
            seeds: Seeds {
                model: m.config.seed,
                training: None,
                noise: 5,
            },
            corpus: "test".into(),
            corpus_key: c.key.clone(),
            split: "test".into(),
            max_docs: None,
            seq_len: 8,
            streams: 2,
            context: Some(24),
            late_segment: 2,
            leaky: hippo.leaky,
            device: "cpu".into(),
            elapsed_s: 0.125,
        },
        base,
        base_long_context: Some(long),
        hippoformer: hippo,
        memory_off: Some(off),
        full_context: Some(full),
        long_range: Some(long_range),
        metrics,
    }
}

fn small() -> HippoFormerConfig {
    HippoFormerConfig {
        buffer_size: 32,
        ..HippoFormerConfig::default()
    }
}

#[test]
fn results_round_trip_into_the_identical_table() {
    let r = run(small(), false);
    // The metrics are really there: the untrained model equals the base, so the long-range
    // benefit is 0 up to float noise; the buffer filled; salience has both kinds of word.
    let lr = r.metrics.long_range_benefit.as_ref().unwrap();
    assert!(lr.mean.abs() < 1e-4, "{lr:?}");
    let bp = r.metrics.buffer_priority.as_ref().unwrap();
    assert_eq!(bp.documents, 3);
    assert!(bp.mean > 0.0 && bp.mean_entries > 0.0, "{bp:?}");
    let cf = r.metrics.content_function.as_ref().unwrap();
    assert!(cf.content_words > 0 && cf.function_words > 0);
    assert!(r.metrics.temporal_coherence.salience_lag1.is_some());
    assert!(r.metrics.long_context_benefit.is_some());
    // The long-range object: an untrained model equals memory off, so memory's gain is 0 up to
    // float noise; the full-context base is scored on the same late targets.
    let long = r.long_range.as_ref().unwrap();
    assert_eq!(long.segment_from, 2);
    assert!(long.all.tokens > 0 && long.all.documents > 0, "{long:?}");
    let gain = long.all.memory_gain.unwrap();
    assert!(gain.mean.abs() < 1e-6, "{gain:?}");
    assert!(long.all.ppl.full_context.is_some());
    if let (Some(g), Some(m)) = (long.all.gap_closed, long.all.memory_gap_closed) {
        // Untrained: no LoRA or drift change, so all of HippoFormer's share is memory's (0).
        assert!(
            (g.mean - m.mean).abs() < 1e-6 && m.mean.abs() < 1e-4,
            "{g:?} {m:?}"
        );
    }
    assert!(long.far_copyable.tokens <= long.all.tokens);

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("results.json");
    r.write(&path).unwrap();
    let back = EvalResults::read(&path).unwrap();
    // serde_json parses floats best-effort (within 1 ULP) unless its `float_roundtrip` feature
    // is on, which would rebuild Burn: every number must come back to within 2 ULP, everything
    // else exactly.
    same_json(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::to_value(&r).unwrap(),
        "",
    );
    assert_eq!(back.to_markdown(), r.to_markdown());
    let md = r.to_markdown();
    for needle in [
        "| base | 8 |",
        "base, long context (upper bound) | 24 |",
        "hippoformer | 8 + memory |",
        "long-range benefit",
        "base, full document prefix (upper bound) | full |",
        "hippoformer, memory off | 8 |",
        "## Long range: segments ≥ 2",
        "| far-copyable |",
        "content/function salience ratio",
        "buffer priority",
        "temporal coherence",
        "0123abc",
    ] {
        assert!(md.contains(needle), "markdown lacks {needle:?}:\n{md}");
    }
    assert!(!md.contains("LEAKY"));
    // Not a results file, and a wrong format version, are errors naming the file.
    std::fs::write(&path, "{}").unwrap();
    let e = EvalResults::read(&path).unwrap_err().to_string();
    assert!(e.contains("results.json"), "{e}");
    let mut v = serde_json::to_value(&r).unwrap();
    v["format"] = serde_json::json!(RESULTS_FORMAT + 1);
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(EvalResults::read(&path).is_err());
}

#[test]
fn a_results_write_that_cannot_happen_says_where_and_why() {
    let r = run(small(), false);
    let tmp = tempfile::tempdir().unwrap();
    // The parent is a file: no directory can hold results.json there (root or not).
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("results.json");
    let err = r
        .write(&path)
        .expect_err("a write under a file must fail")
        .to_string();
    assert!(err.contains("results.json"), "{err}");
    assert!(!path.exists());
    // Reading it back fails the same way, and a file that is not a results file is named.
    assert!(EvalResults::read(&path).is_err());
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, b"{\"format\": 1}").unwrap();
    let err = EvalResults::read(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.json") && err.contains("not a results file"),
        "{err}"
    );
}

#[test]
fn a_forced_leaky_run_is_labelled_leaky_everywhere() {
    let cfg = HippoFormerConfig {
        query_mode: QueryMode::SequenceMean,
        ..small()
    };
    let r = run(cfg, true);
    assert!(r.metadata.leaky && r.hippoformer.leaky && r.metrics.leaky);
    let md = r.to_markdown();
    assert!(md.contains("**LEAKY"), "{md}");
    assert!(md.contains("hippoformer [LEAKY]"), "{md}");
    assert!(md.contains("## Metrics [LEAKY]"), "{md}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["metadata"]["leaky"], true);
    assert_eq!(json["hippoformer"]["leaky"], true);
    assert_eq!(json["metrics"]["leaky"], true);
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "keys at {at}"
            );
            for (k, v) in x {
                same_json(v, &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "length at {at}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                same_json(u, v, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (u, v) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (u - v).abs() <= 4.5e-16 * u.abs().max(v.abs()),
                "{at}: {u} vs {v}"
            );
        }
        _ => assert_eq!(a, b, "at {at}"),
    }
}
