//! Evaluation arithmetic and honesty: closed-form perplexity of a uniform model, word/byte
//! normalisation, pads and −100 excluded, read-only evaluation, identical streams for base and
//! HippoFormer, refusal of leaky configs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use hippo_eval::{EvalError, EvalOptions, Scorer, evaluate};
use hippo_gemma::Gemma;
use hippo_model::{HippoFormer, HippoFormerConfig, QueryMode};
use hippo_train::data::{Document, Split, Tokenize, TokenizedCorpus};

/// Bytes mapped into a 256-token vocabulary (ids 3..=252), BOS = 2.
struct Bytes;

impl Tokenize for Bytes {
    fn encode(&self, text: &str) -> hippo_train::data::Result<Vec<u32>> {
        Ok(std::iter::once(2)
            .chain(text.bytes().map(|b| u32::from(b) % 250 + 3))
            .collect())
    }
    fn fingerprint(&self) -> hippo_train::data::Result<String> {
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
    let a = evaluate(&Scorer::Hippo(&m), c.clone(), &opts(8), &device()).unwrap();
    let b = evaluate(&Scorer::Hippo(&m), c.clone(), &opts(8), &device()).unwrap();
    assert_eq!(a, b, "evaluating twice changed the numbers");
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
