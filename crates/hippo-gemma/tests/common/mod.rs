//! Shared helpers of the hippo-gemma integration tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use hippo_gemma::Gemma;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn device() -> Device {
    Device::flex()
}

/// The transformers fixture `dir` (e.g. `tiny-gemma3`).
pub fn tiny(dir: &str) -> Gemma {
    hippo_gemma::load(fixtures().join(dir).to_str().unwrap(), &device())
        .unwrap()
        .model
}

/// The second row of the fixture's reference input ids.
pub fn reference_ids(dir: &str) -> Vec<u32> {
    let r = json(&fixtures().join(dir).join("reference.json"));
    ids_of(&r["input_ids"][1])
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats_of(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Full-sequence logits of one row, flattened `[T * V]`.
pub fn logits_of(model: &Gemma, ids: &[u32]) -> Vec<f32> {
    let d = device();
    let x = model.ids_tensor(&[ids.to_vec()], &d).unwrap();
    to_vec(model.forward(x, None).logits)
}
