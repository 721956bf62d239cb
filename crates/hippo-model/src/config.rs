//! `HippoFormerConfig`: every knob of the composed model, with the reference implementation's
//! fields and defaults, read from TOML (unknown keys rejected) and validated.
//!
//! Every field changes behaviour or is rejected by [`HippoFormerConfig::validate`]. One deliberate
//! difference from the reference: `lora_dropout` defaults to 0 and any other value is rejected,
//! because Burn's built-in LoRA composes the weight (`W + ΔW`) and so has no adapter input to drop.

use std::path::Path;

use hippo_gemma::Precision;
use serde::{Deserialize, Serialize};

use crate::error::{HippoError, Result};

/// How the memory query is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// One query per position (causal). The default and the only honest choice.
    #[default]
    PerPosition,
    /// The reference's pooled query: the mean of the whole segment, for every position — a
    /// future-token leak. Present only so the causality audit can show the leak; evaluation
    /// refuses it unless forced.
    SequenceMean,
}

/// Where token importance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SalienceMode {
    /// The learned salience gate.
    #[default]
    Learned,
    /// No gate: every real token gets salience 0.5 (uniform importance).
    Off,
    /// Seeded uniform random salience per token (a control for the gate).
    Random,
    /// No gate: salience is the segment's own surprise at the token each entry would offer,
    /// `1 − p(x_{t+1})` under this segment's prediction, known once the segment has been read
    /// (computed at the write, so the reading is unchanged).
    Surprise,
}

/// What the hidden-space fusion path reads from memory (the probability path always reads
/// the stored next tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemoryValue {
    /// The embedding of the token that followed each stored state, `E[x_{i+1}]`: what actually
    /// came next, known once the segment was read.
    #[default]
    NextToken,
    /// The stored hidden state itself, `h_i` (the reference's value: the model's own guess at
    /// `x_{i+1}`, wrong exactly for the rare tokens worth remembering).
    Hidden,
}

/// Where retrieved memory enters the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FusionSpace {
    /// `p_t = (1 − λ_t)·p_LM,t + λ_t·p_mem,t`, with `p_mem` the replay weights summed per stored
    /// next token and `λ_t` from a small gate (0 at init): a neural cache that can copy.
    #[default]
    Probability,
    /// The output fusion adds the retrieved value to the hidden state before the LM head.
    Hidden,
    /// Both: the hidden path first, then the probability mixture over its LM distribution.
    Both,
}

impl FusionSpace {
    /// Whether the hidden-space path runs.
    pub fn hidden(self) -> bool {
        matches!(self, Self::Hidden | Self::Both)
    }

    /// Whether the probability-space mixture runs.
    pub fn probability(self) -> bool {
        matches!(self, Self::Probability | Self::Both)
    }
}

/// Which layers of the base model read the memory's stored attention keys and values (the
/// attention path: memory as extra context, as in Memorizing Transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAttention {
    /// None: memory enters only through the fusion spaces.
    Off,
    /// The full-attention (global) layers: each entry stores their keys and values.
    Global,
    /// Every layer; a sliding layer reads only entries inside its window.
    #[default]
    All,
}

pub use hippo_memory::Scoring as MemoryScoring;

/// What the salience gate's usefulness loss teaches it to keep (`HippoFormer::loss_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UsefulnessTarget {
    /// `σ(NLL_t − mean NLL)`: how much worse than average the model predicts the token an entry
    /// written at `t` would offer. Measured as a fixed salience (`salience = "surprise"`), this
    /// ranks below recency (README, "Salience").
    #[default]
    Surprise,
    /// That, only where the offered token recurs as a target within `usefulness_horizon`
    /// document tokens after the segment (hippo-data's training-only `recurs_in` label), and 0
    /// elsewhere: keep what is both hard now and asked for again later.
    Recurrence,
}

/// Upper bound of `buffer_size` and `n_anchors` (slots and anchors per stream).
pub const MAX_BUFFER_SIZE: usize = 1 << 20;
/// Upper bound of the other sizes (`max_replay_rounds`, `lora_r`, head counts, smoothing width).
pub const MAX_SMALL: usize = 4096;

