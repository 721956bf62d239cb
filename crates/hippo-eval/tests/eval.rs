//! Evaluation arithmetic and honesty: closed-form perplexity of a uniform model, word/byte
//! normalisation (by hand), pads and −100 excluded, read-only evaluation, identical streams for
//! base and HippoFormer, every ablation live, the long-context base, refusal of leaky configs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use hippo_data::{Document, SegmentLayout, Split, Tokenize, TokenizedCorpus};
use hippo_eval::{
    EvalError, EvalOptions, Scorer, Trace, evaluate, evaluate_long_context, evaluate_traced,
    report_from_trace,
};
use hippo_gemma::Gemma;
use hippo_model::audit::open_for_audit;
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

fn doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        title: id.into(),
        text: text.into(),
        source: "test".into(),
        url: None,
    }
}

fn corpus() -> Arc<TokenizedCorpus> {
    let docs = vec![
        doc("a", "the cat sat on the mat and the dog sat on the log"),
        doc("b", "short one"),
        doc(
            "c",
            "a much longer document that will span several segments of the stream, so that memory carries",
        ),
    ];
    Arc::new(TokenizedCorpus::build(&docs, &Bytes, "test", Split::Test).unwrap())
}

fn device() -> Device {
    Device::flex()
}

fn base() -> Gemma {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    hippo_gemma::load(dir.to_str().unwrap(), &device())
        .unwrap()
        .model
}

fn opts(seq_len: usize) -> EvalOptions {
    EvalOptions {
        seq_len,
        streams: 2,
        max_docs: None,
        allow_leaky: false,
    }
}

#[test]
fn uniform_model_gives_the_closed_form_perplexities() {
    // A zero embedding makes every hidden state 0 after the final norm: logits are all 0, so
    // every target has probability exactly 1/V.
    let mut g = base();
    let [v, d] = g.embed_tokens.val().dims();
    g.embed_tokens = Param::from_tensor(Tensor::zeros([v, d], &device()));
    let c = corpus();
    let r = evaluate(&Scorer::Base(&g), c.clone(), &opts(16), &device()).unwrap();
    // Every token but each document's BOS is a target exactly once.
    let expected_tokens: usize = c.docs.iter().map(|d| d.tokens.len() - 1).sum();
    assert_eq!(r.tokens, expected_tokens);
    let ln_v = (v as f64).ln();
    assert!((r.mean_nll - ln_v).abs() < 1e-5, "{} vs ln {v}", r.mean_nll);
    assert!((r.token_ppl - v as f64).abs() / (v as f64) < 1e-5);
    let words: u64 = "the cat sat on the mat and the dog sat on the log".split_whitespace().count() as u64
        + 2
        + "a much longer document that will span several segments of the stream, so that memory carries"
            .split_whitespace()
            .count() as u64;
    assert_eq!(r.words, words);
    let bytes = ("the cat sat on the mat and the dog sat on the log".len()
        + "short one".len()
        + "a much longer document that will span several segments of the stream, so that memory carries".len()) as u64;
    assert_eq!(r.bytes, bytes);
    let total = expected_tokens as f64 * ln_v;
    assert!(
        (r.nll_sum - total).abs() / total < 1e-6,
        "{} vs {total}",
        r.nll_sum
    );
    // The normalisations, from the (f32-accumulated) sum itself.
    let total = r.nll_sum;
    assert!((r.word_ppl - (total / words as f64).exp()).abs() / r.word_ppl < 1e-9);
    assert!((r.bits_per_byte - total / bytes as f64 / std::f64::consts::LN_2).abs() < 1e-9);
    assert!((r.byte_ppl - (total / bytes as f64).exp()).abs() / r.byte_ppl < 1e-9);
}

/// The report's segment and position breakdowns follow the BOS layout: the first segment holds
/// targets 0..L, each later one L − 1 targets at input positions 1..L (position 0 is its BOS).
#[test]
fn breakdowns_follow_the_bos_layout_by_hand() {
    let docs = vec![doc("x", "ab cd")];
    let c = TokenizedCorpus::build(&docs, &Bytes, "test", Split::Test).unwrap();
    let trace = Trace {
        layout: SegmentLayout::with_bos(3, 2),
        nll: vec![vec![1.0, 0.5, 2.0, 0.25, 1.25]],
        salience: vec![Vec::new()],
        end_of_document: vec![None],
    };
    let r = report_from_trace(&c, &trace, false);
    // Targets 0, 1, 2 in segment 0 (positions 0, 1, 2); 3, 4 in segment 1 (positions 1, 2).
    assert_eq!(r.nll_by_segment, vec![Some(3.5 / 3.0), Some(0.75)]);
    assert_eq!(r.tokens_by_segment, vec![3, 2]);
    assert_eq!(r.nll_by_position, vec![Some(1.0), Some(0.375), Some(1.625)]);
    assert_eq!(r.per_document_by_segment, vec![vec![(3.5, 3), (1.5, 2)]]);
    assert_eq!(r.nll_sum, 5.0);
}

