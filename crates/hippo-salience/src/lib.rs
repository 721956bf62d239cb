//! Sharp-wave-ripple detection: a gate that tags the tokens worth consolidating, as hippocampal
//! SWRs tag salient experience for replay.
//!
//! # Math
//!
//! Input `h` is `[B, T, D]` with a validity mask `v` `[B, T]` (`true` = real token, `false` =
//! padding). For every token `t` of every row `b` (rows never interact):
//!
//! * **Local pathway** (per token): `ℓ_t = W₃·gelu(W₂·gelu(W₁·h_t + c₁) + c₂) + c₃`, an MLP
//!   `D → D/2 → D/4 → 1` (dropout after each GELU while training).
//! * **Global pathway** (causal multi-head attention, `H = n_heads`, `d_h = D/H`):
//!   `q, k, u = h·W_q, h·W_k, h·W_v` split into heads;
//!   `α_{t,s} = softmax_s(q_t·k_s/√d_h + mask_{t,s})` with `mask_{t,s} = −∞` when `s > t`
//!   (causal) or when `s` is padding, except that `s = t` is never masked, so no row of the
//!   softmax is empty and nothing is NaN; `g_t = w_g·concat_heads(Σ_s α_{t,s} u_s) + c_g`.
//! * **Combination**: `x_t = σ(w)·ℓ_t + (1 − σ(w))·g_t`, `w` learnable (init 0, so ½/½);
//!   padded positions are set to `x_t = 0`.
//! * **Temporal smoothing** (causal convolution of width `K = min_duration`):
//!   `y_t = Σ_{j=0}^{K−1} c_j·x_{t−j}`, with `x_{t−j} = 0` before the start of the segment.
//!   `c` is learnable, init `c_j = 1/K` (a moving average), so a tag needs support over time.
//! * **Salience**: `s_t = σ(y_t − θ)`, `θ` learnable (init `threshold_init`).
//! * **Importance**: `i_t = lo + s_t·(hi − lo)` with `[lo, hi] = importance_range`; both ends
//!   are reachable (`s → 0` gives `lo`, `s → 1` gives `hi`).
//! * **Padding**: `s_t = 0` and `i_t = lo`.
//!
//! # Invariants
//!
//! * Causal: outputs at position `t` depend only on `h_{≤t}` and `v_{≤t}` of the same row.
//! * No batch-wide statistics or branches: row `b` never affects row `b' ≠ b`.
//! * Padded positions never produce NaN and never influence real positions.
//!
//! # Shapes
//!
//! `hidden: [B, T, D]`, `valid: [B, T]` (Bool) → every field of [`SalienceOutput`] is `[B, T]`.
//!
//! # Example
//!
//! Scoring a right-padded batch of random hidden states on the CPU:
//!
//! ```
//! use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
//! use hippo_salience::SalienceGateConfig;
//!
//! let device = Device::flex();
//! let gate = SalienceGateConfig::new(16) // D = 16
//!     .with_n_heads(4)
//!     .with_min_duration(3)
//!     .try_init(&device)?;
//!
//! // Two rows of six tokens; the last two positions of row 1 are padding.
//! let hidden = Tensor::<3>::random([2, 6, 16], Distribution::Normal(0.0, 1.0), &device);
//! let flags: Vec<bool> = (0..12).map(|k| k < 10).collect();
//! let valid = Tensor::<2, Bool>::from_data(TensorData::new(flags, [2, 6]), &device);
//!
//! let out = gate.forward(hidden.clone(), valid.clone());
//! assert_eq!(out.salience.dims(), [2, 6]);
//! let salience: Vec<f32> = out.salience.to_data().iter::<f32>().collect();
//! let importance: Vec<f32> = out.importance.to_data().iter::<f32>().collect();
//! for k in 0..12 {
//!     if k < 10 {
//!         // Real tokens: s ∈ (0, 1), importance in the default range [1, 5].
//!         assert!(salience[k] > 0.0 && salience[k] < 1.0);
//!         assert!((1.0..=5.0).contains(&importance[k]));
//!     } else {
//!         // Padding: s = 0 and the lowest importance, exactly.
//!         assert_eq!((salience[k], importance[k]), (0.0, 1.0));
//!     }
//! }
//! let stats = gate.stats(&out, &valid);
//! assert_eq!(stats.tokens, 10);
//! assert_eq!(stats.pathway_weight, 0.5); // σ(0): local and global pathways weigh ½ each at init
//!
//! // Causal: changing the last position leaves every earlier score bit-identical.
//! let changed = Tensor::cat(
//!     vec![
//!         hidden.slice([0..2, 0..5, 0..16]),
//!         Tensor::random([2, 1, 16], Distribution::Normal(0.0, 1.0), &device),
//!     ],
//!     1,
//! );
//! let again: Vec<f32> = gate.forward(changed, valid).salience.to_data().iter::<f32>().collect();
//! for row in 0..2 {
//!     assert_eq!(again[row * 6..row * 6 + 5], salience[row * 6..row * 6 + 5]);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor, activation};
use serde::Serialize;

