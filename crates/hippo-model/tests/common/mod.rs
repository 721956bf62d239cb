//! What the composed-model tests share: the tiny Gemma 3 fixture, a small config, every
//! configuration the project runs, and deterministic token streams.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_gemma::Gemma;
use hippo_model::audit::{audit, open_for_audit};
use hippo_model::{HippoFormer, HippoFormerConfig};

pub fn device() -> Device {
    Device::flex()
}

pub fn base() -> Gemma {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    hippo_gemma::load(dir.to_str().unwrap(), &device())
        .unwrap()
        .model
}

pub fn small(cfg: HippoFormerConfig) -> HippoFormerConfig {
    HippoFormerConfig {
        buffer_size: 16,
        max_replay_rounds: 3,
        lora_r: 4,
        n_anchors: 8,
        ..cfg
    }
}

/// Every configuration the project can run: the default and each ablation.
pub fn configs() -> Vec<(&'static str, HippoFormerConfig)> {
    let d = small(HippoFormerConfig::default());
    let mut all = vec![("default", d.clone())];
    all.extend(d.ablations());
    all.push((
        "no_lora",
        HippoFormerConfig {
            use_lora: false,
            ..d.clone()
        },
    ));
    all.push((
        "protect_recent_8",
        HippoFormerConfig {
            memory_protect_recent: 8,
            ..d.clone()
        },
    ));
    all.push((
        "drift_always",
        HippoFormerConfig {
            drift_always_correct: true,
            ..d
        },
    ));
    all
}

pub fn stream(rows: usize, len: usize, seed: u32) -> Vec<Vec<u32>> {
    (0..rows)
        .map(|r| {
            std::iter::once(2)
                .chain((1..len).map(|i| (i as u32 * 37 + r as u32 * 101 + seed * 13) % 250 + 3))
                .collect()
        })
        .collect()
}

pub fn tensors(rows: &[Vec<u32>], from: usize, to: usize) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let b = rows.len();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|s| s[from..to].iter().map(|&x| x as i64))
        .collect();
    (
        Tensor::from_data(TensorData::new(flat, [b, to - from]), &device()),
        Tensor::from_data(
            TensorData::new(vec![true; b * (to - from)], [b, to - from]),
            &device(),
        ),
    )
}

/// The largest `|a_i − b_i|`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The causality audit for each of `configs` (every path opened first): perturbing tokens after
/// each cut leaves the logits before it bit-identical, and changes something after it.
pub fn assert_causal_for_every(configs: Vec<(&'static str, HippoFormerConfig)>) {
    let rows = stream(2, 30, 1);
    let (cids, cvalid) = tensors(&rows, 0, 10);
    for (name, cfg) in configs {
        let model = HippoFormer::new(base(), cfg, &device()).unwrap();
        let h = model.base.hidden_states(cids.clone(), None);
        let model = open_for_audit(model, (h, cvalid.clone())).unwrap();
        for cut in [4, 13, 21] {
            let r = audit(&model, &rows, 10, cut, &device()).unwrap();
            assert!(
                r.passed,
                "{name}, cut {cut}: past changed by {}",
                r.max_abs_diff_past
            );
            assert!(
                r.max_abs_diff_future > 0.0,
                "{name}: perturbation had no effect at all"
            );
        }
    }
}
