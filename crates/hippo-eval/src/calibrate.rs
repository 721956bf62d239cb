//! Calibration without backprop: the retrieval's score scale `θ` and the opening of the
//! probability mixture, line-searched on held-out documents.
//!
//! The memory's content does not depend on `θ` or `λ` (what is written depends on salience only),
//! and the LM distribution does not depend on them either (they act after the LM head, on the
//! probability path), so one streaming pass over the documents gives everything: per target, the
//! LM probability `p_LM(y)` and, for every `θ` of the grid, the memory's `p_mem(y)` (the model's
//! own multi-round replay with that `θ`) and whether any entry was eligible. The mixture's NLL
//! `−ln((1 − λ)·p_LM + λ·p_mem)` (λ only where an entry was eligible) is then computed for every
//! `(θ, λ, gate)` on the host. The gate is a confidence gate on the retrieval's best similarity
//! `s_t` (recorded in the same pass): `λ_t = 2λ·σ(a·(s_t − c))`, so a slope `a = 0` is the
//! constant `λ` of the neural cache, and `a > 0` opens the mixture where a stored context is
//! close and closes it where the cache's distribution would be flat (the words a cache hurts).
//! The best point is applied by [`apply`]: `θ` into the buffer's `ln θ`, the opening
//! `o = 2λ`, and the mixture gate's weights set to exactly what was assumed (the similarity's
//! weight `a`, bias `−a·c`, every other weight 0; slopes > 0 are tried only where the gate is
//! live, `fusion = true`).
//!
//! This is the neural cache's recipe (Grave et al. 2017: θ and λ tuned on validation data) run
//! through HippoFormer's own salience → buffer → replay path.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use hippo_data::{BatcherConfig, IGNORE_INDEX, StreamBatcher, TokenizedCorpus};
use hippo_model::fusion::MAX_OPENING;
use hippo_model::{HippoFormer, StreamRunner};
use serde::{Deserialize, Serialize};

use crate::{EvalError, EvalOptions, Progress, Result, check_options, to_host_f32, total_targets};

/// The values tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationGrid {
    /// Score scales `θ` (> 0).
    pub score_scales: Vec<f64>,
    /// Mixture weights `λ` (in `(0, MAX_OPENING/2]`): `λ` where the gate reads ½.
    pub lambdas: Vec<f64>,
    /// Slopes `a ≥ 0` of a confidence gate on the retrieval's best similarity `s_t`:
    /// `λ_t = 2λ·σ(a·(s_t − c))` (`a = 0`: the same `λ` everywhere, Grave et al.'s cache).
    /// Slopes > 0 are tried only where the model's gate is live (`fusion = true`).
    #[serde(default = "default_slopes")]
    pub gate_slopes: Vec<f64>,
    /// Centres `c` of that gate (the similarity at which `λ_t = λ`).
    #[serde(default = "default_centers")]
    pub gate_centers: Vec<f64>,
    /// Weights `g ≥ 0` of the attention path (`memory_attention` on; ignored otherwise): a
    /// streaming pass each, since they change what the base predicts. Empty: the model's own.
    #[serde(default)]
    pub attention_weights: Vec<f64>,
}

fn default_slopes() -> Vec<f64> {
    vec![0.0, 5.0, 10.0, 20.0]
}

fn default_centers() -> Vec<f64> {
    vec![0.3, 0.5, 0.7, 0.9]
}

impl Default for CalibrationGrid {
    fn default() -> Self {
        Self {
            score_scales: vec![5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0],
            lambdas: vec![0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4],
            gate_slopes: default_slopes(),
            gate_centers: default_centers(),
            attention_weights: vec![0.0, 1.0],
        }
    }
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    /// `θ`.
    pub score_scale: f64,
    /// `λ` (at the gate's centre; everywhere with slope 0).
    pub lambda: f64,
    /// The confidence gate's slope `a` (0: none).
    #[serde(default)]
    pub gate_slope: f64,
    /// The confidence gate's centre `c`.
    #[serde(default)]
    pub gate_center: f64,
    /// The attention path's weight `g` (0 where the path is off).
    #[serde(default)]
    pub attention_weight: f64,
    /// Mean NLL per target with this pair.
    pub mean_nll: f64,
}

