//! Behavioural tests of the salience gate: causality, row independence, padding, gradients,
//! initial smoothing, the importance range, statistics and configuration validation.

use burn::module::Param;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use hippo_salience::{SalienceError, SalienceGate, SalienceGateConfig, SalienceOutput};

const B: usize = 2;
const T: usize = 9;
const D: usize = 16;

fn device() -> Device {
    Device::flex()
}

fn gate(device: &Device) -> SalienceGate {
    SalienceGateConfig::new(D)
        .with_n_heads(4)
        .with_min_duration(3)
        .init(device)
}

fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Row 0: last two positions are padding. Row 1: first two positions are padding (left padding).
fn padded_mask(device: &Device) -> Tensor<2, Bool> {
    let mut flags = vec![true; B * T];
    flags[T - 2] = false;
    flags[T - 1] = false;
    flags[T] = false;
    flags[T + 1] = false;
    Tensor::from_data(TensorData::new(flags, [B, T]), device)
}

fn values(x: &Tensor<2>) -> Vec<f32> {
    x.to_data().iter::<f32>().collect()
}

fn fields(out: &SalienceOutput) -> Vec<Vec<f32>> {
    [
        &out.salience,
        &out.importance,
        &out.local_score,
        &out.global_score,
        &out.combined,
        &out.smoothed,
    ]
    .iter()
    .map(|x| values(x))
    .collect()
}

