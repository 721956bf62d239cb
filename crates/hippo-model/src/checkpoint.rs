//! Checkpoints of a HippoFormer's trainable part, in Burn's record format (burnpack).
//!
//! A checkpoint is a directory:
//!
//! * `model.bpk`: a [`ModuleRecord`] of the parameters [`trainable_group`] selects — the
//!   salience gate, the drift calibrator (`A`, `b` and its [`RunningState`] anchors and running
//!   statistics), the memory projections, the output fusion and the LoRA factors
//!   (`….lora.a`, `….lora.b`). Frozen base weights are never written: a checkpoint names its
//!   base instead. (With `freeze_base = false` and no LoRA, the whole base trains, and then it is
//!   saved too.) Records keep each parameter's [`ParamId`](burn::module::ParamId), so optimizer
//!   state keyed by id (Burn's `OptimizerRecord`) still matches after loading.
//! * `config.toml`: the effective [`HippoFormerConfig`].
//! * `meta.json`: [`CheckpointMeta`] — format version, step, and the base as a path plus a
//!   fingerprint ([`base_fingerprint`]: sha256 of the model file, or, for a Hugging Face
//!   directory, of `config.json` and every `*.safetensors` file). Loading over a base with
//!   another fingerprint is [`HippoError::Checkpoint`]. Since format 2 it also holds the sha256
//!   of every other file of the directory (the trainer's optimizer, memory and state files too),
//!   and it is written last, atomically, after those files are fsynced
//!   ([`crate::integrity`]); every load verifies them first and refuses a corrupt or missing
//!   file by name. Format 1 (no hashes) still loads, with a warning.
//!
//! [`RunningState`]: burn::module::RunningState

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};
use hippo_gemma::Gemma;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::HippoFormerConfig;
use crate::error::{HippoError, Result};
use crate::integrity;
use crate::model::HippoFormer;

/// Version of the checkpoint layout (2: `meta.json` records every file's sha256).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest layout this build reads (1: no file hashes; loaded unverified, with a warning).
pub const OLDEST_FORMAT: u32 = 1;
/// The record of the trainable parameters.
pub const MODEL_FILE: &str = "model.bpk";
/// The effective configuration.
pub const CONFIG_FILE: &str = "config.toml";
/// [`CheckpointMeta`] as JSON.
pub const META_FILE: &str = "meta.json";

/// Regex of the parameter paths a checkpoint holds when the base is frozen.
pub const TRAINABLE_REGEX: &str =
    r"^(gate|drift|memory|fusion|mix)\.|^attention_weight$|\.lora\.(a|b)$";
/// Regex of the LoRA factors.
pub const LORA_REGEX: &str = r"\.lora\.(a|b)$";
/// The drift calibrator's affine correction `A`, `b` (see [`drift_group`]).
pub const DRIFT_REGEX: &str = r"^drift\.(a|b)$";

/// The base model a checkpoint was trained over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// The path it was loaded from (informational; the fingerprint decides).
    pub path: String,
    /// `sha256:<hex>` of its files ([`base_fingerprint`]).
    pub fingerprint: String,
}

impl BaseRef {
    /// The reference of the base at `path` (computes its fingerprint: ~1 s per 250 MB).
    pub fn of(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.display().to_string(),
            fingerprint: base_fingerprint(path)?,
        })
    }
}

/// What `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// Optimizer steps taken when it was written.
    pub step: u64,
    /// The base model.
    pub base: BaseRef,
    /// Tensors in `model.bpk`.
    pub tensors: usize,
    /// sha256 (hex) of every other file of the checkpoint directory, by file name (format 2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> HippoError {
    HippoError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<u64> {
    let mut file = std::fs::File::open(path).map_err(|e| ckpt_err(path, e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ckpt_err(path, e.to_string()))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// `sha256:<hex>` of a base model: of the file itself (`.gguf`, or any single file), or, for a
/// directory, of `config.json` followed by every `*.safetensors` file in name order (each
/// preceded by its name and length).
pub fn base_fingerprint(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ckpt_err(path, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        let config = path.join("config.json");
        if !config.is_file() {
            return Err(ckpt_err(path, "base model directory has no config.json"));
        }
        for f in std::iter::once(config).chain(files) {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let len = std::fs::metadata(&f)
                .map_err(|e| ckpt_err(&f, e.to_string()))?
                .len();
            hasher.update(name.as_bytes());
            hasher.update(len.to_le_bytes());
            hash_file(&mut hasher, &f)?;
        }
    } else {
        hash_file(&mut hasher, path)?;
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The parameters a checkpoint of a model with `config` holds: everything but the frozen base
/// (the LoRA factors included); the whole model when the base itself trains.
pub fn trainable_group(config: &HippoFormerConfig) -> Result<ParamGroup> {
    if !config.freeze_base && !config.use_lora {
        return Ok(ParamGroup::all());
    }
    ParamGroup::from_regex(TRAINABLE_REGEX)
        .map_err(|e| HippoError::InvalidInput(format!("trainable regex: {e:?}")))
}

/// The LoRA factors (for a separate learning rate).
pub fn lora_group() -> Result<ParamGroup> {
    ParamGroup::from_regex(LORA_REGEX)
        .map_err(|e| HippoError::InvalidInput(format!("LoRA regex: {e:?}")))
}

/// The drift calibrator's `A` and `b` (for a separate learning rate).
pub fn drift_group() -> Result<ParamGroup> {
    ParamGroup::from_regex(DRIFT_REGEX)
        .map_err(|e| HippoError::InvalidInput(format!("drift regex: {e:?}")))
}

/// Paths of the float parameters (and running states) `group` selects.
struct GroupPaths<'a> {
    group: &'a ParamGroup,
    path: Vec<String>,
    found: Vec<(String, usize)>,
}

impl ModuleVisitor for GroupPaths<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        if self.group.matches(&param.id, Some(&path)) {
            let n = param.lazy_shape().num_elements();
            self.found.push((path, n));
        }
    }
}

/// Paths and element counts of the tensors a checkpoint of `model` holds.
pub fn checkpoint_tensors(model: &HippoFormer) -> Result<Vec<(String, usize)>> {
    let group = trainable_group(&model.config)?;
    let mut v = GroupPaths {
        group: &group,
        path: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut v);
    Ok(v.found)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| ckpt_err(path, e.to_string()))
}