/// What calibration found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Documents read.
    pub documents: usize,
    /// Targets scored.
    pub tokens: usize,
    /// Targets where memory had an eligible entry.
    pub tokens_with_memory: usize,
    /// Mean NLL of the LM alone (λ = 0: the model without the probability path) with the
    /// model's own attention weight, or the first tried.
    pub lm_mean_nll: f64,
    /// Mean NLL of the LM alone for each attention weight tried, `(g, nll)` (empty where the
    /// attention path is off).
    #[serde(default)]
    pub lm_mean_nll_by_attention: Vec<(f64, f64)>,
    /// Every point of the grid.
    pub grid: Vec<CalibrationPoint>,
    /// The best point.
    pub best: CalibrationPoint,
}

fn check_grid(grid: &CalibrationGrid) -> Result<()> {
    let max_lambda = f64::from(MAX_OPENING) / 2.0;
    if grid.score_scales.is_empty() || grid.lambdas.is_empty() {
        return Err(EvalError::Options(
            "the calibration grid needs at least one score scale and one λ".into(),
        ));
    }
    if let Some(t) = grid
        .score_scales
        .iter()
        .find(|t| !(t.is_finite() && **t > 0.0))
    {
        return Err(EvalError::Options(format!(
            "score scale {t} must be finite and > 0"
        )));
    }
    if let Some(l) = grid
        .lambdas
        .iter()
        .find(|l| !(**l > 0.0 && **l <= max_lambda))
    {
        return Err(EvalError::Options(format!(
            "λ = {l} must lie in (0, {max_lambda}] (the opening 2λ is at most {MAX_OPENING})"
        )));
    }
    if let Some(a) = grid
        .gate_slopes
        .iter()
        .find(|a| !(a.is_finite() && **a >= 0.0))
    {
        return Err(EvalError::Options(format!(
            "gate slope {a} must be finite and ≥ 0"
        )));
    }
    if let Some(c) = grid.gate_centers.iter().find(|c| !c.is_finite()) {
        return Err(EvalError::Options(format!(
            "gate centre {c} must be finite"
        )));
    }
    if let Some(g) = grid
        .attention_weights
        .iter()
        .find(|g| !(g.is_finite() && **g >= 0.0))
    {
        return Err(EvalError::Options(format!(
            "attention weight {g} must be finite and ≥ 0"
        )));
    }
    if grid.gate_slopes.iter().any(|a| *a > 0.0) && grid.gate_centers.is_empty() {
        return Err(EvalError::Options(
            "a gate slope > 0 needs at least one gate centre".into(),
        ));
    }
    Ok(())
}

