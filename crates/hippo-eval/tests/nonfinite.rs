//! A non-finite score is reported where it comes from: scorer, document, segment and position,
//! not as a NaN perplexity.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use hippo_data::{Document, Split, Tokenize, TokenizedCorpus};
use hippo_eval::{EvalError, EvalOptions, Scorer, evaluate};
use hippo_gemma::Gemma;
use hippo_model::{HippoFormer, HippoFormerConfig};

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

fn device() -> Device {
    Device::flex()
}

/// The tiny Gemma 3 with the embedding row of `token` set to NaN where it is read as input.
/// The LM head is tied to the embedding, so it first gets its own (f16) copy of the clean
/// embedding: otherwise that token's logit would be NaN at every position.
fn base_with_nan_token(token: usize) -> Gemma {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let mut g = hippo_gemma::load(dir.to_str().unwrap(), &device())
        .unwrap()
        .model
        .with_f16_lm_head();
    let e = g.embed_tokens.val();
    let [_, d] = e.dims();
    let e = e.slice_assign(
        [token..token + 1, 0..d],
        Tensor::full([1, d], f32::NAN, &device()),
    );
    g.embed_tokens = Param::from_tensor(e);
    g
}

#[test]
fn a_nan_logit_is_reported_with_document_segment_and_position() {
    let doc = |id: &str, text: &str| Document {
        id: id.into(),
        title: id.into(),
        text: text.into(),
        source: "test".into(),
        url: None,
    };
    // '#' (token 35 % 250 + 3 = 38) occurs once, as token 25 of document `x` (BOS is token 0).
    let docs = vec![
        doc("clean", "hello there, all fine here"),
        doc("x", &format!("{}#bbbb", "a".repeat(24))),
    ];
    let c = Arc::new(TokenizedCorpus::build(&docs, &Bytes, "test", Split::Test).unwrap());
    assert_eq!(c.docs[1].tokens[25], 38);
    let opts = EvalOptions {
        seq_len: 8,
        streams: 2,
        max_docs: None,
        allow_leaky: false,
    };
    // Segments of 8 inputs: 0 holds tokens 0..8, each later one BOS + 7 tokens, so token 25
    // is read in segment 3 (tokens 22..29).
    let g = base_with_nan_token(38);
    let e = evaluate(&Scorer::Base(&g), c.clone(), &opts, &device()).unwrap_err();
    assert!(matches!(e, EvalError::NonFinite(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("the base model") && msg.contains("document 1 (`x`), segment 3,"),
        "{msg}"
    );
    let cfg = HippoFormerConfig {
        buffer_size: 16,
        max_replay_rounds: 3,
        lora_r: 4,
        n_anchors: 8,
        ..HippoFormerConfig::default()
    };
    let m = HippoFormer::new(g, cfg, &device()).unwrap();
    let e = evaluate(&Scorer::Hippo(&m), c, &opts, &device()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("HippoFormer") && msg.contains("document 1 (`x`), segment 3,"),
        "{msg}"
    );
}
