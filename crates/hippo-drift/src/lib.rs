//! Synaptic homeostasis: a calibrator that measures how far hidden states have drifted from
//! reference anchors and pulls drifted tokens back with a learned affine correction, as sleep
//! renormalises synaptic strength.
//!
//! # Math
//!
//! Input `h` is `[B, T, D]` with a validity mask `v` `[B, T]` (`true` = real token).
//!
//! * **Anchors** `a_1..a_N` (`N ≤ n_anchors`, `[n_anchors, D]` with a 0/1 validity vector) are
//!   taken once, from the first [`DriftCalibrator::calibrate`] batch: its `n` real tokens, in
//!   row-major order, at indices `⌊i·n/N⌋` for `i = 0..N` (evenly spaced), `N = min(n_anchors, n)`.
//!   Later calls are no-ops until [`DriftCalibrator::reset`]. The same batch initialises the
//!   running mean `μ` and variance `σ²` (per feature, over its real tokens).
//! * **Drift** of a token: RMS distance to its nearest anchor in running-std units,
//!   `δ_t = min_i ‖(h_t − a_i) ⊘ σ‖₂ / √D` with `σ = √(σ² + ε)`. Padding, and every token
//!   before the anchors exist, has `δ_t = 0`.
//! * **Correction**: `h'_t = h_t + s·(h_t·A + b − h_t)` (`s = correction_strength`), computed as
//!   `h_t + s·(h_t·(A − I) + b)`, applied to token `t` iff it is real and
//!   (`always_correct` or `δ_t > drift_threshold`); other tokens pass through bit-for-bit.
//!   `A = I`, `b = 0` at init, so the correction is then exactly the identity.
//! * **Running statistics** (on an autodiff device, i.e. in training only):
//!   `μ ← m·μ + (1 − m)·mean(h)`, `σ² ← m·σ² + (1 − m)·var(h)` over the real tokens of the batch
//!   (`m = momentum`). The update happens after the output is computed, so a call's output uses
//!   only the statistics from before it.
//! * **Regulariser**: `‖A − I‖²_F + ‖b‖²`.
//!
//! # Invariants
//!
//! * Per token: the gate is decided by each token's own drift — no batch-wide branch; outputs at
//!   `t` depend only on `h_t`, the anchors and the running statistics (causal, row-independent).
//! * Exactly the identity at init.
//!
//! # State
//!
//! `A` and `b` are trainable [`Param`]s. Anchors and running statistics are non-trainable
//! [`RunningState`]s — Burn's own idiom for running statistics (see `BatchNorm`): they are saved
//! in the module record and moved with the module, get no gradient and are not touched by
//! optimisers. Like `BatchNorm`'s statistics they are shared between clones of a module.
//!
//! # Example
//!
//! Calibrating on a random batch, then measuring and correcting a drifted one, on the CPU:
//!
//! ```
//! use burn::tensor::{Bool, Device, Distribution, Tensor};
//! use hippo_drift::DriftCalibratorConfig;
//!
//! let device = Device::flex();
//! let drift = DriftCalibratorConfig::new(8).with_n_anchors(4).try_init(&device)?; // D = 8
//! let valid = Tensor::<2, Bool>::full([2, 5], true, &device);
//! let h = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
//!
//! // The first calibration batch sets the anchors (its real tokens 0, 2, 5 and 7 of 10, in
//! // row-major order); later calls are no-ops until `reset()`.
//! assert!(drift.calibrate(h.clone(), valid.clone())?);
//! assert!(!drift.calibrate(h.clone(), valid.clone())?);
//! assert_eq!(drift.anchor_count(), 4);
//!
//! // An anchor is at distance ≈ 0 from itself.
//! let near = drift.forward(h.clone(), valid.clone())?;
//! assert_eq!(near.drift.dims(), [2, 5]);
//! let first: Vec<f32> = near.drift.to_data().iter::<f32>().collect();
//! assert!(first[0] < 1e-2);
//!
//! // Scaled ×10, every token is far from every anchor: all are drifted and corrected …
//! let far = h.mul_scalar(10.0);
//! let out = drift.forward(far.clone(), valid.clone())?;
//! assert_eq!(out.corrected.dims(), [2, 5, 8]);
//! let stats = drift.stats(&out, &valid);
//! assert_eq!((stats.drifted_ratio, stats.corrected_ratio), (1.0, 1.0));
//! // … yet at init the correction is exactly the identity (A = I, b = 0).
//! let host = |x: &Tensor<3>| x.to_data().iter::<f32>().collect::<Vec<_>>();
//! assert_eq!(host(&out.corrected), host(&far));
//! assert_eq!(stats.regularizer, 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use serde::Serialize;

