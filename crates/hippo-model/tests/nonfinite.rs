//! NaN logits in generation are reported with where they happened (stream, segment and
//! position, and how many vocabulary entries), for the bare base and for HippoFormer.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::ops::ControlFlow;

use burn::tensor::{DType, Tensor};
use hippo_gemma::{GenerateOptions, SamplingConfig};
use hippo_model::{HippoFormer, HippoFormerConfig, HippoGenerateOptions};

use common::{base, device, small};

/// An LM head that gives NaN for every token.
fn nan_head(v: usize, d: usize) -> Option<Tensor<2>> {
    Some(Tensor::<2>::full([v, d], f32::NAN, &device()).cast(DType::F16))
}

#[test]
fn nan_logits_in_generation_name_the_position() {
    let mut g = base();
    let [v, d] = g.embed_tokens.val().dims();
    g.lm_head_f16 = nan_head(v, d);
    let opts = GenerateOptions {
        max_new_tokens: 4,
        sampling: SamplingConfig::greedy(),
        ..GenerateOptions::default()
    };
    let e =
        hippo_gemma::sample::generate(&g, &[2, 5, 7, 9, 11], &opts, |_| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("at stream position 4 (prompt of 5 tokens, 0 generated)")
            && e.contains(&format!("NaN at {v} of {v} vocabulary entries")),
        "{e}"
    );

    let mut m = HippoFormer::new(base(), small(HippoFormerConfig::default()), &device()).unwrap();
    m.base.lm_head_f16 = nan_head(v, d);
    let opts = HippoGenerateOptions {
        max_new_tokens: 4,
        sampling: SamplingConfig::greedy(),
        segment_len: 4,
        ..HippoGenerateOptions::default()
    };
    let prompt: Vec<u32> = std::iter::once(2).chain(3..12).collect();
    let state = m.empty_state(1, &device());
    let e = hippo_model::generate(&m, &prompt, state, &opts, |_| ControlFlow::Continue(()))
        .unwrap_err()
        .to_string();
    // 10 prompt tokens in segments of 4 (later ones BOS + 3): segments 0 and 1 are committed,
    // the first token is sampled at the last position of segment 2.
    assert!(
        e.contains("at segment 2 position 3 (prompt of 10 tokens, 0 generated)")
            && e.contains("NaN at"),
        "{e}"
    );
}