/// Bitwise comparison of `[B, T]` vectors restricted to `rows` and positions `..=t_max`.
fn assert_prefix_identical(a: &[Vec<f32>], b: &[Vec<f32>], rows: &[usize], t_max: usize) {
    for (fa, fb) in a.iter().zip(b) {
        for &r in rows {
            for t in 0..=t_max {
                let (x, y) = (fa[r * T + t], fb[r * T + t]);
                assert_eq!(x.to_bits(), y.to_bits(), "row {r} pos {t}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn causal_future_changes_leave_past_bit_identical() {
    let device = device();
    let gate = gate(&device);
    let hidden = random([B, T, D], &device);
    let valid = padded_mask(&device);
    let base = fields(&gate.forward(hidden.clone(), valid.clone()));
    for t in 0..T - 1 {
        // Change hidden states and the mask strictly after t, in both rows.
        let noise = random([B, T - t - 1, D], &device);
        let changed = hidden.clone().slice_assign([0..B, t + 1..T, 0..D], noise);
        let flipped = valid.clone().slice_assign(
            [0..B, t + 1..T],
            Tensor::<2, Bool>::full([B, T - t - 1], true, &device),
        );
        let out = fields(&gate.forward(changed, flipped));
        assert_prefix_identical(&base, &out, &[0, 1], t);
    }
}

#[test]
fn rows_are_independent() {
    let device = device();
    let gate = gate(&device);
    let hidden = random([B, T, D], &device);
    let valid = padded_mask(&device);
    let base = fields(&gate.forward(hidden.clone(), valid.clone()));
    let changed = hidden.slice_assign([1..2, 0..T, 0..D], random([1, T, D], &device));
    let flipped = valid.slice_assign([1..2, 0..T], Tensor::<2, Bool>::full([1, T], true, &device));
    let out = fields(&gate.forward(changed, flipped));
    assert_prefix_identical(&base, &out, &[0], T - 1);
}

#[test]
fn padding_gives_zero_salience_and_low_importance_without_nan() {
    let device = device();
    let gate = gate(&device);
    let valid = padded_mask(&device);
    let out = gate.forward(random([B, T, D], &device), valid.clone());
    let flags: Vec<bool> = valid.to_data().iter::<bool>().collect();
    let (sal, imp) = (values(&out.salience), values(&out.importance));
    for i in 0..B * T {
        assert!(sal[i].is_finite() && imp[i].is_finite());
        if flags[i] {
            assert!(sal[i] > 0.0 && sal[i] < 1.0);
            assert!((imp[i] - (1.0 + 4.0 * sal[i])).abs() < 1e-5);
        } else {
            assert_eq!(sal[i], 0.0);
            assert_eq!(imp[i], 1.0);
        }
    }
    // A fully padded row is also NaN-free.
    let none = Tensor::<2, Bool>::full([B, T], false, &device);
    let out = gate.forward(random([B, T, D], &device), none);
    assert!(values(&out.salience).iter().all(|s| *s == 0.0));
    assert!(values(&out.global_score).iter().all(|s| s.is_finite()));
}

#[test]
fn smoothing_at_init_is_a_causal_moving_average() {
    let device = device();
    let gate = gate(&device); // min_duration = 3
    let valid = Tensor::<2, Bool>::full([B, T], true, &device);
    let out = gate.forward(random([B, T, D], &device), valid);
    let (x, y) = (values(&out.combined), values(&out.smoothed));
    for r in 0..B {
        for t in 0..T {
            let expected: f32 = (0..3)
                .filter(|j| *j <= t)
                .map(|j| x[r * T + t - j] / 3.0)
                .sum();
            assert!((y[r * T + t] - expected).abs() < 1e-5, "row {r} pos {t}");
        }
    }
}

#[test]
fn both_ends_of_the_importance_range_are_live() {
    let device = device();
    let mut gate = gate(&device);
    let valid = Tensor::<2, Bool>::full([1, T], true, &device);
    let hidden = random([1, T, D], &device);
    gate.threshold = Param::from_tensor(Tensor::full([1], -1e4, &device));
    let high = values(&gate.forward(hidden.clone(), valid.clone()).importance);
    assert!(high.iter().all(|i| (i - 5.0).abs() < 1e-4), "{high:?}");
    gate.threshold = Param::from_tensor(Tensor::full([1], 1e4, &device));
    let low = values(&gate.forward(hidden, valid).importance);
    assert!(low.iter().all(|i| (i - 1.0).abs() < 1e-4), "{low:?}");
}

#[test]
fn gradients_reach_every_parameter() {
    let device = device().autodiff();
    let gate = gate(&device);
    let valid = padded_mask(&device);
    let out = gate.forward(random([B, T, D], &device), valid);
    let grads = (out.importance.sum() + out.salience.powi_scalar(2).sum()).backward();
    let nonzero = |g: Option<Tensor<2>>, name: &str| {
        let g = g.unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(
            g.abs().sum().into_scalar::<f32>() > 0.0,
            "zero gradient for {name}"
        );
    };
    nonzero(gate.local_in.weight.grad(&grads), "local_in");
    nonzero(gate.local_mid.weight.grad(&grads), "local_mid");
    nonzero(gate.local_out.weight.grad(&grads), "local_out");
    nonzero(gate.query.weight.grad(&grads), "query");
    nonzero(gate.key.weight.grad(&grads), "key");
    nonzero(gate.value.weight.grad(&grads), "value");
    nonzero(gate.global_out.weight.grad(&grads), "global_out");
    for (p, name) in [
        (&gate.pathway_logit, "pathway_logit"),
        (&gate.smoothing, "smoothing"),
        (&gate.threshold, "threshold"),
    ] {
        nonzero(p.grad(&grads).map(|g| g.reshape([1, -1])), name);
    }
}

#[test]
fn stats_cover_real_tokens_only() {
    let device = device();
    let gate = gate(&device);
    let valid = padded_mask(&device);
    let out = gate.forward(random([B, T, D], &device), valid.clone());
    let stats = gate.stats(&out, &valid);
    assert_eq!(stats.tokens, B * T - 4);
    assert!(stats.min > 0.0 && stats.max < 1.0 && stats.min <= stats.mean);
    assert!(stats.mean <= stats.max && stats.std >= 0.0);
    assert!((0.0..=1.0).contains(&stats.tagged_ratio));
    assert_eq!(stats.threshold, 0.0);
    assert!((stats.pathway_weight - 0.5).abs() < 1e-12);
    let json = serde_json::to_string(&stats).map_err(|e| e.to_string());
    assert!(json.is_ok_and(|s| s.contains("tagged_ratio")));
}

#[test]
fn config_validation_reports_clear_errors() {
    let err = SalienceGateConfig::new(30).with_n_heads(4).validate();
    assert_eq!(
        err,
        Err(SalienceError::HeadsDoNotDivide {
            n_heads: 4,
            hidden_dim: 30
        })
    );
    let err = SalienceGateConfig::new(16)
        .with_importance_range([5.0, 5.0])
        .validate();
    assert_eq!(
        err,
        Err(SalienceError::ImportanceRange { lo: 5.0, hi: 5.0 })
    );
    let err = SalienceGateConfig::new(16)
        .with_importance_range([3.0, 1.0])
        .validate();
    assert!(matches!(err, Err(SalienceError::ImportanceRange { .. })));
    assert!(matches!(
        SalienceGateConfig::new(16).with_min_duration(0).validate(),
        Err(SalienceError::MinDuration(0))
    ));
    assert!(matches!(
        SalienceGateConfig::new(2).with_n_heads(1).validate(),
        Err(SalienceError::HiddenDimTooSmall(2))
    ));
    assert!(matches!(
        SalienceGateConfig::new(16).with_dropout(1.0).validate(),
        Err(SalienceError::Dropout(_))
    ));
    assert!(SalienceGateConfig::new(16).try_init(&device()).is_ok());
    let msg = SalienceError::HeadsDoNotDivide {
        n_heads: 4,
        hidden_dim: 30,
    }
    .to_string();
    assert!(msg.contains("n_heads (4)") && msg.contains("hidden_dim (30)"));
}