/// The composed model's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HippoFormerConfig {
    /// Base model: a checkpoint dir, a `.gguf` file or a HF repo id ("default" = the Gemma-3-270M
    /// fetched by `cargo xtask assets`).
    pub base_model: String,
    /// Freeze the base model's own weights.
    pub freeze_base: bool,
    /// Attach LoRA adapters to the base model.
    pub use_lora: bool,
    /// LoRA rank.
    pub lora_r: usize,
    /// LoRA alpha (updates scaled by alpha / r).
    pub lora_alpha: f64,
    /// LoRA dropout: must be 0 (see module docs).
    pub lora_dropout: f64,
    /// Projections to adapt.
    pub lora_targets: Vec<String>,
    /// Heads of the salience gate's causal attention.
    pub salience_n_heads: usize,
    /// Width of the salience gate's causal smoothing.
    pub salience_min_duration: usize,
    /// Initial tagging threshold.
    pub salience_threshold_init: f64,
    /// Dropout inside the salience gate (training only).
    pub salience_dropout: f64,
    /// Importance of an untagged and of a fully tagged token.
    pub importance_range: [f64; 2],
    /// Memory slots per stream.
    pub buffer_size: usize,
    /// Priority decay per segment of age, and replay-round weight decay.
    pub decay_rate: f64,
    /// Replay rounds.
    pub max_replay_rounds: usize,
    /// Write and replay eligibility threshold on (effective) priority.
    pub priority_threshold: f64,
    /// Replay softmax temperature.
    pub soft_topk_temperature: f64,
    /// Drift anchors.
    pub n_anchors: usize,
    /// Drift above which a token is corrected.
    pub drift_threshold: f64,
    /// Momentum of the drift calibrator's running statistics.
    pub drift_momentum: f64,
    /// Strength of the drift correction.
    pub drift_correction_strength: f64,
    /// Correct every token, not only drifted ones.
    pub drift_always_correct: bool,
    /// Heads of the output fusion's attention over retrieved memory.
    pub fusion_n_heads: usize,
    /// Dropout in the output fusion (training only).
    pub fusion_dropout: f64,
    /// Weight of the LM cross-entropy.
    pub lm_weight: f64,
    /// Weight of the salience-weighted LM loss.
    pub salience_weighted_weight: f64,
    /// Weight of the binary-entropy sparsity loss on salience.
    pub sparsity_weight: f64,
    /// Weight of the memory-utilisation loss `(mean salience − target)²`.
    pub memory_util_weight: f64,
    /// Target mean salience of the utilisation loss.
    pub target_salience: f64,
    /// Weight of the drift regulariser `‖A − I‖² + ‖b‖²`.
    pub drift_reg_weight: f64,
    /// How the memory query is formed.
    pub query_mode: QueryMode,
    /// Where importance comes from (ablations `off`, `random`).
    pub salience: SalienceMode,
    /// Read from and write to memory (`false`: the memory-off ablation).
    pub memory: bool,
    /// Apply the drift calibrator (`false`: the drift-off ablation).
    pub drift: bool,
    /// Use the gated fusions (`false`, an ablation: the hidden path adds retrieved memory
    /// through its scalar opening only, and the probability path's `λ_t` is its opening times
    /// ½ — the gate's value at init — at every position, without the per-position gate).
    pub fusion: bool,
    /// What the hidden-space path reads from memory.
    pub memory_value: MemoryValue,
    /// Where memory enters the prediction.
    pub fusion_space: FusionSpace,
    /// Which base layers also attend to the stored keys and values of memory's entries (each
    /// entry then stores them; see [`MemoryAttention`]). An entry's weight `g_l` in layer `l`'s
    /// softmax is a parameter ([`crate::HippoFormer::attention_weight`]), 0 at init (the path
    /// closed, exactly the base) and set by `cargo xtask calibrate`.
    pub memory_attention: MemoryAttention,
    /// How memory queries are compared with stored keys (`cosine`: query and key projections
    /// at the identity, so retrieval works before training).
    pub memory_scoring: MemoryScoring,
    /// Initial score scale `θ` of retrieval (an inverse temperature on the similarity; learned,
    /// and set by `cargo xtask calibrate`).
    pub memory_score_scale: f64,
    /// Recent positions the buffer never evicts for older entries, whatever their priorities
    /// (0: off, priorities alone decide). A sliding-window layer of the base reads only the
    /// entries inside its window (Gemma-3-270M: 512), so protecting that many keeps what those
    /// layers can read, and salience then decides only among older entries. Default 512: on
    /// the 11 SOTU test addresses at buffer 1,024 it lowered the NLL of every address (mean
    /// −0.0061 nats/token with learned salience; README, "Salience").
    pub memory_protect_recent: usize,
    /// Weight of the salience gate's usefulness loss: binary cross-entropy of salience against
    /// `σ(NLL_t − mean NLL)`, how much worse than average the model predicts the token that
    /// follows position `t` — the token an entry written at `t` would offer later (see
    /// `HippoFormer::loss`).
    pub usefulness_weight: f64,
    /// What that loss's target is: `"surprise"` or `"recurrence"` (see [`UsefulnessTarget`]).
    pub usefulness_target: UsefulnessTarget,
    /// With `usefulness_target = "recurrence"`: how many document tokens after a segment a
    /// recurrence counts (≥ 1).
    pub usefulness_horizon: usize,
    /// Seed of the module initialisation and of random salience.
    pub seed: u64,
    /// Dtype of the base model's matmuls: `f32`, or `bf16` (mixed precision: matmuls in bf16,
    /// the residual stream, norms, the HippoFormer modules, the loss, the parameters and the
    /// optimizer state in f32; see `hippo_gemma::precision`). A device without bf16 is an error.
    pub precision: Precision,
}