/// Evaluation reads every segment after a document's first as BOS + the next L − 1 tokens and
/// scores each target once: its sum equals scoring those segments directly with the base.
#[test]
fn later_segments_begin_with_bos_and_every_target_is_scored_once() {
    let g = base();
    let c = corpus();
    let l = 8;
    let r = evaluate(&Scorer::Base(&g), c.clone(), &opts(l), &device()).unwrap();
    // Σ NLL and target count of the documents cut by `layout`, each segment scored alone.
    let direct = |layout: SegmentLayout| {
        let (mut sum, mut targets) = (0.0, 0);
        for d in &c.docs {
            let n = d.tokens.len();
            for k in 0..layout.count(n) {
                let ids = layout.segment_ids(&d.tokens, k);
                let range = layout.range(k, n);
                // Input q ≥ prefix holds document token range.start + q − prefix, whose target
                // is the next document token (none for the document's last token).
                let prefix = layout.prefix(k);
                let tgt: Vec<u32> = d.tokens[range.start + 1..(range.end + 1).min(n)].to_vec();
                if tgt.is_empty() {
                    continue;
                }
                let logits = g
                    .forward(
                        g.ids_tensor(std::slice::from_ref(&ids), &device()).unwrap(),
                        None,
                    )
                    .logits
                    .reshape([ids.len(), g.config().vocab_size])
                    .slice_dim(0, prefix..prefix + tgt.len());
                let lp = hippo_gemma::score::target_log_probs(logits, &tgt, &device());
                sum -= lp.iter().sum::<f64>();
                targets += tgt.len();
            }
        }
        (sum, targets)
    };
    let layout = SegmentLayout::with_bos(l, 2);
    assert!(
        c.docs.iter().any(|d| layout.count(d.tokens.len()) >= 3),
        "a document spans several segments"
    );
    let (bos_sum, bos_targets) = direct(layout);
    assert_eq!(r.tokens, bos_targets);
    assert!(
        (r.nll_sum - bos_sum).abs() < 1e-3,
        "{} vs {bos_sum}",
        r.nll_sum
    );
    // Not vacuous: the contiguous cut of the same documents scores the same targets
    // differently.
    let (cont_sum, cont_targets) = direct(SegmentLayout::contiguous(l));
    assert_eq!(cont_targets, bos_targets);
    assert!((cont_sum - bos_sum).abs() > 1e-3, "{cont_sum} vs {bos_sum}");
}

