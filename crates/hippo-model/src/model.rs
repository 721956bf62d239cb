//! The composed HippoFormer: base hidden states → salience → drift → memory replay → fusion →
//! tied LM head, over one segment of a batch of streams.
//!
//! The forward ([`HippoFormer::forward`]) only *reads* the memory state; [`HippoFormer::commit`]
//! then writes the segment's salient tokens and ages the buffer. A stream's buffer therefore
//! holds only earlier segments when a segment is read, and an evaluation that does not commit
//! changes nothing.

use burn::module::{Module, Param};
use burn::tensor::{Bool, DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};
use hippo_data::seed::splitmix64;
use hippo_drift::{DriftCalibrator, DriftCalibratorConfig, DriftOutput};
use hippo_gemma::lora::{self, LoraSettings};
use hippo_gemma::{Gemma, KvCache, LayerKeysValues, LayerMemory, LayerType};
use hippo_memory::{
    MemoryState, NO_NEXT_TOKEN, PriorityBuffer, PriorityBufferConfig, Retrieval, WriteOutcome,
};
use hippo_salience::{SalienceGate, SalienceGateConfig, SalienceOutput};

use crate::config::{
    HippoFormerConfig, MemoryAttention, MemoryValue, QueryMode, SalienceMode, UsefulnessTarget,
};
use crate::error::{HippoError, Result};
use crate::fusion::{OutputFusion, ProbabilityMix};
use crate::stream::SegmentTensors;

/// The composed model.
#[derive(Module, Debug)]
pub struct HippoFormer {
    /// The base model (frozen; LoRA adapters if configured).
    pub base: Gemma,
    /// Salience gate.
    pub gate: SalienceGate,
    /// Drift calibrator.
    pub drift: DriftCalibrator,
    /// Priority memory (read-time projections; the state lives outside).
    pub memory: PriorityBuffer,
    /// Output fusion (the hidden-space path).
    pub fusion: OutputFusion,
    /// The probability-space mixture's gate and opening.
    pub mix: ProbabilityMix,
    /// The attention path's weight `g_l ≥ 0` of a memory entry in layer `l`'s softmax (its
    /// score gets `+ ln g_l`), one per base layer `[L]`, read by the layers
    /// [`HippoFormerConfig::memory_attention`] names. 0 at init: the path is closed (skipped,
    /// so exactly the base); 1 reads an entry as if it were in context.
    pub attention_weight: Param<Tensor<1>>,
    /// The configuration.
    #[module(skip)]
    pub config: HippoFormerConfig,
}

/// Salience of one segment, whatever its source.
#[derive(Debug, Clone)]
pub struct Salience {
    /// `s_t ∈ [0, 1]` `[B, T]` (0 at padding).
    pub salience: Tensor<2>,
    /// `lo + s_t (hi − lo)` `[B, T]` (`lo` at padding).
    pub importance: Tensor<2>,
    /// The gate's full output when the learned gate ran.
    pub gate: Option<SalienceOutput>,
}

/// Which positions of a segment go through the (large) LM head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitPositions {
    /// Every position: logits `[B, T, V]`.
    All,
    /// Only the last position: logits `[B, 1, V]` (what sampling the next token needs).
    Last,
}

/// The probability-space mixture of one segment, kept sparse: what [`SegmentOutput::logits`]
/// and [`HippoFormer::target_log_probs`] need to form `(1 − λ_t)·p_LM + λ_t·p_mem` without
/// building a `[B, T, V]` tensor unless asked to.
#[derive(Debug, Clone)]
pub struct Mixture {
    /// The mixture weight `λ_t` `[B, T]` (0 where no entry was eligible).
    pub lambda: Tensor<2>,
    /// The replay weights over the entries with a next token, `ŵ` `[B, T, M]`
    /// ([`Retrieval::next_token_weights`]): `p_mem(w) = Σ_m ŵ_{t,m}·1[y_m = w]`.
    pub weights: Tensor<3>,
    /// The stored next tokens `y_m` `[B, M]` ([`NO_NEXT_TOKEN`] where a slot has none).
    pub next_tokens: Tensor<2, Int>,
    /// `ln Σ_w e^{lm_logits}` `[B, T]`: the LM head's log-normaliser.
    pub lm_lse: Tensor<2>,
}

/// Everything one segment's forward produced.
#[derive(Debug, Clone)]
pub struct SegmentOutput {
    /// The LM head's logits `[B, T, V]` (`[B, 1, V]` with [`LogitPositions::Last`]), before any
    /// probability mixture: the prediction itself without the probability path (see
    /// [`SegmentOutput::logits`]).
    pub lm_logits: Tensor<3>,
    /// The probability-space mixture, where that path ran.
    pub mixture: Option<Mixture>,
    /// The segment's input ids `[B, T]` (the next tokens [`HippoFormer::commit`] stores).
    pub ids: Tensor<2, Int>,
    /// Base final hidden states `[B, T, D]`.
    pub base_hidden: Tensor<3>,
    /// Drift-corrected hidden states `[B, T, D]` (what memory stores and fusion starts from).
    pub hidden: Tensor<3>,
    /// Hidden states fed to the LM head `[B, T, D]`.
    pub fused: Tensor<3>,
    /// Salience and importance.
    pub salience: Salience,
    /// Drift output, when the calibrator ran.
    pub drift: Option<DriftOutput>,
    /// Real tokens `[B, T]`.
    pub valid: Tensor<2, Bool>,
    /// With the attention path: the reading layers' keys (before RoPE) and values at every
    /// position `[B, T, P]`, what [`HippoFormer::commit`] stores with each entry.
    pub attention_payload: Option<Tensor<3>>,
    /// Whether the base read memory's keys and values (an open attention path and a stored
    /// entry): then `base_hidden` is not the memory-off base's, and
    /// [`HippoFormer::memory_off_logits`] runs a base pass of its own.
    pub attention_read: bool,
}