/// Errors raised by configuration validation and by shape checks.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SalienceError {
    /// The local MLP narrows `D → D/2 → D/4`, so `D` must be at least 4.
    #[error("hidden_dim must be at least 4 (the local pathway narrows D → D/2 → D/4), got {0}")]
    HiddenDimTooSmall(usize),
    /// `n_heads` must be positive and divide `hidden_dim`.
    #[error("n_heads ({n_heads}) must be positive and divide hidden_dim ({hidden_dim})")]
    HeadsDoNotDivide {
        /// Requested number of heads.
        n_heads: usize,
        /// Model width.
        hidden_dim: usize,
    },
    /// The smoothing window must cover at least the current token.
    #[error("min_duration must be at least 1, got {0}")]
    MinDuration(usize),
    /// `importance_range` must be finite with `lo < hi`.
    #[error("importance_range must be finite with lo < hi, got [{lo}, {hi}]")]
    ImportanceRange {
        /// Lower end of the range.
        lo: f64,
        /// Upper end of the range.
        hi: f64,
    },
    /// Dropout probability must lie in `[0, 1)`.
    #[error("dropout must lie in [0, 1), got {0}")]
    Dropout(f64),
    /// The initial threshold must be finite.
    #[error("threshold_init must be finite, got {0}")]
    ThresholdInit(f64),
}

/// Configuration of a [`SalienceGate`].
#[derive(Config, Debug)]
pub struct SalienceGateConfig {
    /// Model width `D` of the hidden states that are scored.
    pub hidden_dim: usize,
    /// Number of heads `H` of the causal global pathway; must divide `hidden_dim`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Width `K` of the causal smoothing window (current and `K − 1` past positions).
    #[config(default = 2)]
    pub min_duration: usize,
    /// Initial value of the learnable threshold `θ`.
    #[config(default = 0.0)]
    pub threshold_init: f64,
    /// `[lo, hi]`: importance of an untagged (`s = 0`) and a fully tagged (`s = 1`) token.
    #[config(default = "[1.0, 5.0]")]
    pub importance_range: [f64; 2],
    /// Dropout probability in the local MLP and on the attention weights (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl SalienceGateConfig {
    /// Checks every field; returns the first problem found.
    pub fn validate(&self) -> Result<(), SalienceError> {
        if self.hidden_dim < 4 {
            return Err(SalienceError::HiddenDimTooSmall(self.hidden_dim));
        }
        if self.n_heads == 0 || !self.hidden_dim.is_multiple_of(self.n_heads) {
            return Err(SalienceError::HeadsDoNotDivide {
                n_heads: self.n_heads,
                hidden_dim: self.hidden_dim,
            });
        }
        if self.min_duration == 0 {
            return Err(SalienceError::MinDuration(self.min_duration));
        }
        let [lo, hi] = self.importance_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(SalienceError::ImportanceRange { lo, hi });
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(SalienceError::Dropout(self.dropout));
        }
        if !self.threshold_init.is_finite() {
            return Err(SalienceError::ThresholdInit(self.threshold_init));
        }
        Ok(())
    }

    /// Validates the configuration and builds the gate on `device`.
    pub fn try_init(&self, device: &Device) -> Result<SalienceGate, SalienceError> {
        self.validate()?;
        let d = self.hidden_dim;
        let k = self.min_duration;
        let smoothing = Tensor::<1>::full([k], 1.0 / k as f64, device);
        Ok(SalienceGate {
            local_in: LinearConfig::new(d, d / 2).init(device),
            local_mid: LinearConfig::new(d / 2, d / 4).init(device),
            local_out: LinearConfig::new(d / 4, 1).init(device),
            query: LinearConfig::new(d, d).init(device),
            key: LinearConfig::new(d, d).init(device),
            value: LinearConfig::new(d, d).init(device),
            global_out: LinearConfig::new(d, 1).init(device),
            pathway_logit: Param::from_tensor(Tensor::zeros([1], device)),
            smoothing: Param::from_tensor(smoothing),
            threshold: Param::from_tensor(Tensor::full([1], self.threshold_init, device)),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            importance_lo: self.importance_range[0],
            importance_hi: self.importance_range[1],
        })
    }

    /// Builds the gate on `device`.
    ///
    /// # Panics
    ///
    /// If [`validate`](Self::validate) fails; use [`try_init`](Self::try_init) to get the error.
    pub fn init(&self, device: &Device) -> SalienceGate {
        match self.try_init(device) {
            Ok(gate) => gate,
            Err(err) => panic!("invalid SalienceGateConfig: {err}"),
        }
    }
}

