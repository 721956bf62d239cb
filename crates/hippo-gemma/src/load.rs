//! Resolving a model argument (directory, `.gguf` file or Hugging Face repo id in the local cache)
//! and loading it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::config::GemmaConfig;
use crate::error::{GemmaError, Result};
use crate::model::Gemma;
use crate::weights::{GgufWeights, SafetensorsWeights};

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A Hugging Face checkpoint directory (`config.json` + safetensors).
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl ModelLocation {
    /// The path itself.
    pub fn path(&self) -> &Path {
        match self {
            Self::HfDir(p) | Self::Gguf(p) => p,
        }
    }

    /// The `tokenizer.json` beside the model, if there is one.
    pub fn default_tokenizer(&self) -> Option<PathBuf> {
        let dir = match self {
            Self::HfDir(d) => d.clone(),
            Self::Gguf(f) => f.parent()?.to_path_buf(),
        };
        let t = dir.join("tokenizer.json");
        t.exists().then_some(t)
    }
}

/// The Hugging Face hub cache dir: `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> Option<PathBuf> {
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(v) = std::env::var_os(var) {
            return Some(PathBuf::from(v));
        }
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Resolves a model argument offline (a path, or a repo id in [`hf_cache_dir`]).
pub fn resolve(arg: &str) -> Result<ModelLocation> {
    resolve_in(arg, hf_cache_dir())
}

/// [`resolve`] with an explicit Hugging Face cache dir.
pub fn resolve_in(arg: &str, cache: Option<PathBuf>) -> Result<ModelLocation> {
    let path = Path::new(arg);
    if path.is_file() {
        return if path.extension().is_some_and(|e| e == "gguf") {
            Ok(ModelLocation::Gguf(path.to_path_buf()))
        } else if path.file_name().is_some_and(|n| n == "config.json") {
            Ok(ModelLocation::HfDir(
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            ))
        } else {
            Err(GemmaError::ModelNotFound(format!(
                "{arg} is a file but neither a .gguf nor a config.json"
            )))
        };
    }
    if path.is_dir() {
        if path.join("config.json").exists() {
            return Ok(ModelLocation::HfDir(path.to_path_buf()));
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| GemmaError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        return match ggufs.as_slice() {
            [one] => Ok(ModelLocation::Gguf(one.clone())),
            [] => Err(GemmaError::ModelNotFound(format!(
                "{arg} holds neither config.json nor a .gguf file"
            ))),
            many => Err(GemmaError::ModelNotFound(format!(
                "{arg} holds {} .gguf files; name one",
                many.len()
            ))),
        };
    }
    if arg.split('/').count() == 2
        && let Some(cache_dir) = &cache
    {
        let repo = hf_hub::Cache::new(cache_dir.clone()).model(arg.to_string());
        if let Some(cfg) = repo.get("config.json")
            && let Some(dir) = cfg.parent()
        {
            return Ok(ModelLocation::HfDir(dir.to_path_buf()));
        }
    }
    Err(GemmaError::ModelNotFound(format!(
        "`{arg}` is not a directory, not a .gguf file, and not a repo id in the Hugging Face cache \
         ({}). Run `cargo xtask assets` for the default Gemma-3-270M, pass a checkpoint directory \
         (config.json + safetensors) or a .gguf file, or download the repo into the HF cache \
         (HF_HOME / HF_HUB_CACHE) on a machine with access to the Hub.",
        cache
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| "no cache dir: HOME is unset".into())
    )))
}

/// A model with its config and where it came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub model: Gemma,
    /// Where its files are.
    pub location: ModelLocation,
}

/// Reads only the config of a model location.
pub fn load_config(location: &ModelLocation) -> Result<GemmaConfig> {
    match location {
        ModelLocation::HfDir(dir) => GemmaConfig::from_hf_file(&dir.join("config.json")),
        ModelLocation::Gguf(f) => Ok(GgufWeights::open(f)?.config().clone()),
    }
}

/// Resolves and loads a model onto `device`.
pub fn load(arg: &str, device: &Device) -> Result<LoadedModel> {
    let location = resolve(arg)?;
    let model = load_from(&location, device)?;
    Ok(LoadedModel { model, location })
}

/// Loads a resolved model onto `device`.
pub fn load_from(location: &ModelLocation, device: &Device) -> Result<Gemma> {
    match location {
        ModelLocation::HfDir(dir) => {
            let config = GemmaConfig::from_hf_file(&dir.join("config.json"))?;
            let src = SafetensorsWeights::open_dir(dir)?;
            Gemma::from_weights(&config, &src, device)
        }
        ModelLocation::Gguf(f) => {
            let src = GgufWeights::open(f)?;
            let config = src.config().clone();
            Gemma::from_weights(&config, &src, device)
        }
    }
}

/// The project's asset cache: `$HIPPO_HOME`, else `$XDG_CACHE_HOME/hippoformer`, else
/// `~/.cache/hippoformer` (where `cargo xtask assets` puts the default model and corpora).
pub use hippo_data::hippo_home;

/// The default base model: Gemma-3-270M (GGUF Q4_K_M) in the asset cache.
pub fn default_model_path() -> Option<PathBuf> {
    hippo_home().map(|h| h.join("gemma-3-270m").join("gemma-3-270m-q4_k_m.gguf"))
}
