//! Tiny random Gemma 1/2/3 checkpoints made with transformers (scripts/gen_tiny_gemma.py):
//! per-token NLL must match transformers to 1e-4, for each family, one of them bf16 and sharded,
//! and for a bf16 Gemma 1 whose config.json has gemma-2b's legacy `hidden_act: "gelu"`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use hippo_gemma::score::score_ids;
use hippo_gemma::{Activation, GemmaConfig, load};

fn check_family(dir: &str) {
    let path = fixtures().join(dir);
    let reference = json(&path.join("reference.json"));
    let model = load(path.to_str().unwrap(), &device()).unwrap().model;
    let seqs = reference["input_ids"].as_array().unwrap();
    let nlls = reference["nll"].as_array().unwrap();
    let mut worst = 0f64;
    for (ids, want) in seqs.iter().zip(nlls) {
        let ids = ids_of(ids);
        let want = floats_of(want);
        let got = score_ids(&model, &ids, 64, 63, &device()).unwrap();
        assert_eq!(got.nll.len(), want.len());
        for (g, w) in got.nll.iter().zip(&want) {
            worst = worst.max((g - w).abs());
        }
    }
    assert!(worst <= 1e-4, "{dir}: worst |Δnll| = {worst}");
    // The last-position logits of the first sequence, as another view of the same forward.
    let ids = ids_of(&seqs[0]);
    let logits = logits_of(&model, &ids);
    let v = model.config().vocab_size;
    let last = &logits[(ids.len() - 1) * v..(ids.len() - 1) * v + 8];
    let want: Vec<f32> = floats_of(&reference["logits_last"])
        .iter()
        .map(|&x| x as f32)
        .collect();
    assert!(
        max_abs_diff(last, &want) <= 1e-4,
        "{dir}: {last:?} vs {want:?}"
    );
}

#[test]
fn gemma1_multi_query_matches_transformers() {
    check_family("tiny-gemma1");
}

#[test]
fn gemma2_softcapped_sliding_matches_transformers() {
    check_family("tiny-gemma2");
}

#[test]
fn gemma3_bf16_sharded_matches_transformers() {
    check_family("tiny-gemma3");
}

/// gemma-2b's 4.x config layout: `hidden_act: "gelu"`, `hidden_activation: null`. transformers runs
/// it with the tanh approximation; exact GELU moves the worst per-token NLL by 8e-4 here.
#[test]
fn gemma1_legacy_gelu_config_matches_transformers() {
    let dir = "tiny-gemma1-gelu-legacy";
    let config = GemmaConfig::from_hf_file(&fixtures().join(dir).join("config.json")).unwrap();
    assert_eq!(config.activation, Activation::GeluTanh);
    let ablations = &json(&fixtures().join(dir).join("reference.json"))["ablations"];
    assert!(ablations["max_abs_dnll_exact_gelu"].as_f64().unwrap() > 5e-4);
    check_family(dir);
}

#[test]
fn every_config_form_describes_the_same_model() {
    // Each fixture's alternative layouts, named: a renamed or missing file fails here.
    let forms: [(&str, &[&str]); 4] = [
        ("tiny-gemma1", &["config.v4.json"]),
        ("tiny-gemma2", &["config.v4.json"]),
        ("tiny-gemma3", &["config.v4.json", "config.v5.json"]),
        ("tiny-gemma1-gelu-legacy", &["config.v5.json"]),
    ];
    for (dir, alts) in forms {
        let base = GemmaConfig::from_hf_file(&fixtures().join(dir).join("config.json")).unwrap();
        for alt in alts {
            let p = fixtures().join(dir).join(alt);
            assert!(p.is_file(), "fixture {} is missing", p.display());
            assert_eq!(GemmaConfig::from_hf_file(&p).unwrap(), base, "{dir}/{alt}");
        }
    }
}