impl Default for HippoFormerConfig {
    fn default() -> Self {
        Self {
            base_model: "default".into(),
            freeze_base: true,
            use_lora: true,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.0,
            lora_targets: vec!["q_proj".into(), "v_proj".into()],
            salience_n_heads: 4,
            salience_min_duration: 2,
            salience_threshold_init: 0.0,
            salience_dropout: 0.1,
            importance_range: [1.0, 5.0],
            buffer_size: 2048,
            decay_rate: 0.98,
            max_replay_rounds: 10,
            priority_threshold: 1.0,
            soft_topk_temperature: 1.0,
            n_anchors: 64,
            drift_threshold: 0.3,
            drift_momentum: 0.99,
            drift_correction_strength: 1.0,
            drift_always_correct: false,
            fusion_n_heads: 8,
            fusion_dropout: 0.1,
            lm_weight: 1.0,
            salience_weighted_weight: 0.5,
            sparsity_weight: 0.1,
            memory_util_weight: 0.01,
            target_salience: 0.2,
            drift_reg_weight: 0.001,
            query_mode: QueryMode::PerPosition,
            salience: SalienceMode::Learned,
            memory: true,
            drift: true,
            fusion: true,
            memory_value: MemoryValue::NextToken,
            fusion_space: FusionSpace::Probability,
            memory_attention: MemoryAttention::All,
            memory_scoring: MemoryScoring::Cosine,
            memory_score_scale: 40.0,
            memory_protect_recent: 512,
            usefulness_weight: 1.0,
            usefulness_target: UsefulnessTarget::Surprise,
            usefulness_horizon: 2048,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

impl HippoFormerConfig {
    /// Reads a TOML file (unknown keys are an error naming the key).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| HippoError::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The config of a run: the TOML file `path` names ([`Self::from_toml_file`]), else the
    /// default.
    pub fn from_toml_file_or_default(path: Option<&Path>) -> Result<Self> {
        path.map_or_else(|| Ok(Self::default()), Self::from_toml_file)
    }

    /// This config with the top-level keys of the TOML text `overlay` replacing its own (an
    /// ablation variant is an overlay on the full config: keys it does not set keep this
    /// config's values, not the defaults). The result is parsed and checked like a file;
    /// `origin` names the overlay in errors (an unknown key is one).
    pub fn with_overlay(&self, overlay: &str, origin: &str) -> Result<Self> {
        let bad = |message: String| HippoError::Config {
            origin: origin.to_string(),
            message,
        };
        let mut merged: toml::Table = toml::from_str(&self.to_toml())
            .map_err(|e| bad(format!("re-reading the config to overlay: {e}")))?;
        let overlay: toml::Table = toml::from_str(overlay).map_err(|e| bad(e.to_string()))?;
        merged.extend(overlay);
        let text = toml::to_string(&merged).map_err(|e| bad(e.to_string()))?;
        Self::from_toml_str(&text, origin)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| HippoError::Config {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|e| match e {
            HippoError::Config { message, .. } => HippoError::Config {
                origin: origin.to_string(),
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field against the constraints of the modules it configures.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(HippoError::Config {
                origin: "config".into(),
                message: m,
            })
        };
        let unit = |x: f64| (0.0..1.0).contains(&x);
        if self.lora_dropout != 0.0 {
            return bad(format!(
                "lora_dropout = {} is not supported: Burn's LoRA merges the update into the weight, \
                 so there is no adapter input to drop; set it to 0",
                self.lora_dropout
            ));
        }
        if self.use_lora && !self.freeze_base {
            return bad("use_lora = true needs freeze_base = true (LoRA trains adapters over a frozen base); \
                        set use_lora = false to fine-tune the whole base".into());
        }
        if self.use_lora {
            let s = hippo_gemma::lora::LoraSettings {
                rank: self.lora_r,
                alpha: self.lora_alpha,
                targets: self.lora_targets.clone(),
            };
            if let Err(e) = s.validate() {
                return bad(e.to_string());
            }
        }
        let [lo, hi] = self.importance_range;
        if lo.is_nan() || hi.is_nan() || lo >= hi {
            return bad(format!("importance_range [{lo}, {hi}] needs lo < hi"));
        }
        if self.buffer_size == 0 {
            return bad("buffer_size must be > 0".into());
        }
        // Sizes that allocate: bounded before anything is built from them, so a malformed or
        // hostile config is an error, not an out-of-memory abort.
        for (name, v, max) in [
            ("buffer_size", self.buffer_size, MAX_BUFFER_SIZE),
            ("max_replay_rounds", self.max_replay_rounds, MAX_SMALL),
            ("lora_r", self.lora_r, MAX_SMALL),
            ("n_anchors", self.n_anchors, MAX_BUFFER_SIZE),
            (
                "salience_min_duration",
                self.salience_min_duration,
                MAX_SMALL,
            ),
            ("salience_n_heads", self.salience_n_heads, MAX_SMALL),
            ("fusion_n_heads", self.fusion_n_heads, MAX_SMALL),
        ] {
            if v > max {
                return bad(format!("{name} = {v} exceeds the limit {max}"));
            }
        }
        if !(self.decay_rate > 0.0 && self.decay_rate < 1.0) {
            return bad(format!("decay_rate {} must lie in (0, 1)", self.decay_rate));
        }
        if self.max_replay_rounds == 0 {
            return bad("max_replay_rounds must be ≥ 1".into());
        }
        if self.priority_threshold < 0.0 || self.soft_topk_temperature <= 0.0 {
            return bad("priority_threshold must be ≥ 0 and soft_topk_temperature > 0".into());
        }
        if self.priority_threshold >= hi {
            return bad(format!(
                "priority_threshold {} ≥ the top of importance_range {hi}: no token could ever be written",
                self.priority_threshold
            ));
        }
        if self.salience_n_heads == 0 || self.fusion_n_heads == 0 || self.salience_min_duration == 0
        {
            return bad(
                "salience_n_heads, fusion_n_heads and salience_min_duration must be ≥ 1".into(),
            );
        }
        if self.n_anchors == 0 || !unit(self.drift_momentum) || self.drift_threshold < 0.0 {
            return bad("n_anchors ≥ 1, drift_momentum in [0, 1), drift_threshold ≥ 0".into());
        }
        if !unit(self.salience_dropout) || !unit(self.fusion_dropout) {
            return bad("dropouts must lie in [0, 1)".into());
        }
        for (name, w) in [
            ("lm_weight", self.lm_weight),
            ("salience_weighted_weight", self.salience_weighted_weight),
            ("sparsity_weight", self.sparsity_weight),
            ("memory_util_weight", self.memory_util_weight),
            ("drift_reg_weight", self.drift_reg_weight),
            ("drift_correction_strength", self.drift_correction_strength),
            ("usefulness_weight", self.usefulness_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(format!("{name} = {w} must be finite and ≥ 0"));
            }
        }
        if self.usefulness_horizon == 0 {
            return bad("usefulness_horizon must be ≥ 1 (document tokens after a segment)".into());
        }
        if !(0.0..=1.0).contains(&self.target_salience) {
            return bad("target_salience must lie in [0, 1]".into());
        }
        if !(self.memory_score_scale.is_finite() && self.memory_score_scale > 0.0) {
            return bad(format!(
                "memory_score_scale = {} must be finite and > 0",
                self.memory_score_scale
            ));
        }
        if self.memory_value == MemoryValue::Hidden && !self.fusion_space.hidden() {
            return bad(
                "memory_value = \"hidden\" chooses what the hidden-space fusion reads, and \
                 fusion_space = \"probability\" has none (the probability path always reads the \
                 stored next tokens); use fusion_space = \"hidden\" or \"both\""
                    .into(),
            );
        }
        Ok(())
    }

    /// Checks that `device` can compute in [`precision`](Self::precision) (a config error naming
    /// the device otherwise).
    pub fn validate_for_device(&self, device: &burn::tensor::Device) -> Result<()> {
        self.precision
            .check_device(device)
            .map_err(|e| HippoError::Config {
                origin: "config".into(),
                message: e.to_string(),
            })
    }

    /// Checks the width-dependent constraints once the base model's hidden size is known.
    pub fn validate_for_width(&self, hidden: usize) -> Result<()> {
        for (name, h) in [
            ("salience_n_heads", self.salience_n_heads),
            ("fusion_n_heads", self.fusion_n_heads),
        ] {
            if !hidden.is_multiple_of(h) {
                return Err(HippoError::Config {
                    origin: "config".into(),
                    message: format!(
                        "{name} = {h} does not divide the base model's hidden size {hidden}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// This config with each ablation applied, by name: salience off, random salience, surprise
    /// salience, memory off, drift off, fusion off, each fusion space, hidden-state values, the
    /// attention path switched (on where the config has it off, off otherwise). The causality
    /// audit and the tests iterate over these.
    pub fn ablations(&self) -> Vec<(&'static str, Self)> {
        vec![
            (
                "salience_off",
                Self {
                    salience: SalienceMode::Off,
                    ..self.clone()
                },
            ),
            (
                "salience_random",
                Self {
                    salience: SalienceMode::Random,
                    ..self.clone()
                },
            ),
            (
                "salience_surprise",
                Self {
                    salience: SalienceMode::Surprise,
                    ..self.clone()
                },
            ),
            (
                "memory_off",
                Self {
                    memory: false,
                    ..self.clone()
                },
            ),
            (
                "drift_off",
                Self {
                    drift: false,
                    ..self.clone()
                },
            ),
            (
                "fusion_off",
                Self {
                    fusion: false,
                    ..self.clone()
                },
            ),
            (
                "fusion_space_hidden",
                Self {
                    fusion_space: FusionSpace::Hidden,
                    ..self.clone()
                },
            ),
            (
                "fusion_space_both",
                Self {
                    fusion_space: FusionSpace::Both,
                    ..self.clone()
                },
            ),
            (
                "memory_value_hidden",
                Self {
                    fusion_space: if self.fusion_space.hidden() {
                        self.fusion_space
                    } else {
                        FusionSpace::Both
                    },
                    memory_value: MemoryValue::Hidden,
                    ..self.clone()
                },
            ),
            match self.memory_attention {
                MemoryAttention::Off => (
                    "memory_attention_all",
                    Self {
                        memory_attention: MemoryAttention::All,
                        ..self.clone()
                    },
                ),
                _ => (
                    "memory_attention_off",
                    Self {
                        memory_attention: MemoryAttention::Off,
                        ..self.clone()
                    },
                ),
            },
            (
                "memory_attention_global",
                Self {
                    memory_attention: MemoryAttention::Global,
                    ..self.clone()
                },
            ),
        ]
    }

    /// Whether this config can leak future tokens into earlier logits.
    pub fn is_leaky(&self) -> bool {
        self.memory && self.query_mode == QueryMode::SequenceMean
    }
}
