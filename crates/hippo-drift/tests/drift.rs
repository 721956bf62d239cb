//! Behavioural tests of the drift calibrator: exact identity at init, per-token gating,
//! anchors, running statistics, gradients, row independence, causality and validation.

use burn::module::Param;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use hippo_drift::{DriftCalibrator, DriftCalibratorConfig, DriftError};

const D: usize = 8;

fn device() -> Device {
    Device::flex()
}

fn host<const N: usize>(x: &Tensor<N>) -> Vec<f32> {
    x.to_data().iter::<f32>().collect()
}

fn host_bool<const N: usize>(x: &Tensor<N, Bool>) -> Vec<bool> {
    x.to_data().iter::<bool>().collect()
}

fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn all_valid(b: usize, t: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::full([b, t], true, device)
}

/// A calibrator whose correction is not the identity (A = I + 0.1·noise, b = 0.2).
fn perturbed(config: DriftCalibratorConfig, device: &Device) -> DriftCalibrator {
    let mut c = config.init(device);
    let noise = Tensor::<2>::random([D, D], Distribution::Normal(0.0, 0.1), device);
    c.a = Param::from_tensor(Tensor::eye(D, device) + noise);
    c.b = Param::from_tensor(Tensor::full([D], 0.2, device));
    c
}

#[test]
fn identity_at_init_returns_the_input_exactly() {
    let device = device();
    let h = random([3, 7, D], &device).mul_scalar(5.0);
    let valid = all_valid(3, 7, &device);
    for config in [
        DriftCalibratorConfig::new(D).with_always_correct(true),
        DriftCalibratorConfig::new(D).with_drift_threshold(0.0),
        DriftCalibratorConfig::new(D),
    ] {
        let c = config.init(&device);
        c.calibrate(random([2, 5, D], &device), all_valid(2, 5, &device))
            .expect("calibrate");
        let out = c.forward(h.clone(), valid.clone()).expect("forward");
        assert_eq!(host(&out.corrected), host(&h));
    }
    let c = DriftCalibratorConfig::new(D).init(&device);
    assert_eq!(host(&c.regularizer()), vec![0.0]);
}

#[test]
fn drift_is_distance_to_nearest_anchor_and_gates_per_token() {
    let device = device();
    let c = perturbed(DriftCalibratorConfig::new(D).with_n_anchors(4), &device);
    // Before calibration: no anchors, drift 0, nothing corrected.
    let h = random([2, 6, D], &device);
    let out = c
        .forward(h.clone(), all_valid(2, 6, &device))
        .expect("forward");
    assert!(host(&out.drift).iter().all(|x| *x == 0.0));
    assert_eq!(host(&out.corrected), host(&h));

    // Calibrate on 8 real tokens (row 0 has 2 padded): anchors are real tokens 0, 2, 4, 6,
    // i.e. flat positions 0, 2, 6, 8.
    let calib = random([2, 5, D], &device);
    let valid = Tensor::<2, Bool>::from_data(
        TensorData::new(
            vec![true, true, true, false, false, true, true, true, true, true],
            [2, 5],
        ),
        &device,
    );
    assert_eq!(c.calibrate(calib.clone(), valid.clone()), Ok(true));
    assert_eq!(c.anchor_count(), 4);
    assert_eq!(
        c.calibrate(random([1, 3, D], &device), all_valid(1, 3, &device)),
        Ok(false)
    );
    let anchors = host(&c.anchors.value_sync());
    let calib_v = host(&calib);
    for (i, token) in [0usize, 2, 6, 8].iter().enumerate() {
        assert_eq!(
            anchors[i * D..(i + 1) * D],
            calib_v[token * D..(token + 1) * D]
        );
    }

    // Tokens: an anchor itself (drift ≈ 0, kept), and far away (drift large, corrected).
    let var = host(&c.running_var.value_sync());
    let anchor0 = &calib_v[..D];
    let far: Vec<f32> = anchor0.iter().map(|x| x + 10.0).collect();
    let near: Vec<f32> = anchor0.to_vec();
    let probe = Tensor::<3>::from_data(TensorData::new([near, far].concat(), [1, 2, D]), &device);
    let out = c
        .forward(probe.clone(), all_valid(1, 2, &device))
        .expect("forward");
    let drift = host(&out.drift);
    assert!(drift[0] < 1e-2, "anchor drift {}", drift[0]);
    // Reference: RMS distance in running-std units to the nearest anchor.
    let probe_v = host(&probe);
    let expected = (0..4)
        .map(|a| {
            ((0..D)
                .map(|j| {
                    let diff = f64::from(probe_v[D + j] - anchors[a * D + j]);
                    diff * diff / (f64::from(var[j]) + 1e-5)
                })
                .sum::<f64>()
                / D as f64)
                .sqrt()
        })
        .fold(f64::INFINITY, f64::min);
    assert!(
        (f64::from(drift[1]) - expected).abs() < 1e-3 * expected,
        "{} vs {expected}",
        drift[1]
    );
    assert_eq!(host_bool(&out.corrected_mask), vec![false, true]);
    let (pv, cv) = (host(&probe), host(&out.corrected));
    assert_eq!(cv[..D], pv[..D]);
    assert_ne!(cv[D..], pv[D..]);

    // Reset forgets the anchors.
    c.reset();
    assert_eq!(c.anchor_count(), 0);
    assert_eq!(c.calibrate(calib, valid), Ok(true));
}