/// What [`HippoFormer::base_states`] returns.
#[derive(Debug, Clone)]
pub struct BaseStates {
    /// Final hidden states `[B, T, D]`.
    pub hidden: Tensor<3>,
    /// With the attention path: the reading layers' keys (before RoPE) and values `[B, T, P]`.
    pub payload: Option<Tensor<3>>,
    /// Whether the base read memory's keys and values (an open layer and a stored entry).
    pub read_memory: bool,
}

/// The loss terms of one segment, each a scalar `[1]`, and their weighted sum.
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// `Σ wᵢ · termᵢ`.
    pub total: Tensor<1>,
    /// Token-mean cross-entropy over targets ≠ −100.
    pub lm: Tensor<1>,
    /// Cross-entropy weighted by importance normalised to mean 1 over the scored tokens.
    pub salience_weighted: Tensor<1>,
    /// Mean binary entropy of salience over real tokens.
    pub sparsity: Tensor<1>,
    /// `(mean salience − target)²`.
    pub memory_util: Tensor<1>,
    /// `‖A − I‖² + ‖b‖²` (0 when drift is off).
    pub drift_reg: Tensor<1>,
    /// Binary cross-entropy of salience against the usefulness target `σ(NLL_t − mean NLL)`
    /// (detached) over the scored tokens.
    pub usefulness: Tensor<1>,
    /// Number of scored tokens.
    pub tokens: usize,
}

impl HippoFormer {
    /// Composes a HippoFormer over `base`. The new modules are seeded with `config.seed`; with
    /// fresh modules the logits equal the base model's exactly.
    pub fn new(base: Gemma, config: HippoFormerConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = base.config().hidden_size;
        config.validate_for_width(d)?;
        config.validate_for_device(device)?;
        let base = if config.use_lora {
            lora::apply(
                base,
                &LoraSettings {
                    rank: config.lora_r,
                    alpha: config.lora_alpha,
                    targets: config.lora_targets.clone(),
                },
            )?
        } else if config.freeze_base {
            base.freeze()
        } else {
            base
        };
        // After freezing: the frozen matmul weights are stored in the matmul dtype.
        let base = base.with_precision(config.precision)?;
        device.seed(config.seed);
        let gate = SalienceGateConfig::new(d)
            .with_n_heads(config.salience_n_heads)
            .with_min_duration(config.salience_min_duration)
            .with_threshold_init(config.salience_threshold_init)
            .with_importance_range(config.importance_range)
            .with_dropout(config.salience_dropout)
            .try_init(device)?;
        let drift = DriftCalibratorConfig::new(d)
            .with_n_anchors(config.n_anchors)
            .with_drift_threshold(config.drift_threshold)
            .with_momentum(config.drift_momentum)
            .with_correction_strength(config.drift_correction_strength)
            .with_always_correct(config.drift_always_correct)
            .try_init(device)?;
        let memory = PriorityBufferConfig::new(d)
            .with_capacity(config.buffer_size)
            .with_decay_rate(config.decay_rate)
            .with_max_replay_rounds(config.max_replay_rounds)
            .with_priority_threshold(config.priority_threshold)
            .with_temperature(config.soft_topk_temperature)
            .with_scoring(config.memory_scoring)
            .with_score_scale(config.memory_score_scale)
            .with_protect_recent(config.memory_protect_recent)
            .try_init(device)?;
        let fusion = OutputFusion::new(d, config.fusion_n_heads, config.fusion_dropout, device);
        let mix = ProbabilityMix::new(d, device);
        let attention_weight =
            Param::from_tensor(Tensor::zeros([base.config().num_layers], device));
        let model = Self {
            base,
            gate,
            drift,
            memory,
            fusion,
            mix,
            attention_weight,
            config,
        };
        tracing::info!("HippoFormer parameters:\n{}", model.parameter_report());
        Ok(model)
    }

    /// A read-only copy for evaluation and generation: off the autodiff device (no dropout, no
    /// running-statistics update) and, with LoRA, the adapters merged into the base weights once
    /// (`W + (α/r)·A·B`), so no forward re-applies them. The logits equal this model's inference
    /// logits up to float rounding of the merge.
    pub fn for_inference(&self) -> Self {
        let m = self.valid();
        if self.config.use_lora {
            Self {
                base: lora::merged(&m.base),
                ..m
            }
        } else {
            m
        }
    }

    /// How this model's streams are cut into segments of `seq_len` inputs: every segment after
    /// the first begins with the base model's BOS (see [`hippo_data::layout`]).
    pub fn segment_layout(&self, seq_len: usize) -> crate::SegmentLayout {
        crate::SegmentLayout::with_bos(seq_len, self.base.config().bos_token_id)
    }

    /// An empty memory state for `batch` streams.
    pub fn empty_state(&self, batch: usize, device: &Device) -> MemoryState {
        self.memory.empty_state(batch, device)
    }