/// Runs the grid over `corpus` (see the [module docs](self)). The model needs memory on and a
/// probability path (`fusion_space = "probability"` or `"both"`).
pub fn calibrate(
    model: &HippoFormer,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    grid: &CalibrationGrid,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Calibration> {
    check_options(opts)?;
    check_grid(grid)?;
    let c = &model.config;
    if !c.memory || !c.fusion_space.probability() {
        return Err(EvalError::Options(
            "calibration needs memory = true and a probability path (fusion_space = \
             \"probability\" or \"both\")"
                .into(),
        ));
    }
    if c.is_leaky() {
        return Err(EvalError::Leaky);
    }
    let corpus = crate::truncated(corpus, opts.max_docs);
    let layout = model.segment_layout(opts.seq_len);
    let config = BatcherConfig::new(opts.seq_len, opts.streams)
        .with_layout(layout)
        .with_min_tokens(2);
    // Checks the layout once, before any pass.
    StreamBatcher::new(corpus.clone(), config.clone())?;
    // (slope, centre) pairs: slope 0 once (its centre is irrelevant), the rest only where the
    // model's gate is live.
    let mut gates: Vec<(f64, f64)> = Vec::new();
    for &a in &grid.gate_slopes {
        if a == 0.0 {
            if !gates.iter().any(|g| g.0 == 0.0) {
                gates.push((0.0, 0.0));
            }
        } else if c.fusion {
            gates.extend(grid.gate_centers.iter().map(|&cc| (a, cc)));
        }
    }
    if gates.is_empty() {
        return Err(EvalError::Options(
            "no gate to try: slopes > 0 need fusion = true (the gate is live only then); add 0"
                .into(),
        ));
    }
    // One streaming pass per attention weight (the path changes the base's prediction).
    let attention =
        !hippo_model::model::attention_layers(&model.base, c.memory_attention).is_empty();
    let weights: Vec<Option<f64>> = if attention && !grid.attention_weights.is_empty() {
        grid.attention_weights.iter().map(|&g| Some(g)).collect()
    } else {
        vec![None]
    };
    let tokens_total = total_targets(&corpus) * weights.len();
    let mut passes = Vec::with_capacity(weights.len());
    for (i, &g) in weights.iter().enumerate() {
        let m = match g {
            Some(g) => model.clone().with_attention_weight(g as f32),
            None => model.clone(),
        };
        let g = g.unwrap_or_else(|| model_attention_weight(model));
        let done = i * total_targets(&corpus);
        let pass = stream_pass(&m, &corpus, opts, grid, &config, device, &mut |p| {
            progress(Progress {
                tokens_done: done + p.tokens_done,
                tokens_total,
            })
        })?;
        passes.push((g, pass));
    }
    let mut points = Vec::new();
    let mut lm_by_g = Vec::new();
    let mut tokens_with_memory = 0;
    let mut n_all = 0;
    for (g, pass) in &passes {
        let Pass {
            p_lm,
            p_mem,
            present,
            best_sim,
        } = pass;
        let n = p_lm.len();
        if n == 0 {
            return Err(EvalError::Options(
                "calibration found no target to score".into(),
            ));
        }
        n_all = n;
        lm_by_g.push((*g, p_lm.iter().map(|p| -p.ln()).sum::<f64>() / n as f64));
        tokens_with_memory = present
            .first()
            .map_or(0, |p| p.iter().filter(|x| **x).count());
        for (k, &theta) in grid.score_scales.iter().enumerate() {
            for &lambda in &grid.lambdas {
                let o = opening(lambda);
                for &(slope, center) in &gates {
                    let total: f64 = (0..n)
                        .map(|i| {
                            let l = if present[k][i] {
                                o * sigmoid(slope * (best_sim[i] - center))
                            } else {
                                0.0
                            };
                            -((1.0 - l) * p_lm[i] + l * p_mem[k][i]).ln()
                        })
                        .sum();
                    points.push(CalibrationPoint {
                        score_scale: theta,
                        lambda,
                        gate_slope: slope,
                        gate_center: center,
                        attention_weight: *g,
                        mean_nll: total / n as f64,
                    });
                }
            }
        }
    }
    let best = points
        .iter()
        .min_by(|a, b| a.mean_nll.total_cmp(&b.mean_nll))
        .cloned()
        .ok_or_else(|| EvalError::Options("empty calibration grid".into()))?;
    let own = model_attention_weight(model);
    let lm_mean_nll = lm_by_g
        .iter()
        .find(|(g, _)| *g == own)
        .or(lm_by_g.first())
        .map_or(f64::NAN, |(_, l)| *l);
    Ok(Calibration {
        documents: corpus.docs.len(),
        tokens: n_all,
        tokens_with_memory,
        lm_mean_nll,
        lm_mean_nll_by_attention: if attention { lm_by_g } else { Vec::new() },
        grid: points,
        best,
    })
}

/// What one streaming pass records per scored target.
struct Pass {
    /// `p_LM(y)`.
    p_lm: Vec<f64>,
    /// Per `θ`: `p_mem(y)`.
    p_mem: Vec<Vec<f64>>,
    /// Per `θ`: whether memory had an eligible entry.
    present: Vec<Vec<bool>>,
    /// The retrieval's best similarity (the same for every `θ`).
    best_sim: Vec<f64>,
}

fn stream_pass(
    model: &HippoFormer,
    corpus: &Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    grid: &CalibrationGrid,
    config: &BatcherConfig,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Pass> {
    let batcher = StreamBatcher::new(corpus.clone(), config.clone())?;
    let variants: Vec<HippoFormer> = grid
        .score_scales
        .iter()
        .map(|&theta| with_score_scale(model.clone(), theta, device))
        .collect();
    let mut run = StreamRunner::new(model, opts.streams, device);
    let n_theta = grid.score_scales.len();
    // Per scored target: p_LM(y), then per θ: p_mem(y) and whether memory had an entry.
    let mut p_lm: Vec<f64> = Vec::new();
    let mut p_mem: Vec<Vec<f64>> = vec![Vec::new(); n_theta];
    let mut present: Vec<Vec<bool>> = vec![Vec::new(); n_theta];
    // Per scored target: the best similarity (the same for every θ).
    let mut best_sim: Vec<f64> = Vec::new();
    let tokens_total = total_targets(corpus);
    for batch in batcher {
        let step = run.read(&batch)?;
        // The memory the segment was read against (before its own write).
        let state = run.state()?.clone();
        let out = &step.output;
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let scored: Vec<bool> = batch
            .targets_flat()
            .iter()
            .map(|&y| y != IGNORE_INDEX)
            .collect();
        let y = step.tensors.gather_targets();
        let lp = to_host_f32(out.lm_target_log_probs(y.clone()).reshape([b * t]))?;
        p_lm.extend(
            lp.iter()
                .zip(&scored)
                .filter(|(_, s)| **s)
                .map(|(&l, _)| f64::from(l).exp()),
        );
        for (k, variant) in variants.iter().enumerate() {
            let r = variant
                .memory
                .retrieve(out.hidden.clone(), &state)
                .map_err(hippo_model::HippoError::from)?;
            let w = r.next_token_weights(&state);
            let pm = hippo_memory::target_mass(w, &state.next_tokens, y.clone());
            let pm = to_host_f32(pm.reshape([b * t]))?;
            let any: Vec<bool> = r.any.clone().into_data().iter::<bool>().collect();
            if k == 0 {
                // θ only scales the scores: the best similarity is the same for every variant.
                let sim = to_host_f32(r.best_similarity.clone().reshape([b * t]))?;
                best_sim.extend((0..b * t).filter(|&i| scored[i]).map(|i| f64::from(sim[i])));
            }
            for i in (0..b * t).filter(|&i| scored[i]) {
                p_mem[k].push(f64::from(pm[i]));
                present[k].push(any[i]);
            }
        }
        run.write(&step)?;
        progress(Progress {
            tokens_done: p_lm.len(),
            tokens_total,
        });
    }
    Ok(Pass {
        p_lm,
        p_mem,
        present,
        best_sim,
    })
}
/// The opening `o = 2λ` that makes a gate reading ½ give `λ`.
fn opening(lambda: f64) -> f64 {
    (2.0 * lambda).min(f64::from(MAX_OPENING))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The model's attention-path weight `g` (its first reading layer's; 0 with the path off).
fn model_attention_weight(model: &HippoFormer) -> f64 {
    let layers = hippo_model::model::attention_layers(&model.base, model.config.memory_attention);
    layers
        .first()
        .and_then(|&l| {
            model
                .attention_weight
                .val()
                .into_data()
                .iter::<f32>()
                .nth(l)
        })
        .map_or(0.0, f64::from)
}

fn with_score_scale(mut model: HippoFormer, theta: f64, device: &Device) -> HippoFormer {
    model.memory.log_score_scale =
        Param::from_tensor(Tensor::from_floats([theta.ln() as f32], device));
    model
}

/// The model with `θ` and the opening `o = 2λ` of `point` (see the [module docs](self)); its
/// config's `memory_score_scale` becomes `θ` too, so a checkpoint of it records the value its
/// weights hold.
pub fn apply(model: HippoFormer, point: &CalibrationPoint) -> HippoFormer {
    let device = model.mix.opening.val().device();
    let model = model.with_attention_weight(point.attention_weight as f32);
    let mut model = with_score_scale(model, point.score_scale, &device);
    model.config.memory_score_scale = point.score_scale;
    let o = opening(point.lambda) as f32;
    model.mix.opening = Param::from_tensor(Tensor::from_floats([o], &device));
    // The gate reads [h/rms; best similarity; entropy]: only the similarity's weight and the
    // bias are set, σ(a·s − a·c).
    let [d_in, d_out] = model.mix.gate.weight.dims();
    let mut w = vec![0.0f32; d_in * d_out];
    if d_in >= 2 && d_out == 1 {
        w[d_in - 2] = point.gate_slope as f32;
    }
    model.mix.gate.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [d_in, d_out]),
        &device,
    ));
    model.mix.gate.bias = Some(Param::from_tensor(Tensor::from_floats(
        [(-point.gate_slope * point.gate_center) as f32],
        &device,
    )));
    model
}