/// The sharp-wave-ripple detector: scores each token's salience and importance.
#[derive(Module, Debug)]
pub struct SalienceGate {
    /// Local pathway, first layer `D → D/2`.
    pub local_in: Linear,
    /// Local pathway, second layer `D/2 → D/4`.
    pub local_mid: Linear,
    /// Local pathway, output layer `D/4 → 1`.
    pub local_out: Linear,
    /// Global pathway query projection `D → D`.
    pub query: Linear,
    /// Global pathway key projection `D → D`.
    pub key: Linear,
    /// Global pathway value projection `D → D`.
    pub value: Linear,
    /// Global pathway score projection `D → 1` (applied to the concatenated heads).
    pub global_out: Linear,
    /// Pathway mixing logit `w` `[1]`: the local pathway gets weight `σ(w)`.
    pub pathway_logit: Param<Tensor<1>>,
    /// Causal smoothing kernel `c` `[K]`; `c_j` weighs position `t − j`.
    pub smoothing: Param<Tensor<1>>,
    /// Tagging threshold `θ` `[1]`.
    pub threshold: Param<Tensor<1>>,
    /// Dropout (active only on an autodiff device).
    pub dropout: Dropout,
    /// Number of attention heads.
    pub n_heads: usize,
    /// Importance of an untagged token.
    pub importance_lo: f64,
    /// Importance of a fully tagged token.
    pub importance_hi: f64,
}

/// Everything the gate computes for a segment; every tensor is `[B, T]`.
#[derive(Debug, Clone)]
pub struct SalienceOutput {
    /// `s_t ∈ (0, 1)`; exactly 0 at padding.
    pub salience: Tensor<2>,
    /// `i_t = lo + s_t·(hi − lo)`; exactly `lo` at padding.
    pub importance: Tensor<2>,
    /// Local pathway score `ℓ_t`.
    pub local_score: Tensor<2>,
    /// Global (causal attention) pathway score `g_t`.
    pub global_score: Tensor<2>,
    /// Combined score `x_t` before smoothing (0 at padding).
    pub combined: Tensor<2>,
    /// Smoothed score `y_t` (the logit before the threshold).
    pub smoothed: Tensor<2>,
}

/// Summary statistics of one gate call, over real (non-padding) tokens only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SalienceStats {
    /// Number of real tokens the statistics cover.
    pub tokens: usize,
    /// Mean salience.
    pub mean: f64,
    /// Standard deviation of salience (population).
    pub std: f64,
    /// Minimum salience (0 when there are no tokens).
    pub min: f64,
    /// Maximum salience (0 when there are no tokens).
    pub max: f64,
    /// Fraction of tokens with salience > 0.5 (tagged).
    pub tagged_ratio: f64,
    /// Current threshold `θ`.
    pub threshold: f64,
    /// Current weight `σ(w)` of the local pathway.
    pub pathway_weight: f64,
}

