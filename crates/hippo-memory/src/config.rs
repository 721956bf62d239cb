//! Configuration of the priority buffer and the crate's error type.

use burn::config::Config;
use burn::module::Param;
use burn::nn::{Initializer, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::buffer::PriorityBuffer;

/// Errors raised by configuration validation, shape checks and [`crate::soft_top_k`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MemoryError {
    /// The buffer needs at least one slot.
    #[error("capacity must be at least 1, got 0")]
    ZeroCapacity,
    /// The state width must be positive.
    #[error("dim must be at least 1, got 0")]
    ZeroDim,
    /// Decay must lie strictly inside (0, 1).
    #[error("decay_rate must lie strictly between 0 and 1, got {0}")]
    DecayRate(f64),
    /// Replay needs at least one round.
    #[error("max_replay_rounds must be at least 1, got 0")]
    ZeroRounds,
    /// The threshold must be finite and non-negative (stored priorities are then positive).
    #[error("priority_threshold must be finite and >= 0, got {0}")]
    PriorityThreshold(f64),
    /// A softmax / sigmoid temperature must be finite and positive.
    #[error("temperature must be finite and > 0, got {0}")]
    Temperature(f64),
    /// The retrieval score scale `θ` must be finite and positive.
    #[error("score_scale must be finite and > 0, got {0}")]
    ScoreScale(f64),
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
    /// `soft_top_k` cannot select more elements than there are.
    #[error("soft_top_k: k = {k} exceeds the {n} scores along the last dimension")]
    TopKTooLarge {
        /// Requested number of elements.
        k: usize,
        /// Size of the last dimension.
        n: usize,
    },
}

/// How a query is compared with a stored key at replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// `θ·(W_q q)·(W_k x)/√D` with `W_q`, `W_k` at Burn's default (random) initialisation: the
    /// reference implementation's attention score.
    ScaledDot,
    /// `θ·cos(W_q q, W_k x)` with `W_q = W_k = I` (zero bias) at initialisation, so retrieval
    /// works before any training: a stored state similar to the query gets the weight, as in the
    /// neural cache (Grave et al. 2017). Training may move the projections away from `I`.
    Cosine,
}

/// Configuration of a [`PriorityBuffer`].
#[derive(Config, Debug)]
pub struct PriorityBufferConfig {
    /// Width `D` of the stored hidden states (and of the projections).
    pub dim: usize,
    /// Slots `M` per stream.
    #[config(default = 2048)]
    pub capacity: usize,
    /// Decay `d ∈ (0, 1)`: effective priority `P·d^age`, and round weights `d^r`.
    #[config(default = 0.9)]
    pub decay_rate: f64,
    /// Replay rounds `R ≥ 1`.
    #[config(default = 10)]
    pub max_replay_rounds: usize,
    /// Threshold `θ ≥ 0`: only tokens with importance `> θ` are written, and only entries with
    /// effective priority `> θ` are replayed.
    #[config(default = 1.0)]
    pub priority_threshold: f64,
    /// Replay softmax temperature `τ > 0`.
    #[config(default = 1.0)]
    pub temperature: f64,
    /// How queries are compared with keys.
    #[config(default = "Scoring::ScaledDot")]
    pub scoring: Scoring,
    /// Initial score scale `θ > 0` (an inverse temperature on the similarity, learned as
    /// `ln θ`): 1 keeps the reference's `q·k/√D`; a cosine score needs a large one (≈ 10–40).
    #[config(default = 1.0)]
    pub score_scale: f64,
    /// Recent positions protected from eviction: an entry fewer than this many positions before
    /// the next segment's first token outranks every older one at a write, whatever their
    /// priorities (among themselves, each group is ranked by effective priority as usual).
    /// A base layer with a sliding window of `W` reads only entries inside its window, so
    /// `W` here keeps those for it; 0 turns protection off.
    #[config(default = 0)]
    pub protect_recent: usize,
}

impl PriorityBufferConfig {
    /// Checks every field; returns the first problem found.
    pub fn validate(&self) -> Result<(), MemoryError> {
        if self.dim == 0 {
            return Err(MemoryError::ZeroDim);
        }
        if self.capacity == 0 {
            return Err(MemoryError::ZeroCapacity);
        }
        if !(self.decay_rate > 0.0 && self.decay_rate < 1.0) {
            return Err(MemoryError::DecayRate(self.decay_rate));
        }
        if self.max_replay_rounds == 0 {
            return Err(MemoryError::ZeroRounds);
        }
        if !(self.priority_threshold.is_finite() && self.priority_threshold >= 0.0) {
            return Err(MemoryError::PriorityThreshold(self.priority_threshold));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(MemoryError::Temperature(self.temperature));
        }
        if !(self.score_scale.is_finite() && self.score_scale > 0.0) {
            return Err(MemoryError::ScoreScale(self.score_scale));
        }
        Ok(())
    }

    /// Validates the configuration and builds the buffer's projections on `device`.
    pub fn try_init(&self, device: &Device) -> Result<PriorityBuffer, MemoryError> {
        self.validate()?;
        let d = self.dim;
        let similarity = |device: &Device| match self.scoring {
            Scoring::ScaledDot => LinearConfig::new(d, d).init(device),
            Scoring::Cosine => {
                let mut l = LinearConfig::new(d, d)
                    .with_initializer(Initializer::Zeros)
                    .init(device);
                l.weight = Param::from_tensor(Tensor::eye(d, device));
                l
            }
        };
        Ok(PriorityBuffer {
            key_proj: similarity(device),
            value_proj: LinearConfig::new(d, d).init(device),
            query_proj: similarity(device),
            consolidation_proj: LinearConfig::new(d, d).with_bias(false).init(device),
            dim: d,
            capacity: self.capacity,
            decay_rate: self.decay_rate,
            max_replay_rounds: self.max_replay_rounds,
            priority_threshold: self.priority_threshold,
            temperature: self.temperature,
            scoring: self.scoring,
            protect_recent: self.protect_recent,
            log_score_scale: Param::from_tensor(Tensor::from_floats(
                [self.score_scale.ln() as f32],
                device,
            )),
        })
    }

    /// Builds the buffer on `device`.
    ///
    /// # Panics
    ///
    /// If [`validate`](Self::validate) fails; use [`try_init`](Self::try_init) to get the error.
    pub fn init(&self, device: &Device) -> PriorityBuffer {
        match self.try_init(device) {
            Ok(buffer) => buffer,
            Err(err) => panic!("invalid PriorityBufferConfig: {err}"),
        }
    }
}