#[test]
fn segmentation_and_padding_never_change_the_token_count() {
    let g = base();
    let c = corpus();
    let counts: Vec<usize> = [4, 7, 16, 200]
        .iter()
        .map(|&l| {
            evaluate(&Scorer::Base(&g), c.clone(), &opts(l), &device())
                .unwrap()
                .tokens
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    // One window holding each whole document is plain full-context scoring.
    let whole = evaluate(&Scorer::Base(&g), c.clone(), &opts(200), &device()).unwrap();
    let direct: f64 = c
        .docs
        .iter()
        .map(|d| {
            hippo_gemma::score::score_ids(&g, &d.tokens, 256, 255, &device())
                .unwrap()
                .nll
                .iter()
                .sum::<f64>()
        })
        .sum();
    assert!(
        (whole.nll_sum - direct).abs() < 1e-3,
        "{} vs {direct}",
        whole.nll_sum
    );
}

#[test]
fn evaluation_is_read_only_and_hippoformer_at_init_equals_the_base() {
    let g = base();
    let cfg = HippoFormerConfig {
        buffer_size: 32,
        ..HippoFormerConfig::default()
    };
    let m = HippoFormer::new(g.clone(), cfg, &device()).unwrap();
    let c = corpus();
    let (a, ta) = evaluate_traced(
        &Scorer::Hippo(&m),
        c.clone(),
        &opts(8),
        &device(),
        &mut |_| {},
    )
    .unwrap();
    let (b, tb) = evaluate_traced(
        &Scorer::Hippo(&m),
        c.clone(),
        &opts(8),
        &device(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(a, b, "evaluating twice changed the numbers");
    assert_eq!(ta, tb, "evaluating twice changed the per-token record");
    let base = evaluate(&Scorer::Base(&g), c, &opts(8), &device()).unwrap();
    assert!(
        (a.nll_sum - base.nll_sum).abs() < 1e-4,
        "{} vs {}",
        a.nll_sum,
        base.nll_sum
    );
    assert_eq!(a.tokens, base.tokens);
    assert!(
        a.nll_by_segment.len() >= 3,
        "the long document spans several segments"
    );
}

#[test]
fn leaky_configs_are_refused_unless_forced_and_then_labelled() {
    let g = base();
    let cfg = HippoFormerConfig {
        buffer_size: 32,
        query_mode: QueryMode::SequenceMean,
        ..HippoFormerConfig::default()
    };
    let m = HippoFormer::new(g, cfg, &device()).unwrap();
    let e = evaluate(&Scorer::Hippo(&m), corpus(), &opts(8), &device()).unwrap_err();
    assert!(matches!(e, EvalError::Leaky));
    let forced = evaluate(
        &Scorer::Hippo(&m),
        corpus(),
        &EvalOptions {
            allow_leaky: true,
            ..opts(8)
        },
        &device(),
    )
    .unwrap();
    assert!(forced.leaky);
}

#[test]
fn word_and_byte_normalisation_by_hand() {
    // "ab cd": BOS + 5 byte tokens → 5 targets; 2 words, 5 bytes.
    let docs = vec![doc("x", "ab cd")];
    let c = TokenizedCorpus::build(&docs, &Bytes, "test", Split::Test).unwrap();
    let trace = Trace {
        layout: SegmentLayout::contiguous(2),
        nll: vec![vec![1.0, 0.5, 2.0, 0.25, 1.25]],
        salience: vec![Vec::new()],
        end_of_document: vec![None],
    };
    let r = report_from_trace(&c, &trace, false);
    assert_eq!((r.tokens, r.words, r.bytes), (5, 2, 5));
    assert_eq!(r.nll_sum, 5.0);
    assert_eq!(r.mean_nll, 1.0);
    assert!((r.token_ppl - std::f64::consts::E).abs() < 1e-12);
    assert!((r.word_ppl - 2.5f64.exp()).abs() < 1e-12); // exp(5 / 2)
    assert!((r.byte_ppl - std::f64::consts::E).abs() < 1e-12); // exp(5 / 5)
    assert!((r.bits_per_byte - std::f64::consts::LOG2_E).abs() < 1e-12); // 1 / ln 2
    // Segments of 2 targets: [1, 0.5], [2, 0.25], [1.25].
    assert_eq!(r.nll_by_segment, vec![Some(0.75), Some(1.125), Some(1.25)]);
    assert_eq!(r.tokens_by_segment, vec![2, 2, 1]);
    assert_eq!(r.nll_by_position, vec![Some(4.25 / 3.0), Some(0.375)]);
    assert_eq!(
        r.per_document_by_segment,
        vec![vec![(1.5, 2), (2.25, 2), (1.25, 1)]]
    );
    assert_eq!(r.per_document, vec![(5.0, 5)]);
}

#[test]
fn pads_and_ignored_targets_never_reach_a_score() {
    // Three streams over documents of different lengths: rows are padded, documents end
    // mid-segment, finished rows are all padding. Every target's NLL must equal scoring its
    // segment alone, unpadded; and nothing else is counted.
    let g = base();
    let c = corpus();
    let l = 8;
    let o = EvalOptions {
        streams: 3,
        ..opts(l)
    };
    let (r, trace) =
        evaluate_traced(&Scorer::Base(&g), c.clone(), &o, &device(), &mut |_| {}).unwrap();
    let layout = SegmentLayout::with_bos(l, 2);
    for (d, doc) in c.docs.iter().enumerate() {
        let n = doc.tokens.len();
        assert_eq!(trace.nll[d].len(), n - 1);
        for k in 0..layout.count(n) {
            // The segment's inputs and the token after them, scored alone: ids[i + 1] given
            // ids[..=i]. Input i ≥ prefix is document token start + i − prefix.
            let r = layout.range(k, n);
            let prefix = layout.prefix(k);
            let mut ids = layout.segment_ids(&doc.tokens, k);
            ids.extend(doc.tokens.get(r.end));
            if ids.len() < 2 {
                continue;
            }
            let direct = hippo_gemma::score::score_ids(&g, &ids, 64, 63, &device())
                .unwrap()
                .nll;
            for (i, x) in direct.iter().enumerate().skip(prefix) {
                let j = r.start + i - prefix;
                let got = trace.nll[d][j];
                assert!((got - x).abs() < 1e-4, "doc {d} target {j}: {got} vs {x}");
            }
        }
        assert!((r.per_document[d].0 - trace.nll[d].iter().sum::<f64>()).abs() < 1e-9);
    }
    assert_eq!(
        r.tokens,
        c.docs.iter().map(|d| d.tokens.len() - 1).sum::<usize>()
    );
}

#[test]
fn every_ablation_changes_the_outputs() {
    let g = base();
    let cfg = HippoFormerConfig {
        buffer_size: 16,
        use_lora: false,
        ..HippoFormerConfig::default()
    };
    let m = HippoFormer::new(g.clone(), cfg, &device()).unwrap();
    // Open every path (fusion α, drift A and b, always-correct) on a calibration segment.
    let c = corpus();
    let ids: Vec<i64> = c.docs[2].tokens[..16].iter().map(|&x| x as i64).collect();
    let ids = Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids, [1, 16]),
        &device(),
    );
    let valid = Tensor::<2, burn::tensor::Bool>::from_data(
        burn::tensor::TensorData::new(vec![true; 16], [1, 16]),
        &device(),
    );
    let h = m.base.hidden_states(ids, None);
    let m = open_for_audit(m, (h, valid)).unwrap();
    let run = |model: &HippoFormer| {
        evaluate_traced(
            &Scorer::Hippo(model),
            c.clone(),
            &opts(8),
            &device(),
            &mut |_| {},
        )
        .unwrap()
        .1
        .nll
    };
    let full = run(&m);
    let base_nll = evaluate_traced(
        &Scorer::Base(&g),
        c.clone(),
        &opts(8),
        &device(),
        &mut |_| {},
    )
    .unwrap()
    .1
    .nll;
    let diff = |a: &Vec<Vec<f64>>, b: &Vec<Vec<f64>>| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f64, f64::max)
    };
    assert!(
        diff(&full, &base_nll) > 1e-3,
        "the opened model equals the base"
    );
    for (name, ablated) in m.config.ablations() {
        let variant = HippoFormer {
            config: ablated,
            ..m.clone()
        };
        let d = diff(&run(&variant), &full);
        assert!(
            d > 1e-5,
            "ablation {name} left every NLL unchanged (max |Δ| {d:e})"
        );
    }
}

