//! The real Gemma-3-270M (GGUF Q4_K_M, fetched by `cargo xtask assets`): dequantisation per
//! tensor type, config from metadata, tokenizer ids and perplexity against transformers.
//! These tests fail (never skip) when the assets are missing.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;
use hippo_gemma::load::default_model_path;
use hippo_gemma::score::score_ids;
use hippo_gemma::{GemmaFamily, GemmaTokenizer, GgufWeights, LayerType, ModelLocation};

fn gguf() -> PathBuf {
    let p = default_model_path().expect("HOME or HIPPO_HOME must be set");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask assets` first (CI does this in .ci/run)",
        p.display()
    );
    p
}

#[test]
fn every_stored_type_dequantises_like_python_gguf() {
    let src = GgufWeights::open(&gguf()).unwrap();
    let want = json(&fixtures().join("gemma-3-270m/gguf_values.json"));
    let mut types = Vec::new();
    for t in want["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let ty = t["ggml_type"].as_str().unwrap();
        let raw = src.dequant(name).unwrap().unwrap();
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(raw.shape, shape, "{name}");
        for (i, w) in floats_of(&t["first8"]).iter().enumerate() {
            assert_eq!(raw.data[i], *w as f32, "{name} ({ty}) value {i}");
        }
        let sum: f64 = raw.data.iter().map(|&x| x as f64).sum();
        let want_sum = t["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-6 * want_sum.abs().max(1.0),
            "{name}: sum {sum} vs {want_sum}"
        );
        types.push(ty.to_string());
    }
    types.sort();
    assert_eq!(types, ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
}

#[test]
fn config_comes_from_metadata_and_architecture() {
    let src = GgufWeights::open(&gguf()).unwrap();
    let c = src.config();
    assert_eq!(c.family, GemmaFamily::Gemma3);
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.num_layers),
        (262_144, 640, 18)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 1, 256));
    assert_eq!(c.sliding_window, Some(512));
    assert_eq!(c.rope_global.theta, 1_000_000.0);
    assert_eq!(c.rope_local.theta, 10_000.0);
    assert_eq!(c.query_pre_attn_scalar, 256.0);
    let full: Vec<usize> = (0..18)
        .filter(|&i| c.layer_types[i] == LayerType::Full)
        .collect();
    assert_eq!(full, vec![5, 11, 17]);
}

#[test]
fn perplexity_matches_transformers_within_half_a_percent() {
    let path = gguf();
    let reference = json(&fixtures().join("gemma-3-270m/reference.json"));
    let location = ModelLocation::Gguf(path.clone());
    let tok = GemmaTokenizer::from_file(
        &location
            .default_tokenizer()
            .expect("tokenizer.json beside the GGUF"),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixtures().join("gemma-3-270m/text.txt")).unwrap();
    let ids = tok.encode(&text, true).unwrap();
    assert_eq!(
        ids,
        ids_of(&reference["input_ids"]),
        "tokenizer ids differ from the reference"
    );
    // The spans come with exactly these ids; each is a byte range of the text, in order,
    // and the tokens' spans decode to the text they cover.
    let (ids2, spans) = tok.encode_with_offsets(&text, true).unwrap();
    assert_eq!((ids2.len(), spans.len()), (ids.len(), ids.len()));
    assert_eq!(ids2, ids);
    assert_eq!(spans[0], (0, 0), "BOS has the empty span");
    assert!(spans.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(spans.iter().all(|&(a, b)| a <= b && b <= text.len()));
    for (i, &(a, b)) in spans.iter().enumerate().skip(1).take(200) {
        let piece = tok.decode(&ids[i..=i]).unwrap();
        assert_eq!(
            text[a..b].trim_start(),
            piece.trim_start(),
            "token {i} ({}) spans {a}..{b}",
            ids[i]
        );
    }

    let model = hippo_gemma::load_from(&location, &device()).unwrap();
    let scores = score_ids(&model, &ids, 1024, 1023, &device()).unwrap();
    let want_ppl = reference["ppl"].as_f64().unwrap();
    let got_ppl = scores.perplexity();
    let rel = (got_ppl - want_ppl).abs() / want_ppl;
    eprintln!(
        "Gemma-3-270M on {} tokens: ppl {got_ppl:.4} vs transformers {want_ppl:.4} (rel {rel:.2e})",
        ids.len()
    );
    assert!(rel <= 0.005, "ppl {got_ppl} vs {want_ppl}");
    // Per-token agreement on the first 64 predictions, as a finer check.
    let want64 = floats_of(&reference["nll_first64"]);
    let worst = scores
        .nll
        .iter()
        .zip(&want64)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 0.05,
        "worst per-token |Δnll| over the first 64 = {worst}"
    );
}