impl SalienceGate {
    /// Scores a segment.
    ///
    /// # Shapes
    ///
    /// * `hidden`: `[B, T, D]`
    /// * `valid`: `[B, T]`, `true` for real tokens
    /// * every output field: `[B, T]`
    ///
    /// # Panics
    ///
    /// If `valid` is not `[B, T]` or `D` differs from the configured `hidden_dim`
    /// (a programming error, as in Burn's own layers).
    pub fn forward(&self, hidden: Tensor<3>, valid: Tensor<2, Bool>) -> SalienceOutput {
        let [b, t, d] = hidden.dims();
        assert_eq!(
            valid.dims(),
            [b, t],
            "SalienceGate::forward: valid mask must be [B, T] = [{b}, {t}]"
        );
        let device = hidden.device();
        let pad = valid.clone().bool_not();

        // Local pathway: D → D/2 → D/4 → 1.
        let x = activation::gelu(self.local_in.forward(hidden.clone()));
        let x = activation::gelu(self.local_mid.forward(self.dropout.forward(x)));
        let local = self
            .local_out
            .forward(self.dropout.forward(x))
            .reshape([b, t]);

        // Global pathway: causal multi-head attention, one score per token.
        let global = self.global_pathway(hidden, &valid, d).reshape([b, t]);

        // Combination with a learnable mixing weight.
        let mix = activation::sigmoid(self.pathway_logit.val()).reshape([1, 1]);
        let combined = local.clone() * mix.clone() + global.clone() * (mix.neg() + 1.0);
        let combined = combined.mask_fill(pad.clone(), 0.0);

        // Causal temporal smoothing: y_t = Σ_j c_j x_{t−j}.
        let kernel = self.smoothing.val();
        let [k] = kernel.dims();
        let mut smoothed = combined.clone() * kernel.clone().narrow(0, 0, 1).reshape([1, 1]);
        for j in 1..k.min(t) {
            let shifted = Tensor::cat(
                vec![
                    Tensor::zeros([b, j], &device),
                    combined.clone().slice([0..b, 0..t - j]),
                ],
                1,
            );
            smoothed = smoothed + shifted * kernel.clone().narrow(0, j, 1).reshape([1, 1]);
        }

        let threshold = self.threshold.val().reshape([1, 1]);
        let salience =
            activation::sigmoid(smoothed.clone() - threshold).mask_fill(pad.clone(), 0.0);
        let importance = (salience.clone() * (self.importance_hi - self.importance_lo))
            .add_scalar(self.importance_lo)
            .mask_fill(pad, self.importance_lo);

        SalienceOutput {
            salience,
            importance,
            local_score: local,
            global_score: global,
            combined,
            smoothed,
        }
    }

    /// Causal, padding-aware multi-head attention projected to one score per token: `[B, T, 1]`.
    fn global_pathway(&self, hidden: Tensor<3>, valid: &Tensor<2, Bool>, d: usize) -> Tensor<3> {
        let [b, t, _] = hidden.dims();
        let h = self.n_heads;
        let dh = d / h;
        let device = hidden.device();
        let heads = |x: Tensor<3>| x.reshape([b, t, h, dh]).swap_dims(1, 2);
        let q = heads(self.query.forward(hidden.clone()));
        let k = heads(self.key.forward(hidden.clone()));
        let v = heads(self.value.forward(hidden));

        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();

        // true = masked out: future keys, padded keys; never the diagonal.
        let causal = Tensor::<2, Bool>::tril_mask([t, t], 0, &device)
            .reshape([1, 1, t, t])
            .expand([b, 1, t, t]);
        let key_pad = valid
            .clone()
            .bool_not()
            .reshape([b, 1, 1, t])
            .expand([b, 1, t, t]);
        let not_diag = Tensor::<2, Bool>::diag_mask([t, t], 0, &device)
            .reshape([1, 1, t, t])
            .expand([b, 1, t, t]);
        let mask = causal
            .bool_or(key_pad)
            .bool_and(not_diag)
            .expand([b, h, t, t]);

        let probs = activation::softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
        let probs = self.dropout.forward(probs);
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.global_out.forward(context)
    }

    /// Summary statistics over the real tokens of `output` (reads the tensors back to the host).
    pub fn stats(&self, output: &SalienceOutput, valid: &Tensor<2, Bool>) -> SalienceStats {
        let salience: Vec<f32> = output.salience.to_data().iter::<f32>().collect();
        let valid: Vec<bool> = valid.to_data().iter::<bool>().collect();
        let values: Vec<f64> = salience
            .iter()
            .zip(&valid)
            .filter(|(_, v)| **v)
            .map(|(s, _)| f64::from(*s))
            .collect();
        let threshold = scalar(&self.threshold.val());
        let pathway_weight = 1.0 / (1.0 + (-scalar(&self.pathway_logit.val())).exp());
        let n = values.len();
        if n == 0 {
            return SalienceStats {
                tokens: 0,
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                max: 0.0,
                tagged_ratio: 0.0,
                threshold,
                pathway_weight,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
        SalienceStats {
            tokens: n,
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            tagged_ratio: values.iter().filter(|s| **s > 0.5).count() as f64 / n as f64,
            threshold,
            pathway_weight,
        }
    }
}

/// First element of a tensor as `f64` (0 for an empty tensor).
fn scalar(tensor: &Tensor<1>) -> f64 {
    tensor.to_data().iter::<f64>().next().unwrap_or(0.0)
}