/// Errors raised by configuration validation and calibration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DriftError {
    /// The state width must be positive.
    #[error("dim must be at least 1, got 0")]
    ZeroDim,
    /// At least one anchor is needed.
    #[error("n_anchors must be at least 1, got 0")]
    ZeroAnchors,
    /// The threshold must be finite and non-negative.
    #[error("drift_threshold must be finite and >= 0, got {0}")]
    Threshold(f64),
    /// Momentum must lie in `[0, 1)`.
    #[error("momentum must lie in [0, 1), got {0}")]
    Momentum(f64),
    /// The correction strength must be finite and non-negative.
    #[error("correction_strength must be finite and >= 0, got {0}")]
    Strength(f64),
    /// The variance floor must be finite and positive.
    #[error("epsilon must be finite and > 0, got {0}")]
    Epsilon(f64),
    /// A tensor does not have the shape the operation needs.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which argument was wrong, and in which call.
        what: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// Calibration needs at least one real token.
    #[error("calibrate: the batch has no real (valid) tokens to take anchors from")]
    NoValidTokens,
}

/// Configuration of a [`DriftCalibrator`].
#[derive(Config, Debug)]
pub struct DriftCalibratorConfig {
    /// Width `D` of the hidden states.
    pub dim: usize,
    /// Maximum number of anchors `N` taken from the calibration batch.
    #[config(default = 64)]
    pub n_anchors: usize,
    /// A token is corrected when its drift `δ_t` exceeds this (unless `always_correct`).
    #[config(default = 0.3)]
    pub drift_threshold: f64,
    /// Running-statistics momentum `m ∈ [0, 1)`: `μ ← m·μ + (1 − m)·batch mean`.
    #[config(default = 0.99)]
    pub momentum: f64,
    /// Strength `s` of the correction `h + s·(h·A + b − h)`.
    #[config(default = 1.0)]
    pub correction_strength: f64,
    /// Correct every real token, whatever its drift.
    #[config(default = false)]
    pub always_correct: bool,
    /// Variance floor `ε` in `σ = √(σ² + ε)`.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl DriftCalibratorConfig {
    /// Checks every field; returns the first problem found.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.dim == 0 {
            return Err(DriftError::ZeroDim);
        }
        if self.n_anchors == 0 {
            return Err(DriftError::ZeroAnchors);
        }
        if !(self.drift_threshold.is_finite() && self.drift_threshold >= 0.0) {
            return Err(DriftError::Threshold(self.drift_threshold));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(DriftError::Momentum(self.momentum));
        }
        if !(self.correction_strength.is_finite() && self.correction_strength >= 0.0) {
            return Err(DriftError::Strength(self.correction_strength));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(DriftError::Epsilon(self.epsilon));
        }
        Ok(())
    }

    /// Validates the configuration and builds the calibrator (identity correction, no anchors).
    pub fn try_init(&self, device: &Device) -> Result<DriftCalibrator, DriftError> {
        self.validate()?;
        let (d, n) = (self.dim, self.n_anchors);
        Ok(DriftCalibrator {
            a: Param::from_tensor(Tensor::eye(d, device)),
            b: Param::from_tensor(Tensor::zeros([d], device)),
            anchors: RunningState::new(Tensor::zeros([n, d], device)),
            anchor_valid: RunningState::new(Tensor::zeros([n], device)),
            running_mean: RunningState::new(Tensor::zeros([d], device)),
            running_var: RunningState::new(Tensor::ones([d], device)),
            drift_threshold: self.drift_threshold,
            momentum: self.momentum,
            correction_strength: self.correction_strength,
            always_correct: self.always_correct,
            epsilon: self.epsilon,
            track_running_stats: true,
        })
    }

    /// Builds the calibrator on `device`.
    ///
    /// # Panics
    ///
    /// If [`validate`](Self::validate) fails; use [`try_init`](Self::try_init) to get the error.
    pub fn init(&self, device: &Device) -> DriftCalibrator {
        match self.try_init(device) {
            Ok(calibrator) => calibrator,
            Err(err) => panic!("invalid DriftCalibratorConfig: {err}"),
        }
    }
}