#[test]
fn the_long_context_base_scores_the_same_targets_with_more_context() {
    let g = base();
    let c = corpus();
    let seg = evaluate(&Scorer::Base(&g), c.clone(), &opts(8), &device()).unwrap();
    let (long, _) =
        evaluate_long_context(&g, c.clone(), &opts(8), 100, &device(), &mut |_| {}).unwrap();
    assert_eq!(long.tokens, seg.tokens);
    assert_eq!(long.tokens_by_segment, seg.tokens_by_segment);
    // A context covering every document is plain full-document scoring.
    let whole = evaluate(&Scorer::Base(&g), c.clone(), &opts(200), &device()).unwrap();
    assert!(
        (long.nll_sum - whole.nll_sum).abs() < 1e-3,
        "{} vs {}",
        long.nll_sum,
        whole.nll_sum
    );
    // Segment 0 is scored with the same context both ways; later segments are not.
    assert!((long.nll_by_segment[0].unwrap() - seg.nll_by_segment[0].unwrap()).abs() < 1e-4);
    assert!((long.nll_by_segment[2].unwrap() - seg.nll_by_segment[2].unwrap()).abs() > 1e-4);
    let e = evaluate_long_context(&g, c.clone(), &opts(8), 8, &device(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, EvalError::Options(_)), "{e}");
    let too_long = g.config().max_position_embeddings + 1;
    let e = evaluate_long_context(&g, c, &opts(8), too_long, &device(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, EvalError::Options(_)), "{e}");
}

#[test]
fn bad_options_are_refused() {
    let g = base();
    for o in [
        EvalOptions {
            max_docs: Some(0),
            ..opts(8)
        },
        EvalOptions {
            seq_len: 0,
            ..opts(8)
        },
        EvalOptions {
            streams: 0,
            ..opts(8)
        },
    ] {
        let e = evaluate(&Scorer::Base(&g), corpus(), &o, &device()).unwrap_err();
        assert!(matches!(e, EvalError::Options(_)), "{e}");
    }
    let one = evaluate(
        &Scorer::Base(&g),
        corpus(),
        &EvalOptions {
            max_docs: Some(1),
            ..opts(8)
        },
        &device(),
    )
    .unwrap();
    assert_eq!(one.documents, 1);
}
