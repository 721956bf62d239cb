//! LoRA adapters on Gemma's projections, using Burn's built-in [`Lora`] reparameterisation.
//!
//! `W_eff = W + (α/r) · A·B` with `A [in, r] ~ N(0, 1/r)` and `B [r, out] = 0`, so an adapted
//! model starts exactly equal to its base. Applying LoRA freezes every base parameter (no
//! gradient, hence no optimizer state); only the factors train. The tied embedding is never
//! adapted: targets are matched by a regex over the projection paths only.
//!
//! Adapter dropout is not supported: Burn's LoRA composes the weight (`W + ΔW`) rather than
//! running a side branch on the input, so there is no input to drop out. Callers reject a
//! non-zero dropout instead of ignoring it.

use std::path::Path;

use burn::module::{Lora, Module, ParamGroup};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::FloatDType;

use crate::error::{GemmaError, Result};
use crate::model::Gemma;

/// The projections LoRA can target.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which projections to adapt, and how.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSettings {
    /// Rank r.
    pub rank: usize,
    /// Scale numerator α (the update is scaled by α/r).
    pub alpha: f64,
    /// Projection names (subset of [`TARGETS`]).
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

impl LoraSettings {
    /// Checks rank, alpha and target names.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GemmaError::config("lora settings", m));
        if self.rank == 0 {
            return bad("lora rank must be > 0".into());
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            return bad(format!("lora alpha must be > 0, got {}", self.alpha));
        }
        if self.targets.is_empty() {
            return bad("lora targets are empty".into());
        }
        for t in &self.targets {
            if !TARGETS.contains(&t.as_str()) {
                return bad(format!(
                    "unknown lora target `{t}` (valid: {})",
                    TARGETS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The regex over module paths (`layers.N.self_attn.q_proj.weight`, …) this selects.
    pub fn path_regex(&self) -> String {
        format!(
            r"^layers\.\d+\.(self_attn|mlp)\.({})\.weight$",
            self.targets.join("|")
        )
    }
}

/// Attaches adapters and freezes every base parameter. The factors are f32 whatever dtype the
/// base weights are stored in (Burn would otherwise build them at the base's dtype, e.g. bf16
/// after [`Gemma::with_precision`]): they are the masters the optimizer updates.
pub fn apply(model: Gemma, settings: &LoraSettings) -> Result<Gemma> {
    settings.validate()?;
    let group = ParamGroup::from_regex(settings.path_regex())
        .map_err(|e| GemmaError::config("lora settings", format!("{e:?}")))?;
    let lora = Lora::new(settings.rank, settings.alpha)
        .set_dtype(FloatDType::F32)
        .set_param_group(group);
    Ok(model.apply_lora(lora))
}

/// A copy with the adapters folded into the base weights (`W + ΔW`); the input stays unmerged.
pub fn merged(model: &Gemma) -> Gemma {
    model.clone().materialize()
}

/// Regex selecting the adapter factors in a module snapshot.
const ADAPTER_KEYS: &str = r"\.lora\.(a|b)$";

/// Saves only the adapter factors (safetensors).
pub fn save_adapters(model: &Gemma, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(ADAPTER_KEYS)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| GemmaError::corrupt(path, format!("saving LoRA adapters: {e:?}")))
}

/// Loads adapter factors saved by [`save_adapters`] into a model with the same adapters attached.
/// Returns the number of tensors loaded; an adapter missing from the file is an error.
pub fn load_adapters(model: Gemma, path: &Path) -> Result<(Gemma, usize)> {
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(ADAPTER_KEYS)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| GemmaError::corrupt(path, format!("loading LoRA adapters: {e:?}")))?;
    let missing: Vec<&String> = result
        .missing
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".lora.a") || p.ends_with(".lora.b"))
        .collect();
    if !missing.is_empty() || !result.errors.is_empty() {
        return Err(GemmaError::corrupt(
            path,
            format!(
                "adapter file does not match the model: missing {missing:?}, errors {:?}",
                result.errors
            ),
        ));
    }
    Ok((model, result.applied.len()))
}
