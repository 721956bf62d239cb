//! The one streaming loop: a document stream's host batches in, segment outputs out, the memory
//! carried per stream in between.
//!
//! Each batch row carries one document across consecutive batches (hippo-data's
//! `StreamBatcher`). For every batch, [`StreamRunner::read`] empties the rows whose
//! `reset` flag says a new document starts there, converts the batch to tensors and runs
//! [`HippoFormer::forward`] on the memory as it stands; [`StreamRunner::write`] then commits
//! that segment ([`HippoFormer::commit`]). Reading before writing is what keeps the memory
//! causal: a segment never sees its own entries. Training, validation, evaluation,
//! calibration and the demo's probes all go through this loop, so they agree step for step.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_data::SegmentBatch;
use hippo_memory::{MemoryState, WriteOutcome};

use crate::error::{HippoError, Result};
use crate::model::{HippoFormer, SegmentOutput};

/// A host batch as tensors.
///
/// # Shapes
/// - `ids`: `[B, L]` input ids (pads are 0);
/// - `valid`: `[B, L]`, false at pads;
/// - `targets`: `[B, L]`, the next token, or −100 (`IGNORE_INDEX`) where nothing is scored;
/// - `recurs_in`: `[B, L]`, hippo-data's training-only recurrence label (how many later
///   targets of the document come before this position's target recurs; −1: never).
#[derive(Debug, Clone)]
pub struct SegmentTensors {
    /// Input ids `[B, L]`.
    pub ids: Tensor<2, Int>,
    /// Real (non-pad) positions `[B, L]`.
    pub valid: Tensor<2, Bool>,
    /// Targets `[B, L]` (−100 where not scored).
    pub targets: Tensor<2, Int>,
    /// When each target recurs after its segment `[B, L]` (−1: never); read only by the
    /// salience gate's usefulness loss under `usefulness_target = "recurrence"`.
    pub recurs_in: Tensor<2, Int>,
}

impl SegmentTensors {
    /// The tensors of `batch` on `device`.
    pub fn new(batch: &SegmentBatch, device: &Device) -> Self {
        let (b, l) = (batch.batch_size(), batch.seq_len());
        let valid: Vec<bool> = batch.valid.iter().flatten().copied().collect();
        Self {
            ids: Tensor::from_data(TensorData::new(batch.input_ids_flat(), [b, l]), device),
            valid: Tensor::from_data(TensorData::new(valid, [b, l]), device),
            targets: Tensor::from_data(TensorData::new(batch.targets_flat(), [b, l]), device),
            recurs_in: Tensor::from_data(TensorData::new(batch.recurs_in_flat(), [b, l]), device),
        }
    }

    /// The targets `[B, L]` with −100 replaced by 0, for gathers (mask the result by the
    /// batch's targets).
    pub fn gather_targets(&self) -> Tensor<2, Int> {
        self.targets.clone().clamp_min(0)
    }
}

/// One segment batch read by a [`StreamRunner`]: its tensors and the model's output.
#[derive(Debug, Clone)]
pub struct StreamStep {
    /// The batch as tensors.
    pub tensors: SegmentTensors,
    /// What the model produced on it, from the memory before this segment.
    pub output: SegmentOutput,
}

/// The memory of a set of document streams, carried across their segments: reset between
/// documents → read (forward) → write (commit) → optionally detach.
#[derive(Debug)]
pub struct StreamRunner<'m> {
    model: &'m HippoFormer,
    state: Option<MemoryState>,
    device: Device,
    detach: bool,
}

impl<'m> StreamRunner<'m> {
    /// `streams` empty streams on `device`.
    pub fn new(model: &'m HippoFormer, streams: usize, device: &Device) -> Self {
        Self::from_state(model, model.empty_state(streams, device), device)
    }

    /// Continues streams whose memory is `state`; batches go to `device` (the model's and the
    /// state's).
    pub fn from_state(model: &'m HippoFormer, state: MemoryState, device: &Device) -> Self {
        Self {
            model,
            state: Some(state),
            device: device.clone(),
            detach: false,
        }
    }

    /// Detach the memory from the autodiff graph after every write (training: no
    /// backpropagation into earlier segments).
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// The model this runner drives.
    pub fn model(&self) -> &'m HippoFormer {
        self.model
    }

    /// The memory as it stands.
    pub fn state(&self) -> Result<&MemoryState> {
        self.state.as_ref().ok_or_else(lost)
    }

    /// The memory, ending the run.
    pub fn into_state(self) -> Result<MemoryState> {
        self.state.ok_or_else(lost)
    }

    /// Empties the rows of `batch` that start a new document, then runs the forward on it
    /// against the memory of the earlier segments. Nothing is written: call [`Self::write`]
    /// with the result once the segment has been used.
    pub fn read(&mut self, batch: &SegmentBatch) -> Result<StreamStep> {
        let state = self.state.take().ok_or_else(lost)?;
        let state = reset_new_documents(state, batch)?;
        let tensors = SegmentTensors::new(batch, &self.device);
        let output = self
            .model
            .forward(tensors.ids.clone(), tensors.valid.clone(), &state);
        self.state = Some(state);
        Ok(StreamStep {
            tensors,
            output: output?,
        })
    }

    /// Commits the segment `step` read into the memory (detached if [`Self::detached`]).
    pub fn write(&mut self, step: &StreamStep) -> Result<Option<WriteOutcome>> {
        let state = self.state.take().ok_or_else(lost)?;
        let (state, outcome) = self.model.commit(state, &step.output)?;
        self.state = Some(if self.detach { state.detach() } else { state });
        Ok(outcome)
    }
}

/// Empties the memory of the rows whose stream starts a new document in `batch`
/// (`batch.reset`).
pub fn reset_new_documents(state: MemoryState, batch: &SegmentBatch) -> Result<MemoryState> {
    let rows: Vec<usize> = (0..batch.batch_size())
        .filter(|&r| batch.reset[r])
        .collect();
    if rows.is_empty() {
        return Ok(state);
    }
    Ok(state.reset_row_indices(&rows)?)
}

fn lost() -> HippoError {
    HippoError::InvalidInput(
        "the stream's memory was lost: an earlier read or write failed, start a new runner".into(),
    )
}
