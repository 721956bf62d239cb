//! Import of the reference implementation's PyTorch checkpoint.
//!
//! The reference (the Python HippoFormer: `hippoformer/{model,salience/gate,memory/buffer,
//! drift/calibrator}.py`) saves `{"model_state_dict": model.state_dict(), …}` with `torch.save`.
//! [`import_reference`] reads it with burn-store's PyTorch reader ([`PytorchReader`]), turns every
//! tensor that has a counterpart in a [`HippoFormer`] into our layout, checks its shape, and
//! applies all of them at once with [`ModuleSnapshot::apply`] (nothing is changed when any tensor
//! fails). Everything else in the checkpoint is reported by name with the reason it was not
//! imported ([`ImportReport`]).
//!
//! # Mapping
//!
//! `D` is the hidden size, `K` the smoothing width, `r` the LoRA rank. PyTorch stores a Linear
//! weight `[out, in]`, Burn `[in, out]`: "ᵀ" marks that transpose.
//!
//! | reference key | our path | rule |
//! |---|---|---|
//! | `salience_gate.local_gate.0.{weight,bias}` | `gate.local_in.{weight,bias}` | weight ᵀ |
//! | `salience_gate.local_gate.3.{weight,bias}` | `gate.local_mid.{weight,bias}` | weight ᵀ |
//! | `salience_gate.local_gate.5.{weight,bias}` | `gate.local_out.{weight,bias}` | weight ᵀ |
//! | `salience_gate.global_query.{weight,bias}` | `gate.query.{weight,bias}` | weight ᵀ |
//! | `salience_gate.global_key.{weight,bias}` | `gate.key.{weight,bias}` | weight ᵀ |
//! | `salience_gate.global_value.{weight,bias}` | `gate.value.{weight,bias}` | weight ᵀ |
//! | `salience_gate.global_proj.{weight,bias}` | `gate.global_out.{weight,bias}` | weight ᵀ |
//! | `salience_gate.pathway_weight` `[]` | `gate.pathway_logit` `[1]` | copy (both enter as σ(w)) |
//! | `salience_gate.temporal_smooth.weight` `[1,1,K]` | `gate.smoothing` `[K]` | reversed: the causal `Conv1d` (padding `K−1`, first `T` outputs) weighs `x_{t−j}` with `w[K−1−j]`, ours with `c_j` |
//! | `salience_gate.threshold` `[]` and `salience_gate.temporal_smooth.bias` `[1]` | `gate.threshold` `[1]` | `θ − bias`: `σ(y + bias − θ) = σ(y − (θ − bias))` |
//! | `salience_gate.importance_hi` | config `importance_range[1]` | checked equal, not a tensor of ours |
//! | `memory_consolidator.{key,value,query}_proj.{weight,bias}` | `memory.{key,value,query}_proj.{weight,bias}` | weight ᵀ |
//! | `memory_consolidator.consolidation_proj.weight` | `memory.consolidation_proj.weight` | ᵀ |
//! | `drift_calibrator.affine_A` `[D,D]` | `drift.a` | copy (both compute `h·A + b`) |
//! | `drift_calibrator.affine_b` | `drift.b` | copy |
//! | `drift_calibrator.anchors` `[N,D]` | `drift.anchors` | copy |
//! | `drift_calibrator.anchor_initialized` (bool) | `drift.anchor_valid` `[N]` | all 1 when set, else all 0 |
//! | `drift_calibrator.running_mean`, `running_var` | `drift.running_mean`, `drift.running_var` | copy |
//! | `output_fusion.cross_attn.in_proj_weight` `[3D,D]` | `fusion.{q,k,v}_proj.weight` | rows `0..D`, `D..2D`, `2D..3D`, each ᵀ |
//! | `output_fusion.cross_attn.in_proj_bias` `[3D]` | `fusion.{q,k,v}_proj.bias` | thirds |
//! | `output_fusion.cross_attn.out_proj.{weight,bias}` | `fusion.out_proj.{weight,bias}` | weight ᵀ |
//! | `output_fusion.gate.0.{weight,bias}` | `fusion.gate_in.{weight,bias}` | weight ᵀ (`[D,2D]` → `[2D,D]`, input `[h; m]` in both) |
//! | `output_fusion.gate.2.weight` `[1,D]` | `fusion.gate_out.weight` `[D,D]` | broadcast: every output column is the reference's one gate row, so each of our D gates equals its scalar gate |
//! | `output_fusion.gate.2.bias` `[1]` | `fusion.gate_out.bias` `[D]` | broadcast |
//! | `output_fusion.norm.{weight,bias}` | `fusion.norm.{gamma,beta}` | copy |
//! | `….layers.N.{self_attn,mlp}.P.lora_A.<adapter>.weight` `[r,in]` | `base.layers.N.{self_attn,mlp}.P.weight.lora.a` `[in,r]` | ᵀ |
//! | `….layers.N.{self_attn,mlp}.P.lora_B.<adapter>.weight` `[out,r]` | `base.layers.N.{self_attn,mlp}.P.weight.lora.b` `[r,out]` | ᵀ |
//!
//! peft computes `W + (α/r)·B·A` on `[out, in]` weights, Burn's LoRA `W + (α/r)·A·B` on `[in, out]`:
//! with both factors transposed the deltas are transposes of each other, and the scale is the same
//! `α/r` — so the checkpoint's `config.lora_alpha` and `config.lora_r`, when present, must equal
//! ours (as must the other config values that shape the math: heads, smoothing width,
//! importance range).
//!
//! # Not imported (reported by name)
//!
//! * The frozen base (`base_model.…base_layer.weight`, embeddings, norms, `lm_head.weight`, …):
//!   the base comes from its own files.
//! * `memory_consolidator.{keys,values,priorities,ages,valid_mask,write_ptr,total_writes}`: one
//!   shared buffer's contents; our memory state is per stream and lives outside the model.
//! * `memory_consolidator.consolidation_proj.bias`: our consolidation projection has no bias.
//! * `drift_calibrator.{n_updates,drift_history,drift_ptr}`: logging counters.
//! * `salience_gate.importance_lo`: a constant the reference's forward does not use (it uses
//!   `untagged_weight`).
//!
//! Our `fusion.alpha` (the opening `tanh(α)`) has no counterpart: the reference has no opening,
//! and it stays as it is in the model (0 in a fresh one: fusion closed).
//!
//! The forward passes differ beyond the weights (the reference's gate attention is not causal;
//! its memory is one pooled query per sequence), so an import carries the learned weights over;
//! it does not make the two models compute the same function.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use burn::store::pytorch_reader::{self, PickleValue, PytorchReader};
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::TensorData;