    /// Anchors the drift calibrator on the frozen base's hidden states of a batch (a base pass
    /// of its own, detached), once: a calibrator that has anchors keeps them. Returns whether
    /// the calibrator is anchored now (a batch without a real position leaves it unanchored).
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`; `valid`: `[B, T]`.
    pub fn calibrate_drift(&mut self, ids: Tensor<2, Int>, valid: Tensor<2, Bool>) -> Result<bool> {
        if self.drift.anchor_count() == 0 {
            let h = self.base.hidden_states(ids, None).detach();
            self.drift.calibrate(h, valid)?;
        }
        Ok(self.drift.anchor_count() > 0)
    }

    /// A copy for one data-parallel worker on `device` (this model's own device: a clone).
    /// Its drift calibrator does not update the running statistics: the caller updates them
    /// once, from the whole batch, on the original.
    pub fn replica(&self, device: &Device) -> Self {
        let mut r = if self.drift.b.val().device() == *device {
            self.clone()
        } else {
            self.clone().fork(device)
        };
        r.drift.track_running_stats = false;
        r
    }

    fn salience_of(
        &self,
        hidden: &Tensor<3>,
        ids: &Tensor<2, Int>,
        valid: &Tensor<2, Bool>,
    ) -> Salience {
        let [lo, hi] = self.config.importance_range;
        let device = hidden.device();
        let from_values = |s: Tensor<2>| Salience {
            importance: s.clone().mul_scalar(hi - lo).add_scalar(lo),
            salience: s,
            gate: None,
        };
        match self.config.salience {
            SalienceMode::Learned => {
                let out = self.gate.forward(hidden.clone(), valid.clone());
                Salience {
                    salience: out.salience.clone(),
                    importance: out.importance.clone(),
                    gate: Some(out),
                }
            }
            SalienceMode::Off | SalienceMode::Surprise => {
                from_values(valid.clone().float().mul_scalar(0.5))
            }
            SalienceMode::Random => {
                // u(seed, row, position, token id): deterministic, and a token's value depends on
                // nothing after it.
                let [b, t] = ids.dims();
                let ids_host: Vec<i64> = ids
                    .to_data()
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .unwrap_or_default();
                let u: Vec<f32> = (0..b * t)
                    .map(|i| {
                        let id = ids_host.get(i).copied().unwrap_or(0) as u64;
                        let z = splitmix64(self.config.seed ^ splitmix64((i as u64) << 32 ^ id));
                        ((z >> 40) as f32 + 0.5) / (1u64 << 24) as f32
                    })
                    .collect();
                let s = Tensor::<2>::from_data(TensorData::new(u, [b, t]), &device)
                    .mul(valid.clone().float());
                from_values(s)
            }
        }
    }

    /// Reads a segment. `ids`, `valid`: `[B, T]` (right-padded); `state`: each stream's memory,
    /// holding only earlier segments. Does not modify the state.
    ///
    /// # Shapes
    ///
    /// `V` = vocabulary, `D` = the base model's hidden size, `M` = `buffer_size`.
    ///
    /// * `ids`: `[B, T]`; `valid`: `[B, T]`, `true` for real tokens
    /// * `state`: `B` streams, `states` `[B, M, D]` (an error if it holds another number)
    /// * [`SegmentOutput`]: `lm_logits` `[B, T, V]`; `base_hidden`, `hidden`, `fused`
    ///   `[B, T, D]`; `ids`, `valid` and the salience fields `[B, T]`; drift `corrected`
    ///   `[B, T, D]` and `drift` `[B, T]`; the [`Mixture`]'s `lambda` and `lm_lse` `[B, T]`,
    ///   `weights` `[B, T, M]`, `next_tokens` `[B, M]`
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        valid: Tensor<2, Bool>,
        state: &MemoryState,
    ) -> Result<SegmentOutput> {
        self.check_segment(&ids, &valid, state)?;
        let base = self.base_states(ids.clone(), None, state)?;
        let mut out =
            self.forward_from_base(ids, valid, base.hidden, state, LogitPositions::All)?;
        out.attention_read = base.read_memory;
        out.attention_payload = base.payload;
        Ok(out)
    }

    /// The base model's final hidden states `[B, T, D]` of a segment read with `state`'s
    /// memory: with the attention path on, the reading layers also attend to the stored keys
    /// and values of every eligible entry (see [`HippoFormer::attention_memory`]), and the
    /// payload is this segment's `[B, T, P]` for [`HippoFormer::commit`]. With a `cache`,
    /// `ids` continue the segment the cache holds (positions from its length).
    pub fn base_states(
        &self,
        ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        state: &MemoryState,
    ) -> Result<BaseStates> {
        let layers = attention_layers(&self.base, self.config.memory_attention);
        if !self.config.memory || layers.is_empty() {
            return Ok(BaseStates {
                hidden: self.base.hidden_states(ids, cache),
                payload: None,
                read_memory: false,
            });
        }
        let start = cache.as_ref().map_or(0, |c| c.seq_len());
        let memory = self.attention_memory(state, &layers, start)?;
        let (hidden, read) = self.base.hidden_states_with_memory(ids, cache, &memory);
        let payload = layers
            .iter()
            .flat_map(|&l| {
                let LayerKeysValues { keys, values } = &read[l];
                [keys.clone(), values.clone()]
            })
            .map(|x| {
                let [b, kvh, t, hd] = x.dims();
                x.swap_dims(1, 2).reshape([b, t, kvh * hd])
            })
            .collect::<Vec<_>>();
        Ok(BaseStates {
            hidden,
            payload: Some(Tensor::cat(payload, 2).detach()),
            read_memory: memory.iter().any(Option::is_some),
        })
    }

    /// What each base layer reads from `state` on the attention path, for queries at segment
    /// positions from `first_query` on: for the reading `layers`, the stored keys and values at
    /// their positions, with score bias `ln g_l`, of the entries replay could read too
    /// (occupied, effective priority above the threshold) — and, in a sliding layer, only those
    /// inside the window of the first query (a later query sees less of the past). `None` for
    /// the other layers, for a layer whose `g_l` is 0 (so a closed path is exactly the base) and
    /// for a layer with no such entry. Empty while no entry holds a payload.
    ///
    /// Entries a layer may not read are left out rather than masked, so a sliding layer attends
    /// over at most `window` entries however large the buffer; where streams differ in how many
    /// they read, the shorter rows are padded with bias `−∞`.
    pub fn attention_memory(
        &self,
        state: &MemoryState,
        layers: &[usize],
        first_query: usize,
    ) -> Result<Vec<Option<LayerMemory>>> {
        let Some(payload) = &state.payload else {
            return Ok(Vec::new());
        };
        let weight = &self.attention_weight;
        let c = self.base.config();
        let (kvh, hd) = (c.num_kv_heads, c.head_dim);
        let [b, m, p] = payload.dims();
        let want = attention_payload_width(&self.base, layers.len());
        if p != want {
            return Err(HippoError::InvalidInput(format!(
                "the memory's payload is {p} wide; the attention path over {} layers of \
                 {kvh}×{hd} keys and values needs {want}",
                layers.len(),
            )));
        }
        let host_err = |what: &str, e: burn::tensor::DataError| {
            HippoError::InvalidInput(format!("{what}: {e:?}"))
        };
        let g: Vec<f32> = weight
            .val()
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| host_err("attention weights", e))?;
        let mut out = vec![None; c.num_layers];
        // The reading layers that are open (`g_l > 0`), with their index in the payload.
        let open: Vec<(usize, usize)> = layers
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, l)| g.get(l).is_some_and(|&g| g > 0.0))
            .collect();
        if open.is_empty() {
            return Ok(out);
        }
        let eligible: Vec<bool> = state
            .effective_priorities(self.config.decay_rate)
            .greater_elem(self.config.priority_threshold)
            .bool_and(state.valid.clone())
            .into_data()
            .try_to_vec::<bool>()
            .map_err(|e| host_err("eligible entries", e))?;
        let positions: Vec<f32> = state
            .positions
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| host_err("entry positions", e))?;
        let device = payload.device();
        // The entries of each stream a layer with `window` reads: `[B, K]` indices into the
        // buffer and whether each slot holds one (false: padding), or None when none reads any.
        let select = |window: Option<usize>| -> Option<Selection> {
            let rows: Vec<Vec<i64>> = (0..b)
                .map(|r| {
                    (0..m)
                        .filter(|&i| {
                            let j = r * m + i;
                            eligible[j]
                                && window
                                    .is_none_or(|w| (first_query as f32 - positions[j]) < w as f32)
                        })
                        .map(|i| i as i64)
                        .collect()
                })
                .collect();
            let k = rows.iter().map(Vec::len).max().unwrap_or(0);
            if k == 0 {
                return None;
            }
            let mut idx = Vec::with_capacity(b * k);
            let mut filled = Vec::with_capacity(b * k);
            for row in &rows {
                idx.extend(
                    row.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, k - row.len())),
                );
                filled.extend((0..k).map(|i| i < row.len()));
            }
            Some((
                Tensor::from_data(TensorData::new(idx, [b, k]), &device),
                Tensor::from_data(TensorData::new(filled, [b, k]), &device),
            ))
        };
        let mut selections: Vec<(Option<usize>, Option<Selection>)> = Vec::new();
        let width = kvh * hd;
        for (i, l) in open {
            let window = match c.layer_types[l] {
                LayerType::Sliding => c.sliding_window,
                LayerType::Full => None,
            };
            let chosen = match selections.iter().find(|(w, _)| *w == window) {
                Some((_, chosen)) => chosen.clone(),
                None => {
                    let chosen = select(window);
                    selections.push((window, chosen.clone()));
                    chosen
                }
            };
            let Some((idx, filled)) = chosen else {
                continue;
            };
            let k = idx.dims()[1];
            let rows = |x: Tensor<3>| {
                let p = x.dims()[2];
                x.gather(1, idx.clone().reshape([b, k, 1]).expand([b, k, p]))
            };
            let at = |j: usize| rows(payload.clone().slice_dim(2, j * width..(j + 1) * width));
            let heads = |x: Tensor<3>| x.reshape([b, k, kvh, hd]).swap_dims(1, 2);
            let ln_g = weight
                .val()
                .slice(l..l + 1)
                .clamp_min(1e-12)
                .log()
                .reshape([1, 1])
                .expand([b, k]);
            out[l] = Some(LayerMemory {
                keys: heads(at(2 * i)),
                values: heads(at(2 * i + 1)),
                positions: state.positions.clone().gather(1, idx.clone()),
                bias: ln_g.mask_fill(filled.bool_not(), f32::NEG_INFINITY),
            });
        }
        Ok(out)
    }

    /// This model with the attention path's weight `g` on every layer (the layers
    /// `memory_attention` names read it; 0 closes the path, 1 reads an entry as if it were in
    /// context). Calibration sets it; training refines it from there.
    pub fn with_attention_weight(mut self, g: f32) -> Self {
        let t = self.attention_weight.val();
        let device = t.device();
        let n = t.dims()[0];
        self.attention_weight = Param::from_tensor(Tensor::full([n], g, &device));
        self
    }

    fn check_segment(
        &self,
        ids: &Tensor<2, Int>,
        valid: &Tensor<2, Bool>,
        state: &MemoryState,
    ) -> Result<()> {
        let [b, t] = ids.dims();
        if valid.dims() != [b, t] {
            return Err(HippoError::InvalidInput(format!(
                "valid mask {:?} does not match ids [{b}, {t}]",
                valid.dims()
            )));
        }
        if state.batch_size() != b {
            return Err(HippoError::InvalidInput(format!(
                "memory state holds {} streams, the batch has {b}",
                state.batch_size()
            )));
        }
        Ok(())
    }

    /// [`forward`](Self::forward) over base hidden states the caller already computed
    /// (`self.base.hidden_states(ids)` `[B, T, D]`, e.g. incrementally with a KV cache, as
    /// generation does); `positions` chooses which positions go through the LM head.
    ///
    /// # Shapes
    ///
    /// * `ids`, `valid`: `[B, T]`; `base_hidden`: `[B, T, D]`; `state`: `B` streams
    /// * as [`forward`](Self::forward), except with [`LogitPositions::Last`]: `lm_logits`
    ///   `[B, 1, V]`, the [`Mixture`]'s `lambda` and `lm_lse` `[B, 1]` and `weights` `[B, 1, M]`
    ///   (the hidden states and salience stay `[B, T, …]`)
    pub fn forward_from_base(
        &self,
        ids: Tensor<2, Int>,
        valid: Tensor<2, Bool>,
        base_hidden: Tensor<3>,
        state: &MemoryState,
        positions: LogitPositions,
    ) -> Result<SegmentOutput> {
        self.check_segment(&ids, &valid, state)?;
        let [b, t] = ids.dims();
        let d = self.base.config().hidden_size;
        if base_hidden.dims() != [b, t, d] {
            return Err(HippoError::InvalidInput(format!(
                "base hidden states {:?} do not match ids [{b}, {t}] and width {d}",
                base_hidden.dims()
            )));
        }
        let salience = self.salience_of(&base_hidden, &ids, &valid);
        let (hidden, drift) = if self.config.drift {
            let out = self.drift.forward(base_hidden.clone(), valid.clone())?;
            (out.corrected.clone(), Some(out))
        } else {
            (base_hidden.clone(), None)
        };
        let fs = self.config.fusion_space;
        let mut mixture: Option<(Tensor<3>, Tensor<2>)> = None;
        let fused = if self.config.memory {
            let query = match self.config.query_mode {
                QueryMode::PerPosition => hidden.clone(),
                QueryMode::SequenceMean => {
                    let d = hidden.dims()[2];
                    let w = valid.clone().float().reshape([b, t, 1]);
                    let n = w.clone().sum_dim(1).clamp_min(1.0);
                    let mean = hidden.clone().mul(w).sum_dim(1).div(n);
                    mean.expand([b, t, d])
                }
            };
            let retrieval = self.memory.retrieve(query, state)?;
            let fused = if fs.hidden() {
                let values = match self.config.memory_value {
                    MemoryValue::Hidden => state.states.clone(),
                    MemoryValue::NextToken => self.next_token_embeddings(state),
                };
                let m = self.memory.read(&retrieval, values);
                let present = state
                    .effective_priorities(self.config.decay_rate)
                    .greater_elem(self.config.priority_threshold)
                    .bool_and(state.valid.clone())
                    .float()
                    .sum_dim(1)
                    .greater_elem(0.0)
                    .float()
                    .reshape([b]);
                if self.config.fusion {
                    self.fusion.forward(hidden.clone(), m, present)
                } else {
                    self.fusion.forward_direct(hidden.clone(), m, present)
                }
            } else {
                hidden.clone()
            };
            if fs.probability() {
                let w = retrieval.next_token_weights(state);
                let lambda = self.lambda(&hidden, &retrieval, w.clone());
                mixture = Some((w, lambda));
            }
            fused
        } else {
            hidden.clone()
        };
        let (lm_logits, mixture) = match positions {
            LogitPositions::All => (self.base.lm_head(fused.clone()), mixture),
            LogitPositions::Last if t > 0 => (
                self.base.lm_head(fused.clone().slice_dim(1, t - 1..t)),
                mixture.map(|(w, l)| (w.slice_dim(1, t - 1..t), l.slice_dim(1, t - 1..t))),
            ),
            LogitPositions::Last => {
                return Err(HippoError::InvalidInput(
                    "an empty segment has no last position".into(),
                ));
            }
        };
        let mixture = mixture.map(|(weights, lambda)| Mixture {
            lambda,
            weights,
            next_tokens: state.next_tokens.clone(),
            lm_lse: log_sum_exp(lm_logits.clone()),
        });
        Ok(SegmentOutput {
            lm_logits,
            mixture,
            ids,
            base_hidden,
            hidden,
            fused,
            salience,
            drift,
            valid,
            attention_payload: None,
            attention_read: false,
        })
    }

    /// Writes a read segment's salient tokens into each stream's buffer and ages it by one
    /// segment. With memory off this returns the state unchanged.
    ///
    /// An entry is the drift-corrected state `h_t` of a real position, stored with the token that
    /// followed it, `x_{t+1}` = the segment's input at `t + 1`: only positions whose next token
    /// lies in this (already read) segment are candidates, so the segment's last position and
    /// BOS inputs are never written.
    pub fn commit(
        &self,
        state: MemoryState,
        segment: &SegmentOutput,
    ) -> Result<(MemoryState, Option<WriteOutcome>)> {
        if !self.config.memory {
            return Ok((state, None));
        }
        let (next, writable) = self.next_tokens(&segment.ids, &segment.valid);
        let needs_payload = !attention_layers(&self.base, self.config.memory_attention).is_empty();
        if needs_payload && segment.attention_payload.is_none() {
            return Err(HippoError::InvalidInput(
                "the attention path stores each entry's keys and values, and this segment's \
                 output has none (read it with HippoFormer::forward or base_states)"
                    .into(),
            ));
        }
        let importance = match self.config.salience {
            SalienceMode::Surprise => {
                let [lo, hi] = self.config.importance_range;
                self.surprise(segment, &next)
                    .mul_scalar(hi - lo)
                    .add_scalar(lo)
            }
            _ => segment.salience.importance.clone().detach(),
        };
        let (state, outcome) = self.memory.write_entries(
            state,
            segment.hidden.clone().detach(),
            next,
            segment.attention_payload.clone(),
            importance,
            writable,
        )?;
        Ok((self.memory.age(state), Some(outcome)))
    }

    /// `1 − p(x_{t+1})` `[B, T]` under a read segment's prediction (detached; any value where
    /// there is no next token). Computes the LM head over every position if `segment` holds
    /// only the last one.
    fn surprise(&self, segment: &SegmentOutput, next: &Tensor<2, Int>) -> Tensor<2> {
        let y = next.clone().clamp_min(0);
        let lp = if segment.lm_logits.dims()[1] == y.dims()[1] {
            Self::target_log_probs(segment, y)
        } else {
            log_probs_at(self.base.lm_head(segment.fused.clone().detach()), y)
        };
        lp.detach().exp().neg().add_scalar(1.0).clamp(0.0, 1.0)
    }

    /// The next token of every position of a segment (`ids[t + 1]`, [`NO_NEXT_TOKEN`] at the
    /// last position) and the positions that may be written: real, not a BOS input, and followed
    /// by a real token of the same segment. `[B, T]` each.
    pub fn next_tokens(
        &self,
        ids: &Tensor<2, Int>,
        valid: &Tensor<2, Bool>,
    ) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let [b, t] = ids.dims();
        let device = ids.device();
        if t == 0 {
            return (ids.clone(), valid.clone());
        }
        let tail_i = Tensor::<2, Int>::full([b, 1], NO_NEXT_TOKEN, &device);
        let tail_b = Tensor::<2, Bool>::full([b, 1], false, &device);
        let next = Tensor::cat(vec![ids.clone().slice_dim(1, 1..t), tail_i], 1);
        let next_valid = Tensor::cat(vec![valid.clone().slice_dim(1, 1..t), tail_b], 1);
        let bos = self.base.config().bos_token_id as i64;
        let writable = valid
            .clone()
            .bool_and(next_valid)
            .bool_and(ids.clone().not_equal_elem(bos));
        (next, writable)
    }

    /// The (unscaled) tied-embedding rows of the stored next tokens `[B, M, D]` (0 where a slot
    /// has none): the hidden path's values with `memory_value = "next_token"`.
    fn next_token_embeddings(&self, state: &MemoryState) -> Tensor<3> {
        let [b, m] = state.next_tokens.dims();
        let d = self.base.config().hidden_size;
        let known = state.next_tokens.clone().greater_equal_elem(0);
        let idx = state.next_tokens.clone().clamp_min(0).reshape([b * m]);
        let e = self.base.embed_tokens.val().select(0, idx);
        let e = if e.dtype() == DType::F32 {
            e
        } else {
            e.cast(DType::F32)
        };
        e.reshape([b, m, d])
            .mask_fill(known.bool_not().reshape([b, m, 1]).expand([b, m, d]), 0.0)
    }

    /// `λ_t` `[B, T]` of the probability path for a retrieval (see [`ProbabilityMix`]).
    /// `w`: the retrieval's [`Retrieval::next_token_weights`] `[B, T, M]`.
    fn lambda(&self, hidden: &Tensor<3>, retrieval: &Retrieval, w: Tensor<3>) -> Tensor<2> {
        let m = w.dims()[2];
        let entropy = w
            .clone()
            .mul(w.clone().clamp_min(1e-30).log())
            .sum_dim(2)
            .neg()
            .div_scalar((m as f64).ln().max(1.0));
        let [b, t, _] = entropy.dims();
        // λ only where p_mem is a distribution (an eligible entry with a next token), so the
        // mixture's normaliser is exactly that of the LM (see `mix_logits`).
        let has = w.sum_dim(2).reshape([b, t]).greater_elem(0.0).float();
        self.mix.lambda(
            hidden.clone(),
            retrieval.best_similarity.clone(),
            entropy.reshape([b, t]),
            has,
            self.config.fusion,
        )
    }

    /// `ln p(targets)` `[B, T]` under this segment's prediction (`targets` `[B, T]`, every id
    /// valid: callers put any id where there is no target and mask it). With the probability
    /// path this reads `T` values of the LM head, the stored normaliser and `p_mem` at the
    /// targets instead of a softmax over the vocabulary:
    /// `ln p_mix(y) = z_y − lse(z) + ln(1 − λ) + ln(1 + λ/(1 − λ)·p_mem(y)/p_LM(y))`, the log of
    /// [`SegmentOutput::logits`]' softmax at `y` (see [`mix_logits`]; same cap on the ratio).
    pub fn target_log_probs(out: &SegmentOutput, targets: Tensor<2, Int>) -> Tensor<2> {
        let log_lm = out.lm_target_log_probs(targets.clone());
        match &out.mixture {
            Some(mix) => {
                let mass =
                    hippo_memory::target_mass(mix.weights.clone(), &mix.next_tokens, targets);
                let held = mass.clone().greater_elem(0.0);
                let r = mass
                    .clamp_min(1e-30)
                    .log()
                    .sub(log_lm.clone())
                    .clamp_max(80.0)
                    .exp();
                let lam = mix.lambda.clone();
                let odds = lam.clone().div(lam.clone().neg().add_scalar(1.0));
                let lift = odds.mul(r).log1p().mask_fill(held.bool_not(), 0.0);
                log_lm.add(lam.neg().log1p()).add(lift)
            }
            None => log_lm,
        }
    }

    /// [`target_log_probs`](Self::target_log_probs) of the same model with memory off, from
    /// this forward's base pass (see [`memory_off_logits`](Self::memory_off_logits)).
    pub fn memory_off_target_log_probs(
        &self,
        out: &SegmentOutput,
        targets: Tensor<2, Int>,
    ) -> Tensor<2> {
        // Without the hidden path and with a base that read no memory, memory-off logits are
        // this forward's LM logits, whose normaliser the forward may already hold.
        if !((self.config.memory && self.config.fusion_space.hidden()) || out.attention_read) {
            return out.lm_target_log_probs(targets);
        }
        log_probs_at(self.memory_off_logits(out), targets)
    }

    /// The logits the same model gives with memory off (the `memory_off` scorer), reusing this
    /// forward's base pass where it can: without the hidden path they are
    /// [`SegmentOutput::lm_logits`] (no extra work); with it, the LM head of the
    /// drift-corrected states. Where the base read memory ([`SegmentOutput::attention_read`]),
    /// its states are memory's too: a base pass without memory, then drift and the LM head.
    pub fn memory_off_logits(&self, out: &SegmentOutput) -> Tensor<3> {
        if out.attention_read {
            let [_, tl, _] = out.lm_logits.dims();
            let t = out.ids.dims()[1];
            let h = self.base.hidden_states(out.ids.clone(), None);
            // `h` and `valid` are `[B, T, D]` and `[B, T]` of the same segment, the only shapes
            // the calibrator checks, so its forward cannot fail here.
            let h = match self.config.drift {
                true => match self.drift.forward(h.clone(), out.valid.clone()) {
                    Ok(d) => d.corrected,
                    Err(e) => {
                        tracing::error!("memory-off drift correction: {e}");
                        h
                    }
                },
                false => h,
            };
            return self.base.lm_head(h.slice_dim(1, t - tl..t));
        }
        if self.config.memory && self.config.fusion_space.hidden() {
            let [_, tl, _] = out.lm_logits.dims();
            let t = out.hidden.dims()[1];
            self.base
                .lm_head(out.hidden.clone().slice_dim(1, t - tl..t))
        } else {
            out.lm_logits.clone()
        }
    }

    /// Reads then commits: the streaming step.
    pub fn step(
        &self,
        ids: Tensor<2, Int>,
        valid: Tensor<2, Bool>,
        state: MemoryState,
    ) -> Result<(SegmentOutput, MemoryState)> {
        let out = self.forward(ids, valid, &state)?;
        let (state, _) = self.commit(state, &out)?;
        Ok((out, state))
    }

    /// Loss terms of a segment. `targets`: `[B, T]` next-token ids, −100 where there is none;
    /// pads must carry −100.
    ///
    /// # Shapes
    ///
    /// * `out`: a [`forward`](Self::forward) output over every position (`lm_logits`
    ///   `[B, T, V]`, not [`LogitPositions::Last`])
    /// * `targets`: `[B, T]`
    /// * every tensor of [`LossTerms`]: `[1]`; `tokens` counts the scored targets (≠ −100, real)
    ///
    /// Without the training-only recurrence label, `usefulness_target = "recurrence"` has no
    /// target: the usefulness term is then 0 (use [`loss_on`](Self::loss_on), as the trainer
    /// does, to train with it).
    pub fn loss(&self, out: &SegmentOutput, targets: Tensor<2, Int>) -> LossTerms {
        self.loss_with(out, targets, None)
    }

    /// [`loss`](Self::loss) on a streamed batch's tensors, with its recurrence label
    /// (`tensors.recurs_in`) for `usefulness_target = "recurrence"`.
    ///
    /// # Shapes
    ///
    /// As [`loss`](Self::loss); every tensor of `tensors` is `[B, T]`.
    pub fn loss_on(&self, out: &SegmentOutput, tensors: &SegmentTensors) -> LossTerms {
        self.loss_with(
            out,
            tensors.targets.clone(),
            Some(tensors.recurs_in.clone()),
        )
    }

    fn loss_with(
        &self,
        out: &SegmentOutput,
        targets: Tensor<2, Int>,
        recurs_in: Option<Tensor<2, Int>>,
    ) -> LossTerms {
        let c = &self.config;
        let device = out.lm_logits.device();
        let scored = targets
            .clone()
            .not_equal_elem(-100)
            .bool_and(out.valid.clone());
        let mask = scored.clone().float();
        let safe = targets.mask_fill(scored.bool_not(), 0);
        let nll = Self::target_log_probs(out, safe).neg();
        let n = mask.clone().sum().clamp_min(1.0);
        let tokens = mask.clone().sum().into_scalar::<f32>().max(0.0) as usize;
        let lm = nll.clone().mul(mask.clone()).sum().div(n.clone());
        let w = out.salience.importance.clone().mul(mask.clone());
        let mean_w = w
            .clone()
            .sum()
            .div(n.clone())
            .clamp_min(1e-12)
            .reshape([1, 1]);
        let w = w.div(mean_w);
        let salience_weighted = nll.clone().mul(w).mul(mask.clone()).sum().div(n.clone());

        // Usefulness: an entry written at t offers x_{t+1} later, which helps where the model
        // predicts x_{t+1} badly now. Target σ(NLL_t − mean NLL) (detached), BCE on salience;
        // with the recurrence target, only where x_{t+1} recurs within the horizon.
        let nll_d = nll.detach();
        let mean_nll = nll_d
            .clone()
            .mul(mask.clone())
            .sum()
            .div(n.clone())
            .reshape([1, 1]);
        let u = burn::tensor::activation::sigmoid(nll_d.sub(mean_nll));
        let u = match (c.usefulness_target, recurs_in) {
            (UsefulnessTarget::Surprise, _) => Some(u),
            (UsefulnessTarget::Recurrence, Some(r)) => {
                let recurs = r.clone().greater_equal_elem(0).bool_and(
                    r.lower_elem(i64::try_from(c.usefulness_horizon).unwrap_or(i64::MAX)),
                );
                Some(u.mul(recurs.float()))
            }
            (UsefulnessTarget::Recurrence, None) => None,
        };
        let usefulness = match u {
            Some(u) => {
                let sal = out.salience.salience.clone().clamp(1e-6, 1.0 - 1e-6);
                let bce = u
                    .clone()
                    .mul(sal.clone().log())
                    .add(u.neg().add_scalar(1.0).mul(sal.neg().add_scalar(1.0).log()))
                    .neg();
                bce.mul(mask.clone()).sum().div(n.clone())
            }
            None => Tensor::zeros([1], &device),
        };

        let real = out.valid.clone().float();
        let n_real = real.clone().sum().clamp_min(1.0);
        let s = out.salience.salience.clone().clamp(1e-6, 1.0 - 1e-6);
        let entropy = s
            .clone()
            .mul(s.clone().log())
            .add(
                s.clone()
                    .neg()
                    .add_scalar(1.0)
                    .mul(s.clone().neg().add_scalar(1.0).log()),
            )
            .neg();
        let sparsity = entropy.mul(real.clone()).sum().div(n_real.clone());
        let mean_s = s.mul(real).sum().div(n_real);
        let memory_util = mean_s.sub_scalar(c.target_salience).powi_scalar(2);
        let drift_reg = if c.drift {
            self.drift.regularizer()
        } else {
            Tensor::zeros([1], &device)
        };
        let total = lm.clone().mul_scalar(c.lm_weight)
            + salience_weighted
                .clone()
                .mul_scalar(c.salience_weighted_weight)
            + sparsity.clone().mul_scalar(c.sparsity_weight)
            + memory_util.clone().mul_scalar(c.memory_util_weight)
            + drift_reg.clone().mul_scalar(c.drift_reg_weight)
            + usefulness.clone().mul_scalar(c.usefulness_weight);
        LossTerms {
            total,
            lm,
            salience_weighted,
            sparsity,
            memory_util,
            drift_reg,
            usefulness,
            tokens,
        }
    }
}

use hippo_gemma::score::log_probs_at;
pub use hippo_gemma::score::log_sum_exp;

/// Logits `[B, T, V]` whose softmax is `(1 − λ)·softmax(z) + λ·p_mem`, computed sparsely.
///
/// `p_mem` is non-zero only on the stored next tokens. Dividing the mixture by the common factor
/// `(1 − λ)·p_LM`, a token `w` gets the logit `z_w + ln(1 + λ/(1 − λ)·r_w)` with
/// `r_w = p_mem(w)/p_LM(w)`, which is `z_w` for every token memory does not hold: the result is
/// `z` plus a scatter over the (distinct) stored tokens, with no pass over the vocabulary but the
/// normaliser `lse = ln Σ e^z` that `r` needs. It is exactly `z` at `λ = 0` (identity at init) and
/// has a finite gradient in `λ` there. Where `λ > 0`, `p_mem` sums to 1, so the mixture's
/// normaliser is `lse − ln(1 − λ)` in closed form ([`HippoFormer::target_log_probs`]). `ln r` is
/// capped at 80 (a base probability below `e^-80·p_mem` is then underestimated; f32 `exp`
/// overflows at 88).
///
/// `z`: the LM head's logits `[B, T, V]`; `mixture`: the forward's sparse mixture (its `lm_lse`
/// is `ln Σ e^z`).
pub fn mix_logits(z: Tensor<3>, mixture: &Mixture) -> Tensor<3> {
    let [b, t, _] = z.dims();
    let m = mixture.next_tokens.dims()[1];
    let (mass, first) =
        hippo_memory::next_token_mass(mixture.weights.clone(), &mixture.next_tokens);
    let y = mixture
        .next_tokens
        .clone()
        .clamp_min(0)
        .reshape([b, 1, m])
        .expand([b, t, m]);
    let log_lm = z
        .clone()
        .gather(2, y.clone())
        .sub(mixture.lm_lse.clone().reshape([b, t, 1]).expand([b, t, m]));
    let counted = mass
        .clone()
        .greater_elem(0.0)
        .bool_and(first.reshape([b, 1, m]).expand([b, t, m]));
    let r = mass
        .clamp_min(1e-30)
        .log()
        .sub(log_lm)
        .clamp_max(80.0)
        .exp();
    let lam = mixture.lambda.clone().reshape([b, t, 1]);
    let odds = lam.clone().div(lam.neg().add_scalar(1.0)); // λ/(1 − λ), [B, T, 1]
    let delta = odds
        .expand([b, t, m])
        .mul(r)
        .log1p()
        .mask_fill(counted.bool_not(), 0.0);
    z.scatter(2, y, delta, IndexingUpdateOp::Add)
}

impl SegmentOutput {
    /// The prediction's logits `[B, T, V]` (`[B, 1, V]` with [`LogitPositions::Last`]): with the
    /// probability path, logits whose softmax is the mixture `(1 − λ_t)·p_LM + λ_t·p_mem`
    /// ([`mix_logits`], built here on demand: scoring reads only the targets, through
    /// [`HippoFormer::target_log_probs`]); otherwise [`SegmentOutput::lm_logits`].
    pub fn logits(&self) -> Tensor<3> {
        match &self.mixture {
            Some(mix) => mix_logits(self.lm_logits.clone(), mix),
            None => self.lm_logits.clone(),
        }
    }

    /// `ln p_LM(targets)` `[B, T]`: the LM head's own softmax at `targets` (`[B, T]`, valid
    /// ids), without the memory's mixture. Reuses the forward's normaliser where the
    /// probability path stored one ([`Mixture::lm_lse`]).
    pub fn lm_target_log_probs(&self, targets: Tensor<2, Int>) -> Tensor<2> {
        match &self.mixture {
            Some(mix) => {
                let [b, t, _] = self.lm_logits.dims();
                self.lm_logits
                    .clone()
                    .gather(2, targets.reshape([b, t, 1]))
                    .reshape([b, t])
                    .sub(mix.lm_lse.clone())
            }
            None => log_probs_at(self.lm_logits.clone(), targets),
        }
    }
}

/// The entries a layer reads on the attention path: `[B, K]` indices into the buffer, and
/// `[B, K]` whether each slot holds one (false: padding of a stream that reads fewer).
type Selection = (Tensor<2, Int>, Tensor<2, Bool>);

/// The width of a memory entry's payload on the attention path over `layers` reading layers of
/// `base`: each layer's key and value, `kv_heads × head_dim` each.
pub fn attention_payload_width(base: &Gemma, layers: usize) -> usize {
    let c = base.config();
    layers * 2 * c.num_kv_heads * c.head_dim
}

/// The base layers that read memory on the attention path `mode`, in order.
pub fn attention_layers(base: &Gemma, mode: MemoryAttention) -> Vec<usize> {
    let types = &base.config().layer_types;
    match mode {
        MemoryAttention::Off => Vec::new(),
        MemoryAttention::All => (0..types.len()).collect(),
        MemoryAttention::Global => (0..types.len())
            .filter(|&l| types[l] == LayerType::Full)
            .collect(),
    }
}