/// The homeostatic drift calibrator.
#[derive(Module, Debug)]
pub struct DriftCalibrator {
    /// Correction matrix `A` `[D, D]` (init identity).
    pub a: Param<Tensor<2>>,
    /// Correction bias `b` `[D]` (init zero).
    pub b: Param<Tensor<1>>,
    /// Anchors `[n_anchors, D]` (non-trainable).
    pub anchors: RunningState<Tensor<2>>,
    /// 1 for anchors that are set, 0 otherwise `[n_anchors]` (non-trainable).
    pub anchor_valid: RunningState<Tensor<1>>,
    /// Running mean `μ` `[D]` (non-trainable).
    pub running_mean: RunningState<Tensor<1>>,
    /// Running variance `σ²` `[D]` (non-trainable).
    pub running_var: RunningState<Tensor<1>>,
    /// Drift above which a token is corrected.
    pub drift_threshold: f64,
    /// Running-statistics momentum.
    pub momentum: f64,
    /// Correction strength `s`.
    pub correction_strength: f64,
    /// Correct every real token.
    pub always_correct: bool,
    /// Variance floor `ε`.
    pub epsilon: f64,
    /// Whether a forward on an autodiff device updates the running statistics (default `true`).
    /// Data-parallel replicas turn it off and the main device calls [`observe`](Self::observe)
    /// once with the whole batch, so the statistics match a single-device run.
    pub track_running_stats: bool,
}

/// Result of a [`DriftCalibrator::forward`] call.
#[derive(Debug, Clone)]
pub struct DriftOutput {
    /// Corrected hidden states `[B, T, D]`.
    pub corrected: Tensor<3>,
    /// Drift `δ_t` per token `[B, T]` (0 at padding and before calibration).
    pub drift: Tensor<2>,
    /// Tokens the correction was applied to `[B, T]`.
    pub corrected_mask: Tensor<2, Bool>,
}

/// Summary of one forward call and of the calibrator (reads tensors back to the host).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftStats {
    /// Mean drift over real tokens.
    pub mean_drift: f64,
    /// Maximum drift over real tokens.
    pub max_drift: f64,
    /// Fraction of real tokens whose drift exceeds the threshold.
    pub drifted_ratio: f64,
    /// Fraction of real tokens that were corrected.
    pub corrected_ratio: f64,
    /// Number of anchors set.
    pub anchors: usize,
    /// `‖A − I‖²_F + ‖b‖²`.
    pub regularizer: f64,
    /// Mean running variance over features.
    pub mean_running_var: f64,
}

fn shape_err(what: &'static str, expected: &[usize], got: &[usize]) -> DriftError {
    DriftError::Shape {
        what,
        expected: expected.to_vec(),
        got: got.to_vec(),
    }
}

impl DriftCalibrator {
    fn dim(&self) -> usize {
        self.b.val().dims()[0]
    }

    fn check(
        &self,
        h: &Tensor<3>,
        valid: &Tensor<2, Bool>,
        what: &'static str,
    ) -> Result<[usize; 3], DriftError> {
        let [b, t, d] = h.dims();
        if d != self.dim() {
            return Err(shape_err(what, &[b, t, self.dim()], &[b, t, d]));
        }
        if valid.dims() != [b, t] {
            return Err(shape_err(what, &[b, t], &valid.dims()));
        }
        Ok([b, t, d])
    }

    /// Per-feature `1/σ` from the running variance, detached, `[D]`.
    fn inv_std(&self, device: &Device) -> Tensor<1> {
        self.running_var
            .value_sync()
            .to_device(device)
            .detach()
            .add_scalar(self.epsilon)
            .sqrt()
            .recip()
    }

    /// Measures drift and corrects drifted tokens.
    ///
    /// # Shapes
    ///
    /// * `h`: `[B, T, D]`, `valid`: `[B, T]` (`true` = real token)
    /// * `corrected`: `[B, T, D]`, `drift` and `corrected_mask`: `[B, T]`
    pub fn forward(&self, h: Tensor<3>, valid: Tensor<2, Bool>) -> Result<DriftOutput, DriftError> {
        let [b, t, d] = self.check(&h, &valid, "DriftCalibrator::forward")?;
        let device = h.device();
        let drift = self.drift(h.clone(), valid.clone(), [b, t, d], &device);

        let drifted = drift.clone().greater_elem(self.drift_threshold);
        let gate = if self.always_correct {
            valid.clone()
        } else {
            valid.clone().bool_and(drifted)
        };
        let eye = Tensor::<2>::eye(d, &device);
        let delta = h
            .clone()
            .reshape([b * t, d])
            .matmul(self.a.val() - eye)
            .reshape([b, t, d])
            + self.b.val().reshape([1, 1, d]);
        let corrected = h.clone().mask_where(
            gate.clone().reshape([b, t, 1]).expand([b, t, d]),
            h.clone() + delta.mul_scalar(self.correction_strength),
        );

        if device.is_autodiff() && self.track_running_stats {
            self.update_running_stats(h, &valid, [b, t, d]);
        }
        Ok(DriftOutput {
            corrected,
            drift,
            corrected_mask: gate,
        })
    }