use crate::error::{HippoError, Result, ShapeMismatch};
use crate::model::HippoFormer;

/// Key prefix of the reference's model inside its checkpoint file.
pub const STATE_DICT_KEY: &str = "model_state_dict";

/// How a reference tensor becomes one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Same values and layout (a 0-d tensor may become `[1]`).
    Copy,
    /// A PyTorch `[out, in]` weight becomes Burn's `[in, out]`.
    Transpose,
    /// Rows `p·D..(p+1)·D` of `in_proj_weight` `[3D, in]`, transposed (`p` = 0 q, 1 k, 2 v).
    InProjRows(usize),
    /// Third `p` of `in_proj_bias` `[3D]`.
    InProjThird(usize),
    /// A causal `Conv1d(1, 1, K)` kernel `[1, 1, K]`, reversed into `[K]`.
    Reversed,
    /// `threshold − temporal_smooth.bias` (the convolution's bias folded into the threshold).
    MinusConvBias,
    /// A `[1, D]` gate row broadcast to every output column of a `[D, D]` weight.
    BroadcastColumns,
    /// A `[1]` gate bias broadcast to `[D]`.
    BroadcastBias,
    /// A boolean flag spread over a `[N]` validity vector (1.0 when set).
    Flag,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let qkv = |p: usize| ["q", "k", "v"].get(p).copied().unwrap_or("?");
        match self {
            Rule::Copy => f.write_str("copy"),
            Rule::Transpose => f.write_str("[out,in] → [in,out]"),
            Rule::InProjRows(p) => write!(f, "in_proj rows of {}, transposed", qkv(*p)),
            Rule::InProjThird(p) => write!(f, "in_proj bias third of {}", qkv(*p)),
            Rule::Reversed => f.write_str("conv kernel reversed"),
            Rule::MinusConvBias => f.write_str("threshold − conv bias"),
            Rule::BroadcastColumns => f.write_str("[1,D] broadcast to every column"),
            Rule::BroadcastBias => f.write_str("[1] broadcast to [D]"),
            Rule::Flag => f.write_str("flag → validity vector"),
        }
    }
}

