//! The composed model with `precision = "bf16"` on the tiny Gemma 3 fixture: identity at init
//! relative to the base in the same precision, logits close to (and not equal to) f32, the
//! causality audit for every configuration, the inference copy keeping the precision, and the
//! config field (TOML round trip, unknown values rejected).
#![allow(missing_docs, clippy::unwrap_used)]

use burn::module::Module;
use burn::tensor::DType;
use hippo_gemma::Precision;
use hippo_model::{HippoFormer, HippoFormerConfig};

mod common;

use common::{base, device, max_abs_diff, stream, tensors, to_vec};

/// Every configuration of the composed tests ([`common::configs`]), in bf16.
fn configs() -> Vec<(&'static str, HippoFormerConfig)> {
    common::configs()
        .into_iter()
        .map(|(name, cfg)| (name, bf16(cfg)))
        .collect()
}

fn bf16(cfg: HippoFormerConfig) -> HippoFormerConfig {
    HippoFormerConfig {
        precision: Precision::Bf16,
        ..common::small(cfg)
    }
}

#[test]
fn fresh_bf16_modules_give_the_bf16_base_logits_exactly() {
    let f32_base = base();
    let bf16_base = f32_base.clone().with_precision(Precision::Bf16).unwrap();
    let rows = stream(2, 24, 0);
    for (name, cfg) in configs() {
        let model = HippoFormer::new(f32_base.clone(), cfg, &device()).unwrap();
        assert_eq!(model.base.precision(), Precision::Bf16, "{name}");
        let mut state = model.empty_state(2, &device());
        for seg in 0..3 {
            let (ids, valid) = tensors(&rows, seg * 8, seg * 8 + 8);
            let want = to_vec(bf16_base.forward(ids.clone(), None).logits);
            let f32_logits = to_vec(f32_base.forward(ids.clone(), None).logits);
            let (out, next) = model.step(ids, valid, state).unwrap();
            state = next;
            for t in [&out.logits(), &out.fused] {
                assert_eq!(t.dtype(), DType::F32, "{name}");
            }
            assert_eq!(out.hidden.dtype(), DType::F32, "{name}");
            let got = to_vec(out.logits());
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff <= 1e-6,
                "{name}, segment {seg}: |Δlogit| vs bf16 base = {diff}"
            );
            // … and the bf16 path is live: not the f32 logits, but close to them.
            let scale = f32_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
            let vs_f32 = max_abs_diff(&got, &f32_logits);
            assert!(
                vs_f32 > 0.0 && vs_f32 <= 0.05 * scale,
                "{name}, segment {seg}: |Δlogit| vs f32 = {vs_f32} (scale {scale})"
            );
        }
        let entries = model.memory.stats(&state).entries;
        assert_eq!(
            entries > 0,
            model.config.memory,
            "{name}: {entries} entries"
        );
    }
}

#[test]
fn causality_audit_passes_in_bf16_for_every_config() {
    common::assert_causal_for_every(configs());
}

#[test]
fn the_inference_copy_keeps_bf16() {
    let model = HippoFormer::new(
        base(),
        bf16(HippoFormerConfig::default()),
        &device().autodiff(),
    )
    .unwrap();
    let inference = model.for_inference();
    assert_eq!(inference.base.precision(), Precision::Bf16);
    let rows = stream(1, 8, 2);
    let (ids, valid) = tensors(&rows, 0, 8);
    let state = inference.empty_state(1, &device());
    let got = to_vec(
        inference
            .forward(ids.clone(), valid, &state)
            .unwrap()
            .logits(),
    );
    let want = to_vec(
        base()
            .with_precision(Precision::Bf16)
            .unwrap()
            .forward(ids, None)
            .logits,
    );
    // LoRA merged (B = 0: W + 0 = W) and fresh modules: the bf16 base's logits.
    assert!(max_abs_diff(&got, &want) <= 1e-6);
}

#[test]
fn the_precision_field_round_trips_and_rejects_unknown_values() {
    let cfg = HippoFormerConfig::from_toml_str("precision = \"bf16\"\n", "t").unwrap();
    assert_eq!(cfg.precision, Precision::Bf16);
    assert!(cfg.to_toml().contains("precision = \"bf16\""));
    assert_eq!(
        HippoFormerConfig::from_toml_str(&cfg.to_toml(), "round").unwrap(),
        cfg
    );
    assert_eq!(HippoFormerConfig::default().precision, Precision::F32);
    for bad in ["\"fp16\"", "\"BF16\"", "\"f16\"", "16"] {
        let e = HippoFormerConfig::from_toml_str(&format!("precision = {bad}\n"), "t")
            .unwrap_err()
            .to_string();
        // The TOML error points at the value (`precision = …` is quoted in it).
        assert!(e.contains("precision = ") && e.contains(bad), "{bad} → {e}");
        if bad.starts_with('"') {
            assert!(
                e.contains("`f32`, `bf16`") || e.contains("`f32` or `bf16`"),
                "{bad} → {e}"
            );
        }
    }
    assert!(cfg.validate_for_device(&device()).is_ok());
}

#[test]
fn a_base_already_stored_in_bf16_still_trains_f32_lora_factors() {
    // E.g. a bf16 base scorer handed on: Burn would build the factors at the base's dtype.
    // Off autodiff nothing trains, so every matmul weight is stored in bf16; then moved to the
    // autodiff device as the trainer moves its base.
    let ad = device().autodiff();
    let stored = base()
        .with_precision(Precision::Bf16)
        .unwrap()
        .train()
        .to_device(&ad);
    assert_eq!(stored.embed_tokens.val().dtype(), DType::BF16);
    let model = HippoFormer::new(stored, bf16(HippoFormerConfig::default()), &ad).unwrap();
    for layer in &model.base.layers {
        let a = layer.self_attn.q_proj.weight.adapter().unwrap();
        assert_eq!(a.a.val().dtype(), DType::F32);
        assert_eq!(a.b.val().dtype(), DType::F32);
        assert!(a.a.val().is_require_grad());
        assert_eq!(layer.self_attn.q_proj.weight.val().dtype(), DType::F32);
    }
}
