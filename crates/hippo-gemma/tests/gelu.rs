//! `gelu_tanh` is the tanh approximation of GELU: Burn's own formula and the closed form, over a
//! range that covers both tails.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::{Device, Tensor, TensorData, activation};
use hippo_gemma::model::gelu_tanh;

#[test]
fn gelu_tanh_equals_the_tanh_formula() {
    let device = Device::flex();
    let xs: Vec<f32> = (0..4001).map(|i| -20.0 + i as f32 * 0.01).collect();
    let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
    let ours = gelu_tanh(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let burn = activation::gelu_approximate(x)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let k = (2.0 / std::f64::consts::PI).sqrt();
    for ((x, a), b) in xs.iter().zip(&ours).zip(&burn) {
        let x = *x as f64;
        let want = 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh());
        let tol = 1e-6 * (1.0 + want.abs());
        assert!(
            (*a as f64 - want).abs() < tol,
            "x = {x}: {a} vs the formula {want}"
        );
        assert!((a - b).abs() as f64 <= tol, "x = {x}: {a} vs Burn's {b}");
    }
}