/// One imported tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The reference key (for [`Rule::MinusConvBias`], the threshold's; the bias is also used).
    pub reference: String,
    /// Our parameter path.
    pub ours: String,
    /// How the values were transformed.
    pub rule: Rule,
}

/// A tensor that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The reference key or our parameter path.
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

/// What [`import_reference`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Every imported tensor (reference key → our path).
    pub mapped: Vec<Mapped>,
    /// Checkpoint keys that were not imported (the frozen base, buffer contents, counters, …).
    pub unused_in_checkpoint: Vec<Skipped>,
    /// Our tensors that have a reference counterpart the checkpoint lacks
    /// (`name` = our path, `reason` names the expected key). They keep their current values.
    pub not_in_checkpoint: Vec<Skipped>,
    /// Our tensors the reference has no counterpart for at all (they keep their values).
    pub no_counterpart: Vec<Skipped>,
    /// Configuration values compared with the checkpoint's `config` (all equal, or the import
    /// fails).
    pub config_checked: Vec<String>,
    /// The checkpoint's `step`, when it has one.
    pub step: Option<i64>,
}

impl ImportReport {
    /// Whether every HippoFormer tensor with a reference counterpart was imported.
    pub fn is_complete(&self) -> bool {
        self.not_in_checkpoint.is_empty()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "imported {} tensors:", self.mapped.len())?;
        let w = self
            .mapped
            .iter()
            .map(|m| m.reference.len())
            .max()
            .unwrap_or(0);
        for m in &self.mapped {
            writeln!(f, "  {:<w$}  →  {}  ({})", m.reference, m.ours, m.rule)?;
        }
        let mut section = |title: &str, items: &[Skipped]| -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "{title} ({}):", items.len())?;
            for s in items {
                writeln!(f, "  {}: {}", s.name, s.reason)?;
            }
            Ok(())
        };
        section(
            "NOT IN CHECKPOINT (kept as they are)",
            &self.not_in_checkpoint,
        )?;
        section("no counterpart in the reference", &self.no_counterpart)?;
        section(
            "checkpoint tensors not imported",
            &self.unused_in_checkpoint,
        )?;
        if !self.config_checked.is_empty() {
            writeln!(f, "config checked: {}", self.config_checked.join(", "))?;
        }
        if let Some(step) = self.step {
            writeln!(f, "checkpoint step: {step}")?;
        }
        Ok(())
    }
}

