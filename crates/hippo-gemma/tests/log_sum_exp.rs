//! The log-sum-exp against an f64 reference, its gradient `softmax(z)`, and the target
//! log-probabilities it gives equal to a log-softmax's.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use hippo_gemma::score::{log_sum_exp, target_log_probs};

fn logits(b: usize, t: usize, v: usize, device: &Device) -> Tensor<3> {
    // Deterministic, wide-ranging values (|z| up to ≈ 40) so the max shift matters.
    let xs: Vec<f32> = (0..b * t * v)
        .map(|i| ((i as f32 * 0.7311).sin() * 40.0) + (i % 7) as f32)
        .collect();
    Tensor::from_data(TensorData::new(xs, [b, t, v]), device)
}

fn host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn log_sum_exp_matches_an_f64_reference() {
    let device = Device::flex();
    let v = 50;
    for (b, t) in [(1, 1), (1, 17), (3, 7), (11, 3)] {
        let z = logits(b, t, v, &device);
        let got = host(log_sum_exp(z.clone()));
        assert_eq!(got.len(), b * t);
        let zs = host(z);
        for (row, g) in got.iter().enumerate() {
            let r = &zs[row * v..(row + 1) * v];
            let m = r.iter().fold(f64::MIN, |a, &x| a.max(x as f64));
            let want = m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            assert!(
                (*g as f64 - want).abs() < 1e-4,
                "[{b}, {t}] row {row}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn the_gradient_is_the_softmax() {
    let device = Device::flex().autodiff();
    let (b, t, v) = (2, 9, 13);
    let z = logits(b, t, v, &device).require_grad();
    let grads = log_sum_exp(z.clone()).sum().backward();
    let g = host(z.grad(&grads).expect("a gradient"));
    let want = host(softmax(z.inner(), 2));
    let worst = g
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "max |grad − softmax| = {worst}");
}

#[test]
fn target_log_probs_equal_a_log_softmax() {
    let device = Device::flex();
    let (n, v) = (21, 40);
    let z = logits(1, n, v, &device).reshape([n, v]);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 17) % v as u32).collect();
    let got = target_log_probs(z.clone(), &targets, &device);
    let idx: Vec<i64> = targets.iter().map(|&x| x as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [n, 1]), &device);
    let want = host(log_softmax(z, 1).gather(1, idx).reshape([n]));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - *b as f64).abs() < 1e-5, "target {i}: {a} vs {b}");
    }
}
