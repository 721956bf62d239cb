//! Identity at init on the real Gemma-3-270M (fetched by `cargo xtask assets`; fails if missing).
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_model::{HippoFormer, HippoFormerConfig};

#[test]
fn fresh_hippoformer_equals_gemma_3_270m() {
    let device = Device::flex();
    let path = hippo_gemma::load::default_model_path().expect("HOME or HIPPO_HOME");
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask assets`",
        path.display()
    );
    let base = hippo_gemma::load(path.to_str().unwrap(), &device)
        .unwrap()
        .model;
    let model = HippoFormer::new(base.clone(), HippoFormerConfig::default(), &device).unwrap();
    let mut state = model.empty_state(1, &device);
    for seg in 0..2u32 {
        let ids: Vec<i64> = std::iter::once(2)
            .chain((1..48).map(|i| ((i * 7919 + seg * 31) % 200_000 + 100) as i64))
            .collect();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 48]), &device);
        let valid = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 48], [1, 48]), &device);
        let want = base.forward(x.clone(), None).logits;
        let (out, next) = model.step(x, valid, state).unwrap();
        state = next;
        let diff = (out.logits() - want).abs().max().into_scalar::<f32>();
        assert!(diff <= 1e-6, "segment {seg}: |Δlogit| = {diff}");
    }
    assert!(
        model.memory.stats(&state).entries > 0,
        "the first segment was written"
    );
}