/// Fixed-name tensors: (our path, reference key, rule).
const TABLE: &[(&str, &str, Rule)] = &[
    (
        "gate.local_in.weight",
        "salience_gate.local_gate.0.weight",
        Rule::Transpose,
    ),
    (
        "gate.local_in.bias",
        "salience_gate.local_gate.0.bias",
        Rule::Copy,
    ),
    (
        "gate.local_mid.weight",
        "salience_gate.local_gate.3.weight",
        Rule::Transpose,
    ),
    (
        "gate.local_mid.bias",
        "salience_gate.local_gate.3.bias",
        Rule::Copy,
    ),
    (
        "gate.local_out.weight",
        "salience_gate.local_gate.5.weight",
        Rule::Transpose,
    ),
    (
        "gate.local_out.bias",
        "salience_gate.local_gate.5.bias",
        Rule::Copy,
    ),
    (
        "gate.query.weight",
        "salience_gate.global_query.weight",
        Rule::Transpose,
    ),
    (
        "gate.query.bias",
        "salience_gate.global_query.bias",
        Rule::Copy,
    ),
    (
        "gate.key.weight",
        "salience_gate.global_key.weight",
        Rule::Transpose,
    ),
    ("gate.key.bias", "salience_gate.global_key.bias", Rule::Copy),
    (
        "gate.value.weight",
        "salience_gate.global_value.weight",
        Rule::Transpose,
    ),
    (
        "gate.value.bias",
        "salience_gate.global_value.bias",
        Rule::Copy,
    ),
    (
        "gate.global_out.weight",
        "salience_gate.global_proj.weight",
        Rule::Transpose,
    ),
    (
        "gate.global_out.bias",
        "salience_gate.global_proj.bias",
        Rule::Copy,
    ),
    (
        "gate.pathway_logit",
        "salience_gate.pathway_weight",
        Rule::Copy,
    ),
    (
        "gate.smoothing",
        "salience_gate.temporal_smooth.weight",
        Rule::Reversed,
    ),
    (
        "gate.threshold",
        "salience_gate.threshold",
        Rule::MinusConvBias,
    ),
    (
        "memory.key_proj.weight",
        "memory_consolidator.key_proj.weight",
        Rule::Transpose,
    ),
    (
        "memory.key_proj.bias",
        "memory_consolidator.key_proj.bias",
        Rule::Copy,
    ),
    (
        "memory.value_proj.weight",
        "memory_consolidator.value_proj.weight",
        Rule::Transpose,
    ),
    (
        "memory.value_proj.bias",
        "memory_consolidator.value_proj.bias",
        Rule::Copy,
    ),
    (
        "memory.query_proj.weight",
        "memory_consolidator.query_proj.weight",
        Rule::Transpose,
    ),
    (
        "memory.query_proj.bias",
        "memory_consolidator.query_proj.bias",
        Rule::Copy,
    ),
    (
        "memory.consolidation_proj.weight",
        "memory_consolidator.consolidation_proj.weight",
        Rule::Transpose,
    ),
    ("drift.a", "drift_calibrator.affine_A", Rule::Copy),
    ("drift.b", "drift_calibrator.affine_b", Rule::Copy),
    ("drift.anchors", "drift_calibrator.anchors", Rule::Copy),
    (
        "drift.anchor_valid",
        "drift_calibrator.anchor_initialized",
        Rule::Flag,
    ),
    (
        "drift.running_mean",
        "drift_calibrator.running_mean",
        Rule::Copy,
    ),
    (
        "drift.running_var",
        "drift_calibrator.running_var",
        Rule::Copy,
    ),
    (
        "fusion.q_proj.weight",
        "output_fusion.cross_attn.in_proj_weight",
        Rule::InProjRows(0),
    ),
    (
        "fusion.k_proj.weight",
        "output_fusion.cross_attn.in_proj_weight",
        Rule::InProjRows(1),
    ),
    (
        "fusion.v_proj.weight",
        "output_fusion.cross_attn.in_proj_weight",
        Rule::InProjRows(2),
    ),
    (
        "fusion.q_proj.bias",
        "output_fusion.cross_attn.in_proj_bias",
        Rule::InProjThird(0),
    ),
    (
        "fusion.k_proj.bias",
        "output_fusion.cross_attn.in_proj_bias",
        Rule::InProjThird(1),
    ),
    (
        "fusion.v_proj.bias",
        "output_fusion.cross_attn.in_proj_bias",
        Rule::InProjThird(2),
    ),
    (
        "fusion.out_proj.weight",
        "output_fusion.cross_attn.out_proj.weight",
        Rule::Transpose,
    ),
    (
        "fusion.out_proj.bias",
        "output_fusion.cross_attn.out_proj.bias",
        Rule::Copy,
    ),
    (
        "fusion.gate_in.weight",
        "output_fusion.gate.0.weight",
        Rule::Transpose,
    ),
    (
        "fusion.gate_in.bias",
        "output_fusion.gate.0.bias",
        Rule::Copy,
    ),
    (
        "fusion.gate_out.weight",
        "output_fusion.gate.2.weight",
        Rule::BroadcastColumns,
    ),
    (
        "fusion.gate_out.bias",
        "output_fusion.gate.2.bias",
        Rule::BroadcastBias,
    ),
    ("fusion.norm.gamma", "output_fusion.norm.weight", Rule::Copy),
    ("fusion.norm.beta", "output_fusion.norm.bias", Rule::Copy),
];