    /// `δ_t` for every token, `[B, T]`.
    fn drift(
        &self,
        h: Tensor<3>,
        valid: Tensor<2, Bool>,
        [b, t, d]: [usize; 3],
        device: &Device,
    ) -> Tensor<2> {
        let inv_std = self.inv_std(device).reshape([1, d]);
        let anchors = self.anchors.value_sync().to_device(device).detach();
        let anchor_valid = self.anchor_valid.value_sync().to_device(device).detach();
        let [n, _] = anchors.dims();
        let hs = h.reshape([b * t, d]) * inv_std.clone();
        let as_ = anchors * inv_std;
        // ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y, [B·T, N].
        let sq = hs.clone().powi_scalar(2).sum_dim(1)
            + as_.clone().powi_scalar(2).sum_dim(1).reshape([1, n])
            - hs.matmul(as_.transpose()).mul_scalar(2.0);
        let missing = anchor_valid
            .lower_equal_elem(0.5)
            .reshape([1, n])
            .expand([b * t, n]);
        let nearest = sq
            .mask_fill(missing, f32::INFINITY)
            .min_dim(1)
            .reshape([b, t]);
        // No anchors (min = +∞) or padding: drift 0.
        let undefined = nearest.clone().is_inf().bool_or(valid.bool_not());
        nearest
            .clamp_min(1e-12)
            .sqrt()
            .div_scalar((d as f64).sqrt())
            .mask_fill(undefined, 0.0)
    }

    /// Updates the running mean and variance with a batch's real tokens (momentum as
    /// configured), as a training forward does; for callers that run the forward elsewhere.
    pub fn observe(&self, h: Tensor<3>, valid: Tensor<2, Bool>) -> Result<(), DriftError> {
        let dims = self.check(&h, &valid, "DriftCalibrator::observe")?;
        self.update_running_stats(h, &valid, dims);
        Ok(())
    }

    fn update_running_stats(&self, h: Tensor<3>, valid: &Tensor<2, Bool>, [b, t, d]: [usize; 3]) {
        let device = h.device();
        let (mean, var, count) = masked_moments(h.detach(), valid.clone(), [b, t, d]);
        let any = count.greater_elem(0.0).expand([d]);
        let m = self.momentum;
        let old_mean = self.running_mean.value_sync().to_device(&device);
        let old_var = self.running_var.value_sync().to_device(&device);
        let new_mean = old_mean.clone().mul_scalar(m) + mean.mul_scalar(1.0 - m);
        let new_var = old_var.clone().mul_scalar(m) + var.mul_scalar(1.0 - m);
        self.running_mean
            .update(old_mean.mask_where(any.clone(), new_mean).detach());
        self.running_var
            .update(old_var.mask_where(any, new_var).detach());
    }

