//! Training checkpoints on disk: the model checkpoint ([`hippo_model::checkpoint`]) plus the
//! optimizer record, the per-stream memory state and the trainer's own state, written
//! atomically into `<output>/checkpoints/step-NNNNNNNN/`.
//!
//! A checkpoint is first written to `checkpoints/.tmp-step-NNNNNNNN/` (every file fsynced),
//! then renamed into place; only then are old checkpoints beyond `keep_last` deleted. A failure
//! anywhere before the rename leaves the previous checkpoints untouched.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_memory::MemoryState;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::TrainError;
use hippo_data::BatcherState;

/// The optimizer record (burnpack).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The per-stream memory state (safetensors).
pub const MEMORY_FILE: &str = "memory.safetensors";
/// [`TrainerState`] as JSON.
pub const TRAINER_FILE: &str = "trainer.json";
/// Version of [`TrainerState`]'s layout.
pub const TRAINER_FORMAT: u32 = 1;

/// Everything but tensors that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// [`TRAINER_FORMAT`].
    pub format: u32,
    /// Optimizer steps taken.
    pub step: usize,
    /// Total steps of the schedule.
    pub total_steps: usize,
    /// Seed of shuffling and of the per-step dropout RNG.
    pub seed: u64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Where the training stream stands.
    pub batcher: BatcherState,
    /// Real input tokens trained on so far.
    pub tokens: u64,
    /// Training wall time so far, seconds (validation excluded).
    pub train_seconds: f64,
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn ck(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Name of the checkpoint directory of `step`.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn parse_step(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Complete checkpoints under `root`, oldest first.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| io(root, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = parse_step(&name)?;
            let p = e.path();
            (p.join(TRAINER_FILE).is_file() && p.join(hippo_model::checkpoint::META_FILE).is_file())
                .then_some((step, p))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint under `root`.
pub fn latest_checkpoint(root: &Path) -> Result<Option<(usize, PathBuf)>, TrainError> {
    Ok(list_checkpoints(root)?.pop())
}

/// The newest checkpoint under `root` whose files all verify against the hashes in its
/// `meta.json` ([`hippo_model::checkpoint::verify`]). Each newer one that does not verify is
/// logged (which, and why) and moved aside to `.corrupt-step-NNNNNNNN` (kept for inspection,
/// never resumed from, never counted by `keep_last`). `None` if there are no checkpoints; an
/// error if there are some and none verifies.
pub fn latest_verified_checkpoint(root: &Path) -> Result<Option<(usize, PathBuf)>, TrainError> {
    let all = list_checkpoints(root)?;
    if all.is_empty() {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    for (step, dir) in all.into_iter().rev() {
        match hippo_model::checkpoint::verify(&dir) {
            Ok(_) => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        checkpoint = %dir.display(),
                        skipped = skipped.len(),
                        "resuming from an older checkpoint: the newer ones did not verify"
                    );
                }
                return Ok(Some((step, dir)));
            }
            Err(e) => {
                let aside = root.join(format!(".corrupt-{}", step_dir_name(step)));
                let _ = std::fs::remove_dir_all(&aside);
                let moved = std::fs::rename(&dir, &aside).is_ok();
                tracing::warn!(
                    checkpoint = %dir.display(),
                    moved_to = %if moved { aside.display().to_string() } else { "-".into() },
                    "skipping a checkpoint that does not verify: {e}"
                );
                skipped.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    Err(ck(
        root,
        format!(
            "no checkpoint verifies, so there is nothing to resume from: {}",
            skipped.join("; ")
        ),
    ))
}

fn fsync_dir_files(dir: &Path) -> Result<(), TrainError> {
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let p = e.map_err(|e| io(dir, e))?.path();
        if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&p, e))?;
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a checkpoint for `step` atomically: `write` fills a temporary directory, which is
/// then renamed to `root/step-NNNNNNNN` (replacing one of the same step). Then only the newest
/// `keep_last` checkpoints are kept (0 keeps all).
pub fn write_atomic(
    root: &Path,
    step: usize,
    keep_last: usize,
    write: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let name = step_dir_name(step);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.is_dir() {
        // Left over by a run that died while writing.
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let filled = write(&tmp).and_then(|()| fsync_dir_files(&tmp));
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let target = root.join(&name);
    if target.exists() {
        let old = root.join(format!(".old-{name}"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&target, &old).map_err(|e| io(&target, e))?;
        std::fs::rename(&tmp, &target).map_err(|e| io(&tmp, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &target).map_err(|e| io(&tmp, e))?;
    }
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    if keep_last > 0 {
        let all = list_checkpoints(root)?;
        let excess = all.len().saturating_sub(keep_last);
        for (_, p) in all.into_iter().take(excess) {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), "could not delete an old checkpoint: {e}");
            }
        }
    }
    Ok(target)
}

/// Writes `state` as JSON.
pub fn write_trainer_state(dir: &Path, state: &TrainerState) -> Result<(), TrainError> {
    let p = dir.join(TRAINER_FILE);
    let json = serde_json::to_string_pretty(state).map_err(|e| ck(&p, e.to_string()))?;
    std::fs::write(&p, json).map_err(|e| io(&p, e))
}

/// The checkpoint directory `arg` names: itself if it holds the model checkpoint's
/// `meta.json`, else the newest complete `checkpoints/step-N` of a training output directory.
/// Anything else is a [`TrainError::Checkpoint`] that says what `arg` is not.
pub fn resolve_checkpoint(arg: &Path) -> Result<PathBuf, TrainError> {
    let meta = hippo_model::checkpoint::META_FILE;
    if arg.join(meta).is_file() {
        return Ok(arg.to_path_buf());
    }
    if !arg.is_dir() {
        return Err(ck(arg, "is not a checkpoint: it does not exist"));
    }
    latest_checkpoint(&arg.join("checkpoints"))?.map_or_else(
        || {
            Err(ck(
                arg,
                format!(
                    "is not a checkpoint (no {meta}) nor a training output directory with \
                     checkpoints/step-N"
                ),
            ))
        },
        |(_, dir)| Ok(dir),
    )
}

/// What a checkpoint's trainer state records: the training segment length and seed; `None`
/// for a checkpoint the trainer did not write (calibrated or imported).
pub fn trained_with(dir: &Path) -> Option<(usize, u64)> {
    read_trainer_state(dir)
        .ok()
        .map(|ts| (ts.batcher.config.seq_len, ts.seed))
}

/// Reads a [`TrainerState`].
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let p = dir.join(TRAINER_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    let s: TrainerState = serde_json::from_str(&text).map_err(|e| ck(&p, e.to_string()))?;
    if s.format != TRAINER_FORMAT {
        return Err(ck(
            &p,
            format!("format {} (this build reads {TRAINER_FORMAT})", s.format),
        ));
    }
    Ok(s)
}

fn f32_bytes(t: TensorData) -> Result<Vec<u8>, String> {
    let v: Vec<f32> = t
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Saves a memory state bit-exactly (f32 states, priorities, ages, positions and any payload;
/// u8 validity; i64 write counts and stored next tokens).
pub fn save_memory(state: &MemoryState, path: &Path) -> Result<(), TrainError> {
    let err = |m: String| ck(path, format!("saving the memory state: {m}"));
    let [b, m, d] = state.states.dims();
    let states = f32_bytes(state.states.to_data()).map_err(err)?;
    let priorities = f32_bytes(state.priorities.to_data()).map_err(err)?;
    let ages = f32_bytes(state.ages.to_data()).map_err(err)?;
    let valid: Vec<u8> = state.valid.to_data().iter::<bool>().map(u8::from).collect();
    let writes: Vec<u8> = state
        .accepted_writes
        .to_data()
        .convert::<i64>()
        .iter::<i64>()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let next: Vec<u8> = state
        .next_tokens
        .to_data()
        .convert::<i64>()
        .iter::<i64>()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let positions = f32_bytes(state.positions.to_data()).map_err(err)?;
    let payload = match &state.payload {
        Some(p) => Some((p.dims(), f32_bytes(p.to_data()).map_err(err)?)),
        None => None,
    };
    fn view<'a>(
        path: &Path,
        dtype: Dtype,
        shape: Vec<usize>,
        data: &'a [u8],
    ) -> Result<TensorView<'a>, TrainError> {
        TensorView::new(dtype, shape, data).map_err(|e| ck(path, e.to_string()))
    }
    let tensors = vec![
        ("states", view(path, Dtype::F32, vec![b, m, d], &states)?),
        (
            "priorities",
            view(path, Dtype::F32, vec![b, m], &priorities)?,
        ),
        ("ages", view(path, Dtype::F32, vec![b, m], &ages)?),
        ("valid", view(path, Dtype::U8, vec![b, m], &valid)?),
        ("accepted_writes", view(path, Dtype::I64, vec![b], &writes)?),
        ("next_tokens", view(path, Dtype::I64, vec![b, m], &next)?),
        ("positions", view(path, Dtype::F32, vec![b, m], &positions)?),
    ];
    let mut tensors = tensors;
    if let Some((dims, bytes)) = &payload {
        tensors.push(("payload", view(path, Dtype::F32, dims.to_vec(), bytes)?));
    }
    safetensors::serialize_to_file(tensors, None, path).map_err(|e| ck(path, e.to_string()))
}

/// Loads a memory state saved by [`save_memory`] onto `device`; its shape must be
/// `[batch, capacity, dim]`.
pub fn load_memory(
    path: &Path,
    shape: [usize; 3],
    device: &Device,
) -> Result<MemoryState, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ck(path, e.to_string()))?;
    let get = |name: &str, dtype: Dtype, dims: &[usize]| {
        let t = st
            .tensor(name)
            .map_err(|e| ck(path, format!("{name}: {e}")))?;
        if t.dtype() != dtype || t.shape() != dims {
            return Err(ck(
                path,
                format!(
                    "{name}: expected {dtype:?} {dims:?}, found {:?} {:?} (was the batch size or \
                     buffer size changed?)",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data().to_vec())
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let [b, m, d] = shape;
    let int_dtype = Tensor::<1, Int>::zeros([1], device).dtype();
    let states = f32s(get("states", Dtype::F32, &[b, m, d])?);
    let priorities = f32s(get("priorities", Dtype::F32, &[b, m])?);
    let ages = f32s(get("ages", Dtype::F32, &[b, m])?);
    let valid: Vec<bool> = get("valid", Dtype::U8, &[b, m])?
        .into_iter()
        .map(|x| x != 0)
        .collect();
    let i64s = |b: Vec<u8>| -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    };
    let writes = i64s(get("accepted_writes", Dtype::I64, &[b])?);
    let next = i64s(get("next_tokens", Dtype::I64, &[b, m])?);
    // A state saved before positions were stored held no attention payload: zeros then.
    let positions = match st.tensor("positions") {
        Ok(_) => f32s(get("positions", Dtype::F32, &[b, m])?),
        Err(_) => vec![0.0; b * m],
    };
    let payload = match st.tensor("payload") {
        Err(_) => None,
        Ok(t) => {
            let dims = t.shape().to_vec();
            if t.dtype() != Dtype::F32 || dims.len() != 3 || dims[0] != b || dims[1] != m {
                return Err(ck(
                    path,
                    format!(
                        "payload: expected F32 [{b}, {m}, _], found {:?} {dims:?}",
                        t.dtype()
                    ),
                ));
            }
            let w = dims[2];
            Some(Tensor::<3>::from_data(
                TensorData::new(f32s(t.data().to_vec()), [b, m, w]),
                device,
            ))
        }
    };
    Ok(MemoryState {
        states: Tensor::from_data(TensorData::new(states, [b, m, d]), device),
        priorities: Tensor::from_data(TensorData::new(priorities, [b, m]), device),
        ages: Tensor::from_data(TensorData::new(ages, [b, m]), device),
        valid: Tensor::<2, Bool>::from_data(TensorData::new(valid, [b, m]), device),
        accepted_writes: Tensor::<1, Int>::from_data(
            TensorData::new(writes, [b]).convert_dtype(int_dtype),
            device,
        ),
        next_tokens: Tensor::<2, Int>::from_data(
            TensorData::new(next, [b, m]).convert_dtype(int_dtype),
            device,
        ),
        positions: Tensor::from_data(TensorData::new(positions, [b, m]), device),
        payload,
    })
}