/// The convolution bias folded into the threshold.
const CONV_BIAS: &str = "salience_gate.temporal_smooth.bias";
/// The importance constant checked against the config.
const IMPORTANCE_HI: &str = "salience_gate.importance_hi";

/// Why a checkpoint key that no rule used was left out.
fn unused_reason(key: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    if key.starts_with("base_model.") || key == "lm_head.weight" {
        if key.contains(".lora_") {
            return "LoRA factor of a projection this config does not adapt".into();
        }
        return "frozen base weight (the base comes from its own files)".into();
    }
    match key {
        "memory_consolidator.keys"
        | "memory_consolidator.values"
        | "memory_consolidator.priorities"
        | "memory_consolidator.ages"
        | "memory_consolidator.valid_mask"
        | "memory_consolidator.write_ptr"
        | "memory_consolidator.total_writes" => {
            "buffer contents: our memory state is per stream and lives outside the model".into()
        }
        "memory_consolidator.consolidation_proj.bias" => {
            "our consolidation projection has no bias".into()
        }
        "drift_calibrator.n_updates"
        | "drift_calibrator.drift_history"
        | "drift_calibrator.drift_ptr" => {
            format!("logging counter `{last}`: not part of our calibrator")
        }
        "salience_gate.importance_lo" => {
            "constant unused by the reference's forward (it uses untagged_weight)".into()
        }
        IMPORTANCE_HI => "constant: checked against importance_range[1]".into(),
        _ => "unknown key: no counterpart in HippoFormer".into(),
    }
}

/// A parsed peft LoRA key: (layer, block, projection, factor `A`/`B`).
type LoraKey = (usize, String, String, char);

/// `…layers.N.{self_attn,mlp}.P.lora_{A,B}.<adapter>.weight` → its parts.
fn parse_peft_lora(key: &str) -> Option<LoraKey> {
    let seg: Vec<&str> = key.split('.').collect();
    let i = seg.iter().position(|s| *s == "layers")?;
    if seg.len() != i + 7 || seg[i + 6] != "weight" {
        return None;
    }
    let factor = match seg[i + 4] {
        "lora_A" => 'A',
        "lora_B" => 'B',
        _ => return None,
    };
    Some((
        seg[i + 1].parse().ok()?,
        seg[i + 2].to_string(),
        seg[i + 3].to_string(),
        factor,
    ))
}

/// `base.layers.N.{self_attn,mlp}.P.weight.lora.{a,b}` → its parts.
fn parse_our_lora(path: &str) -> Option<LoraKey> {
    let seg: Vec<&str> = path.split('.').collect();
    if seg.len() != 8
        || seg[0] != "base"
        || seg[1] != "layers"
        || seg[5] != "weight"
        || seg[6] != "lora"
    {
        return None;
    }
    let factor = match seg[7] {
        "a" => 'A',
        "b" => 'B',
        _ => return None,
    };
    Some((
        seg[2].parse().ok()?,
        seg[3].to_string(),
        seg[4].to_string(),
        factor,
    ))
}