/// Folds pending [`RunningState`] updates into their values.
///
/// `RunningState::update` parks a new value per thread and only `value_sync` (or the next
/// update) folds it in, while the record collector reads the folded value: without this, a
/// checkpoint would hold the drift statistics one update behind.
///
/// [`RunningState`]: burn::module::RunningState
pub fn sync_running_state(model: &HippoFormer) {
    let d = &model.drift;
    let _ = d.anchors.value_sync();
    let _ = d.anchor_valid.value_sync();
    let _ = d.running_mean.value_sync();
    let _ = d.running_var.value_sync();
}

/// Writes `model`'s trainable part, its config and `meta` into `dir` (created if needed;
/// files there are overwritten): [`write_parts`] then [`seal`]. Callers wanting atomicity of
/// the whole directory write to a temporary directory and rename it (the trainer does).
pub fn save(model: &HippoFormer, dir: &Path, step: u64, base: &BaseRef) -> Result<CheckpointMeta> {
    let tensors = write_parts(model, dir)?;
    seal(dir, step, base, tensors)
}

/// Writes `model.bpk` and `config.toml` into `dir` (created if needed), not yet `meta.json`:
/// the caller may add files, then calls [`seal`]. Returns the number of tensors written.
pub fn write_parts(model: &HippoFormer, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, e.to_string()))?;
    // A stale meta.json must not vouch for the files about to be replaced.
    let meta = dir.join(META_FILE);
    if meta.exists() {
        std::fs::remove_file(&meta).map_err(|e| ckpt_err(&meta, e.to_string()))?;
    }
    sync_running_state(model);
    let group = trainable_group(&model.config)?;
    let record = model.clone().into_record_group(group);
    let tensors = record.len();
    let file = dir.join(MODEL_FILE);
    record
        .save(&file)
        .map_err(|e| ckpt_err(&file, format!("writing the record: {e}")))?;
    write_text(&dir.join(CONFIG_FILE), &model.config.to_toml())?;
    Ok(tensors)
}

/// Completes a checkpoint directory: fsyncs and hashes every file in it, then writes
/// `meta.json` (with the hashes) atomically and fsyncs the directory ([`crate::integrity`]).
pub fn seal(dir: &Path, step: u64, base: &BaseRef, tensors: usize) -> Result<CheckpointMeta> {
    let files = integrity::seal(dir, META_FILE)?;
    let meta = CheckpointMeta {
        format: FORMAT_VERSION,
        step,
        base: base.clone(),
        tensors,
        files,
    };
    let path = dir.join(META_FILE);
    let json = serde_json::to_string_pretty(&meta).map_err(|e| ckpt_err(&path, e.to_string()))?;
    integrity::write_atomic(&path, json.as_bytes())?;
    Ok(meta)
}

/// Reads `meta.json` and checks every file it records against its sha256: the check every load
/// makes first. An error names the corrupt or missing file.
pub fn verify(dir: &Path) -> Result<CheckpointMeta> {
    let meta = read_meta(dir)?;
    if meta.format >= 2 {
        if meta.files.is_empty() {
            return Err(ckpt_err(
                &dir.join(META_FILE),
                "records no file hashes (damaged meta.json)",
            ));
        }
        integrity::verify(dir, &meta.files)?;
    } else {
        tracing::warn!(
            checkpoint = %dir.display(),
            format = meta.format,
            "checkpoint format without file hashes: loaded unverified"
        );
    }
    Ok(meta)
}