    /// Takes anchors from this batch if none are set; returns whether it did.
    ///
    /// The `N = min(n_anchors, n)` anchors are the batch's `n` real tokens (row-major order) at
    /// indices `⌊i·n/N⌋`. The running mean and variance are initialised from the same tokens.
    /// Once anchors exist this is a no-op (returns `false`) until [`reset`](Self::reset).
    pub fn calibrate(&self, h: Tensor<3>, valid: Tensor<2, Bool>) -> Result<bool, DriftError> {
        let [b, t, d] = self.check(&h, &valid, "DriftCalibrator::calibrate")?;
        if self.anchor_count() > 0 {
            tracing::debug!("drift anchors already set; calibrate is a no-op until reset()");
            return Ok(false);
        }
        let device = h.device();
        let flags: Vec<bool> = valid.to_data().iter::<bool>().collect();
        let real: Vec<usize> = (0..b * t).filter(|i| flags[*i]).collect();
        if real.is_empty() {
            return Err(DriftError::NoValidTokens);
        }
        let capacity = self.anchor_valid.value_sync().dims()[0];
        let n = capacity.min(real.len());
        let picks: Vec<i64> = (0..n).map(|i| real[i * real.len() / n] as i64).collect();
        let index = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(picks, [n]), &device);
        let chosen = h.clone().detach().reshape([b * t, d]).select(0, index);
        let anchors = if n < capacity {
            Tensor::cat(vec![chosen, Tensor::zeros([capacity - n, d], &device)], 0)
        } else {
            chosen
        };
        let mut flags = vec![0.0f32; capacity];
        flags[..n].fill(1.0);
        self.anchors.update(anchors);
        self.anchor_valid.update(Tensor::from_data(
            TensorData::new(flags, [capacity]),
            &device,
        ));
        let (mean, var, _) = masked_moments(h.detach(), valid, [b, t, d]);
        self.running_mean.update(mean);
        self.running_var.update(var);
        tracing::debug!(anchors = n, tokens = real.len(), "drift anchors calibrated");
        Ok(true)
    }

    /// Forgets the anchors and resets the running statistics to `μ = 0`, `σ² = 1`.
    /// `A` and `b` are left as they are.
    pub fn reset(&self) {
        let anchors = self.anchors.value_sync();
        let device = anchors.device();
        self.anchors.update(anchors.zeros_like());
        self.anchor_valid
            .update(self.anchor_valid.value_sync().zeros_like());
        let d = self.dim();
        self.running_mean.update(Tensor::zeros([d], &device));
        self.running_var.update(Tensor::ones([d], &device));
    }

    /// Number of anchors currently set (reads back to the host).
    pub fn anchor_count(&self) -> usize {
        self.anchor_valid
            .value_sync()
            .to_data()
            .iter::<f32>()
            .filter(|v| *v > 0.5)
            .count()
    }

    /// `‖A − I‖²_F + ‖b‖²`, shape `[1]`.
    pub fn regularizer(&self) -> Tensor<1> {
        let a = self.a.val();
        let eye = Tensor::<2>::eye(self.dim(), &a.device());
        (a - eye).powi_scalar(2).sum() + self.b.val().powi_scalar(2).sum()
    }

    /// Summary of `output` over the real tokens of `valid`, plus the calibrator's state.
    pub fn stats(&self, output: &DriftOutput, valid: &Tensor<2, Bool>) -> DriftStats {
        let flags: Vec<bool> = valid.to_data().iter::<bool>().collect();
        let drift: Vec<f64> = output.drift.to_data().iter::<f64>().collect();
        let corrected: Vec<bool> = output.corrected_mask.to_data().iter::<bool>().collect();
        let real: Vec<usize> = (0..flags.len()).filter(|i| flags[*i]).collect();
        let n = real.len().max(1) as f64;
        let running_var: Vec<f64> = self
            .running_var
            .value_sync()
            .to_data()
            .iter::<f64>()
            .collect();
        DriftStats {
            mean_drift: real.iter().map(|i| drift[*i]).sum::<f64>() / n,
            max_drift: real.iter().map(|i| drift[*i]).fold(0.0, f64::max),
            drifted_ratio: real
                .iter()
                .filter(|i| drift[**i] > self.drift_threshold)
                .count() as f64
                / n,
            corrected_ratio: real.iter().filter(|i| corrected[**i]).count() as f64 / n,
            anchors: self.anchor_count(),
            regularizer: self
                .regularizer()
                .to_data()
                .iter::<f64>()
                .next()
                .unwrap_or(0.0),
            mean_running_var: running_var.iter().sum::<f64>() / running_var.len().max(1) as f64,
        }
    }
}

/// Mean and (population) variance per feature over the real tokens, and the token count `[1]`.
/// With no real tokens the moments are 0 (the count tells the caller).
fn masked_moments(
    h: Tensor<3>,
    valid: Tensor<2, Bool>,
    [b, t, d]: [usize; 3],
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let w = valid.float().reshape([b * t, 1]);
    let x = h.reshape([b * t, d]);
    let count = w.clone().sum();
    let denom = count.clone().clamp_min(1.0).reshape([1, 1]);
    let mean = (x.clone() * w.clone()).sum_dim(0) / denom.clone();
    let var = ((x - mean.clone()).powi_scalar(2) * w).sum_dim(0) / denom;
    (mean.reshape([d]), var.reshape([d]), count)
}