/// The checkpoint's tensors.
struct Source<'a> {
    path: &'a Path,
    tensors: HashMap<String, pytorch_reader::Tensor>,
}

impl Source<'_> {
    fn err(&self, message: impl Into<String>) -> HippoError {
        HippoError::Checkpoint {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.shape().to_vec())
    }

    /// A tensor's values as f32 (row-major) with its shape; booleans become 0/1.
    fn floats(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| self.err(format!("no tensor `{key}`")))?;
        let shape = t.shape().to_vec();
        if t.dtype() == pytorch_reader::DType::Bool {
            let bytes = t
                .read()
                .map_err(|e| self.err(format!("reading `{key}`: {e}")))?;
            return Ok((shape, bytes.iter().map(|&b| f32::from(b != 0)).collect()));
        }
        let data = bridge::into_data(bridge::from_pytorch(t.clone()))
            .map_err(|e| self.err(format!("reading `{key}`: {e:?}")))?
            .convert::<f32>();
        let values = data
            .try_into_vec::<f32>()
            .map_err(|e| self.err(format!("reading `{key}` as f32: {e:?}")))?;
        Ok((shape, values))
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Applies `rule` to the reference tensor(s); `ours` is the target shape (used only where the
/// rule broadcasts). `None` when the reference shape does not fit the rule.
fn convert(
    rule: Rule,
    shape: &[usize],
    v: &[f32],
    extra: Option<&[f32]>,
    ours: &[usize],
) -> Option<(Vec<usize>, Vec<f32>)> {
    match (rule, shape) {
        (Rule::Copy, []) => Some((vec![1], v.to_vec())),
        (Rule::Copy, s) => Some((s.to_vec(), v.to_vec())),
        (Rule::Transpose, [o, i]) => Some((vec![*i, *o], transpose(v, *o, *i))),
        (Rule::InProjRows(p), [r, i]) if r % 3 == 0 => {
            let d = r / 3;
            let rows = &v[p * d * i..(p + 1) * d * i];
            Some((vec![*i, d], transpose(rows, d, *i)))
        }
        (Rule::InProjThird(p), [r]) if r % 3 == 0 => {
            let d = r / 3;
            Some((vec![d], v[p * d..(p + 1) * d].to_vec()))
        }
        (Rule::Reversed, [1, 1, k]) => Some((vec![*k], v.iter().rev().copied().collect())),
        (Rule::MinusConvBias, []) => {
            let bias = extra.and_then(|b| b.first().copied()).unwrap_or(0.0);
            Some((vec![1], vec![v[0] - bias]))
        }
        (Rule::BroadcastColumns, [1, d]) if ours.len() == 2 => {
            let cols = ours[1];
            let w = (0..*d)
                .flat_map(|i| std::iter::repeat_n(v[i], cols))
                .collect();
            Some((vec![*d, cols], w))
        }
        (Rule::BroadcastBias, [1]) if ours.len() == 1 => Some((ours.to_vec(), vec![v[0]; ours[0]])),
        (Rule::Flag, []) if ours.len() == 1 => Some((ours.to_vec(), vec![v[0]; ours[0]])),
        _ => None,
    }
}

/// The checkpoint's top-level `step` and `config`, when it is a dict holding them.
fn read_meta(path: &Path) -> (Option<i64>, Option<HashMap<String, PickleValue>>, bool) {
    match PytorchReader::read_pickle_data(path, None) {
        Ok(PickleValue::Dict(mut root)) => {
            let nested = root.contains_key(STATE_DICT_KEY);
            let step = match root.remove("step") {
                Some(PickleValue::Int(s)) => Some(s),
                _ => None,
            };
            let config = match root.remove("config") {
                Some(PickleValue::Dict(c)) => Some(c),
                _ => None,
            };
            (step, config, nested)
        }
        _ => (None, None, false),
    }
}

fn as_f64(v: &PickleValue) -> Option<f64> {
    match v {
        PickleValue::Int(i) => Some(*i as f64),
        PickleValue::Float(x) => Some(*x),
        PickleValue::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Compares the checkpoint's `config` values that shape the math with ours.
fn check_config(
    model: &HippoFormer,
    config: &HashMap<String, PickleValue>,
    src: &Source<'_>,
    checked: &mut Vec<String>,
) -> Result<()> {
    let c = &model.config;
    let mut numbers: Vec<(&str, f64, &str)> = vec![
        (
            "salience_n_heads",
            c.salience_n_heads as f64,
            "salience_n_heads",
        ),
        (
            "salience_min_duration",
            c.salience_min_duration as f64,
            "salience_min_duration",
        ),
        ("fusion_n_heads", c.fusion_n_heads as f64, "fusion_n_heads"),
        (
            "untagged_weight",
            c.importance_range[0],
            "importance_range[0]",
        ),
    ];
    if c.use_lora {
        numbers.push(("lora_r", c.lora_r as f64, "lora_r"));
        numbers.push(("lora_alpha", c.lora_alpha, "lora_alpha"));
    }
    for (key, ours, field) in numbers {
        let Some(theirs) = config.get(key).and_then(as_f64) else {
            continue;
        };
        if (theirs - ours).abs() > 1e-9 * ours.abs().max(1.0) {
            return Err(src.err(format!(
                "config mismatch: the checkpoint's {key} = {theirs}, ours {field} = {ours}"
            )));
        }
        checked.push(key.to_string());
    }
    if c.use_lora
        && let Some(PickleValue::List(targets)) = config.get("lora_target_modules")
    {
        let theirs: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| match t {
                PickleValue::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let ours: BTreeSet<String> = c.lora_targets.iter().cloned().collect();
        if theirs != ours {
            return Err(src.err(format!(
                "config mismatch: the checkpoint's lora_target_modules = {theirs:?}, ours \
                 lora_targets = {ours:?}"
            )));
        }
        checked.push("lora_target_modules".into());
    }
    Ok(())
}

/// Imports the reference's checkpoint at `path` into `model` (see the module docs for the
/// mapping). The file is `torch.save({"model_state_dict": …, "step": …, "config": …})` or a bare
/// state dict. Every tensor is converted and checked (shape, config) before any is applied, so a shape
/// or config error leaves the model unchanged.
///
/// # Errors
///
/// [`HippoError::ImportShape`] ([`ShapeMismatch`]) when a tensor's shape does not fit (naming both shapes);
/// [`HippoError::Checkpoint`] when the file cannot be read or its `config` disagrees with ours
/// on a value that shapes the math (LoRA r and α, heads, smoothing width, importance range).
pub fn import_reference(model: &mut HippoFormer, path: &Path) -> Result<ImportReport> {
    let (step, config, nested) = read_meta(path);
    let reader = if nested {
        PytorchReader::with_top_level_key(path, STATE_DICT_KEY)
    } else {
        PytorchReader::new(path)
    };
    let src = Source {
        path,
        tensors: reader
            .map_err(|e| HippoError::Checkpoint {
                path: path.display().to_string(),
                message: format!("not a readable PyTorch checkpoint: {e}"),
            })?
            .into_tensors(),
    };
    let mut report = ImportReport {
        step,
        ..ImportReport::default()
    };
    if let Some(config) = &config {
        check_config(model, config, &src, &mut report.config_checked)?;
    }
    if let Some((_, v)) = src
        .shape(IMPORTANCE_HI)
        .map(|_| src.floats(IMPORTANCE_HI))
        .transpose()?
    {
        let hi = model.config.importance_range[1];
        let theirs = f64::from(v.first().copied().unwrap_or(f32::NAN));
        if (theirs - hi).abs() > 1e-6 * hi.abs().max(1.0) {
            return Err(src.err(format!(
                "config mismatch: the checkpoint's {IMPORTANCE_HI} = {theirs}, ours \
                 importance_range[1] = {hi}"
            )));
        }
        report.config_checked.push("importance_hi".into());
    }

    let lora_keys: HashMap<LoraKey, String> = src
        .tensors
        .keys()
        .filter_map(|k| parse_peft_lora(k).map(|p| (p, k.clone())))
        .collect();
    let table: HashMap<&str, (&str, Rule)> =
        TABLE.iter().map(|(o, r, rule)| (*o, (*r, *rule))).collect();

    let ours: BTreeMap<String, Vec<usize>> = model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut tensors = Vec::new();
    for (our, our_shape) in &ours {
        let (reference, rule) = if let Some((reference, rule)) = table.get(our.as_str()) {
            (reference.to_string(), *rule)
        } else if let Some(parts) = parse_our_lora(our) {
            let expected = format!(
                "base_model.base_model.model.model.layers.{}.{}.{}.lora_{}.default.weight",
                parts.0, parts.1, parts.2, parts.3
            );
            match lora_keys.get(&parts) {
                Some(key) => (key.clone(), Rule::Transpose),
                None => {
                    report.not_in_checkpoint.push(Skipped {
                        name: our.clone(),
                        reason: format!("expected `{expected}`"),
                    });
                    continue;
                }
            }
        } else if our.starts_with("base.") {
            continue; // the frozen base is not part of an import
        } else {
            report.no_counterpart.push(Skipped {
                name: our.clone(),
                reason: if our == "fusion.alpha" {
                    "the reference's fusion has no opening tanh(α); kept as it is".into()
                } else {
                    "no counterpart in the reference; kept as it is".into()
                },
            });
            continue;
        };
        if src.shape(&reference).is_none() {
            if our == "gate.smoothing" && our_shape.as_slice() == [1] {
                report.no_counterpart.push(Skipped {
                    name: our.clone(),
                    reason: "the reference has no temporal conv when min_duration = 1; kept \
                             as it is (1 = identity)"
                        .into(),
                });
            } else {
                report.not_in_checkpoint.push(Skipped {
                    name: our.clone(),
                    reason: format!("expected `{reference}`"),
                });
            }
            continue;
        }
        let (shape, values) = src.floats(&reference)?;
        let extra = if rule == Rule::MinusConvBias && src.shape(CONV_BIAS).is_some() {
            used.insert(CONV_BIAS.to_string());
            Some(src.floats(CONV_BIAS)?.1)
        } else {
            None
        };
        let fits = convert(rule, &shape, &values, extra.as_deref(), our_shape)
            .filter(|(s, _)| s == our_shape);
        let Some((s, v)) = fits else {
            return Err(HippoError::ImportShape(Box::new(ShapeMismatch {
                path: path.display().to_string(),
                key: reference,
                found: shape,
                ours: our.clone(),
                expected: our_shape.clone(),
                rule: rule.to_string(),
            })));
        };
        tensors.push(bridge::from_data(TensorData::new(v, s), our.clone(), None));
        used.insert(reference.clone());
        report.mapped.push(Mapped {
            reference,
            ours: our.clone(),
            rule,
        });
    }
    let mut unused: Vec<&String> = src.tensors.keys().filter(|k| !used.contains(*k)).collect();
    unused.sort();
    report.unused_in_checkpoint = unused
        .into_iter()
        .map(|k| Skipped {
            name: k.clone(),
            reason: unused_reason(k),
        })
        .collect();

    let expected: BTreeSet<String> = report.mapped.iter().map(|m| m.ours.clone()).collect();
    let result = model.apply(tensors, None, None, false);
    let applied: BTreeSet<String> = result.applied.iter().cloned().collect();
    if !result.errors.is_empty() || applied != expected {
        return Err(src.err(format!(
            "applying the converted tensors failed: errors {:?}, not applied {:?}",
            result.errors,
            expected.difference(&applied).collect::<Vec<_>>()
        )));
    }
    Ok(report)
}