/// Reads `meta.json` of a checkpoint directory.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ckpt_err(&path, format!("not a checkpoint directory: {e}")))?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| ckpt_err(&path, e.to_string()))?;
    if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&meta.format) {
        return Err(ckpt_err(
            &path,
            format!(
                "format version {} (this build reads {OLDEST_FORMAT} to {FORMAT_VERSION})",
                meta.format
            ),
        ));
    }
    Ok(meta)
}

/// Reads the config a checkpoint was trained with; when `meta.json` records its hash, the file
/// is checked first (a damaged config is refused as corrupt rather than parsed).
pub fn read_config(dir: &Path) -> Result<HippoFormerConfig> {
    let path = dir.join(CONFIG_FILE);
    if let Ok(meta) = read_meta(dir)
        && let Some(want) = meta.files.get(CONFIG_FILE)
    {
        integrity::verify(
            dir,
            &BTreeMap::from([(CONFIG_FILE.to_string(), want.clone())]),
        )?;
    }
    HippoFormerConfig::from_toml_file(&path)
}

/// The config without the fields that do not shape the trainable part or its meaning: the base
/// model's name (the fingerprint decides about the base).
fn comparable(config: &HippoFormerConfig) -> HippoFormerConfig {
    HippoFormerConfig {
        base_model: String::new(),
        ..config.clone()
    }
}

/// Loads a checkpoint into `model`, whose base must have fingerprint `base.fingerprint` and
/// whose config must equal the checkpoint's (but for `base_model`): what resuming and
/// evaluating a checkpoint need.
pub fn load_into(
    model: HippoFormer,
    dir: &Path,
    base: &BaseRef,
) -> Result<(HippoFormer, CheckpointMeta)> {
    let meta = verify(dir)?;
    let saved = read_config(dir)?;
    if comparable(&saved) != comparable(&model.config) {
        return Err(ckpt_err(
            dir,
            format!(
                "the checkpoint's config.toml differs from the model's config in {}; build the \
                 model from the checkpoint's config (checkpoint::load), or load only its \
                 weights (checkpoint::load_weights_into)",
                config_differences(&saved, &model.config).join(", ")
            ),
        ));
    }
    load_verified(model, dir, meta, base)
}

/// The top-level config fields (but `base_model`) whose values differ between `a` and `b`,
/// sorted by name.
pub fn config_differences(a: &HippoFormerConfig, b: &HippoFormerConfig) -> Vec<String> {
    let table = |c: &HippoFormerConfig| -> toml::Table {
        toml::from_str(&comparable(c).to_toml()).unwrap_or_default()
    };
    let (a, b) = (table(a), table(b));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Loads a checkpoint's tensors into `model`, whose config may differ from the checkpoint's
/// (a variant of it: another buffer size, salience mode, decay, …) as long as the model has the
/// same trainable tensors: the same count, names and shapes (an extra, missing or misshapen
/// tensor is an error naming it). The base must have fingerprint `base.fingerprint`. What
/// `train --init-from` and `ablate --init-from` do: start a variant from trained weights.
pub fn load_weights_into(
    model: HippoFormer,
    dir: &Path,
    base: &BaseRef,
) -> Result<(HippoFormer, CheckpointMeta)> {
    let meta = verify(dir)?;
    load_verified(model, dir, meta, base)
}

/// [`load_weights_into`] after [`verify`] gave `meta`.
fn load_verified(
    model: HippoFormer,
    dir: &Path,
    meta: CheckpointMeta,
    base: &BaseRef,
) -> Result<(HippoFormer, CheckpointMeta)> {
    if meta.base.fingerprint != base.fingerprint {
        return Err(ckpt_err(
            dir,
            format!(
                "trained over the base model {} ({}), but the base given is {} ({}); load it \
                 over the base it was trained on",
                meta.base.path, meta.base.fingerprint, base.path, base.fingerprint
            ),
        ));
    }
    let expected = checkpoint_tensors(&model)?;
    let file = dir.join(MODEL_FILE);
    let record = ModuleRecord::load(&file).map_err(|e| ckpt_err(&file, e.to_string()))?;
    if record.len() != expected.len() || meta.tensors != expected.len() {
        return Err(ckpt_err(
            &file,
            format!(
                "holds {} tensors (meta: {}), the model has {} trainable ones",
                record.len(),
                meta.tensors,
                expected.len()
            ),
        ));
    }
    // Partial: the base's frozen weights are not in the file (checked by count above); an
    // extra or misshapen tensor is still an error.
    let model = model
        .try_load_record(record.allow_partial(true))
        .map_err(|e| ckpt_err(&file, e.to_string()))?;
    Ok((model, meta))
}

/// Builds a HippoFormer over `base` (loaded from `base_path`) with the checkpoint's config and
/// loads the checkpoint into it.
pub fn load(
    base: Gemma,
    base_path: &Path,
    dir: &Path,
    device: &Device,
) -> Result<(HippoFormer, CheckpointMeta)> {
    let config = read_config(dir)?;
    let base_ref = BaseRef::of(base_path)?;
    let model = HippoFormer::new(base, config, device)?;
    load_into(model, dir, &base_ref)
}