#[test]
fn correction_follows_the_formula_and_strength() {
    let device = device();
    for s in [1.0, 0.25] {
        let c = perturbed(
            DriftCalibratorConfig::new(D)
                .with_always_correct(true)
                .with_correction_strength(s),
            &device,
        );
        let h = random([1, 3, D], &device);
        let out = c
            .forward(h.clone(), all_valid(1, 3, &device))
            .expect("forward");
        let (a, b, hv) = (host(&c.a.val()), host(&c.b.val()), host(&h));
        let got = host(&out.corrected);
        for t in 0..3 {
            for j in 0..D {
                let ha: f64 = (0..D)
                    .map(|i| f64::from(hv[t * D + i] * a[i * D + j]))
                    .sum();
                let x = f64::from(hv[t * D + j]);
                let expected = x + s * (ha + f64::from(b[j]) - x);
                assert!((f64::from(got[t * D + j]) - expected).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn padding_passes_through_and_rows_are_independent() {
    let device = device();
    let c = perturbed(
        DriftCalibratorConfig::new(D).with_drift_threshold(0.0),
        &device,
    );
    c.calibrate(random([2, 4, D], &device), all_valid(2, 4, &device))
        .expect("calibrate");
    let h = random([2, 5, D], &device);
    let valid = Tensor::<2, Bool>::from_data(
        TensorData::new(
            vec![
                true, true, true, true, false, true, true, false, false, false,
            ],
            [2, 5],
        ),
        &device,
    );
    let out = c.forward(h.clone(), valid.clone()).expect("forward");
    let (hv, cv, dv) = (host(&h), host(&out.corrected), host(&out.drift));
    assert_eq!(cv[4 * D..5 * D], hv[4 * D..5 * D]);
    assert_eq!(dv[4], 0.0);
    assert_eq!(host_bool(&out.corrected_mask), host_bool(&valid));
    // Row 1 changes (values, mask) never change row 0; future positions never change the past.
    let h2 = h
        .clone()
        .slice_assign(
            [1..2, 0..5, 0..D],
            random([1, 5, D], &device).mul_scalar(9.0),
        )
        .slice_assign([0..1, 3..5, 0..D], random([1, 2, D], &device));
    let valid2 = valid.slice_assign([1..2, 0..5], Tensor::<2, Bool>::full([1, 5], true, &device));
    let out2 = c.forward(h2, valid2).expect("forward");
    let (cv2, dv2) = (host(&out2.corrected), host(&out2.drift));
    assert_eq!(cv[..3 * D], cv2[..3 * D]);
    assert_eq!(dv[..3], dv2[..3]);
}

#[test]
fn gradients_reach_a_and_b() {
    let device = device().autodiff();
    let c = DriftCalibratorConfig::new(D)
        .with_always_correct(true)
        .init(&device);
    let out = c
        .forward(random([2, 3, D], &device), all_valid(2, 3, &device))
        .expect("forward");
    let loss = out.corrected.powi_scalar(2).sum() + c.regularizer();
    let grads = loss.backward();
    let ga = c.a.grad(&grads).expect("grad A");
    let gb = c.b.grad(&grads).expect("grad b");
    assert!(ga.abs().sum().into_scalar::<f32>() > 0.0);
    assert!(gb.abs().sum().into_scalar::<f32>() > 0.0);
}

#[test]
fn running_stats_update_in_training_only() {
    let device = device();
    let c = DriftCalibratorConfig::new(D)
        .with_momentum(0.5)
        .init(&device);
    let h = random([2, 4, D], &device).add_scalar(3.0);
    c.forward(h.clone(), all_valid(2, 4, &device))
        .expect("forward");
    assert!(host(&c.running_mean.value_sync()).iter().all(|x| *x == 0.0));
    assert!(host(&c.running_var.value_sync()).iter().all(|x| *x == 1.0));

    let ad = device.clone().autodiff();
    let c = DriftCalibratorConfig::new(D).with_momentum(0.5).init(&ad);
    let h = random([2, 4, D], &ad).add_scalar(3.0);
    assert!(h.device().is_autodiff());
    let hv = host(&h);
    c.forward(h, all_valid(2, 4, &ad)).expect("forward");
    let mean = host(&c.running_mean.value_sync());
    for j in 0..D {
        let m: f32 = (0..8).map(|t| hv[t * D + j]).sum::<f32>() / 8.0;
        assert!((mean[j] - 0.5 * m).abs() < 1e-5);
    }
    let stats = c.stats(
        &c.forward(random([1, 2, D], &ad), all_valid(1, 2, &ad))
            .expect("forward"),
        &all_valid(1, 2, &ad),
    );
    assert_eq!(stats.anchors, 0);
    assert!(stats.mean_running_var > 0.0);
    assert!(serde_json::to_string(&stats).is_ok_and(|s| s.contains("mean_drift")));
}

#[test]
fn config_validation_reports_clear_errors() {
    let cfg = || DriftCalibratorConfig::new(D);
    assert_eq!(
        DriftCalibratorConfig::new(0).validate(),
        Err(DriftError::ZeroDim)
    );
    assert_eq!(
        cfg().with_n_anchors(0).validate(),
        Err(DriftError::ZeroAnchors)
    );
    assert_eq!(
        cfg().with_momentum(1.0).validate(),
        Err(DriftError::Momentum(1.0))
    );
    assert_eq!(
        cfg().with_drift_threshold(-0.1).validate(),
        Err(DriftError::Threshold(-0.1))
    );
    assert!(cfg().with_correction_strength(f64::NAN).validate().is_err());
    assert_eq!(
        cfg().with_epsilon(0.0).validate(),
        Err(DriftError::Epsilon(0.0))
    );
    assert!(cfg().validate().is_ok());
    let device = device();
    let c = cfg().init(&device);
    let none = Tensor::<2, Bool>::full([1, 3], false, &device);
    assert_eq!(
        c.calibrate(random([1, 3, D], &device), none),
        Err(DriftError::NoValidTokens)
    );
    let err = c
        .forward(random([1, 3, D + 1], &device), all_valid(1, 3, &device))
        .err();
    assert!(matches!(err, Some(DriftError::Shape { .. })));
}
