//! Probes of a trained HippoFormer on one document: what its salience gate tags, and how its
//! memory fills and ages as the document streams through. Both read the model only.

use burn::tensor::Device;
use hippo_data::{SegmentBatch, Segments};
use hippo_gemma::GemmaTokenizer;
use hippo_model::{HippoFormer, StreamRunner};
use serde::{Deserialize, Serialize};

use crate::{EvalError, Result, to_host_f32};

/// The salience of each token of one passage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaliencePassage {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Its salience in `[0, 1]`.
    pub salience: Vec<f32>,
}

/// Memory-buffer state after each segment of one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferTrace {
    /// Occupied fraction of the slots after each segment.
    pub utilisation: Vec<f64>,
    /// Mean effective priority of the occupied slots after each segment.
    pub mean_priority: Vec<f64>,
    /// Writes accepted into the buffer at each segment.
    pub accepted_writes: Vec<f64>,
}

/// Salience of `model` over the first `max_tokens` tokens of `doc` (at most one segment of
/// `seq_len`), read as a document's first segment, with each token's text from `tokenizer`.
pub fn salience_passage(
    model: &HippoFormer,
    tokenizer: &GemmaTokenizer,
    doc: &[u32],
    seq_len: usize,
    max_tokens: usize,
    device: &Device,
) -> Result<SaliencePassage> {
    let ids: Vec<u32> = doc.iter().copied().take(seq_len.min(max_tokens)).collect();
    let segment = Segments::of_document(&ids, model.segment_layout(ids.len().max(2)))
        .next()
        .ok_or_else(|| EvalError::Options("the passage has no token".into()))?;
    let mut run = StreamRunner::new(model, 1, device);
    let step = run.read(&SegmentBatch::single(&segment, 0))?;
    let salience = to_host_f32(step.output.salience.salience.clone())?;
    let tokens = ids
        .iter()
        .map(|&i| tokenizer.decode(&[i]).unwrap_or_default())
        .collect();
    Ok(SaliencePassage { tokens, salience })
}

/// The buffer after each segment of `doc` streamed through `model` in segments of `seq_len`.
pub fn buffer_trace(
    model: &HippoFormer,
    doc: &[u32],
    seq_len: usize,
    device: &Device,
) -> Result<BufferTrace> {
    let mut run = StreamRunner::new(model, 1, device);
    let mut trace = BufferTrace {
        utilisation: Vec::new(),
        mean_priority: Vec::new(),
        accepted_writes: Vec::new(),
    };
    for seg in Segments::of_document(doc, model.segment_layout(seq_len)) {
        let step = run.read(&SegmentBatch::single(&seg, 0))?;
        let outcome = run.write(&step)?;
        let stats = model.memory.stats(run.state()?);
        trace.utilisation.push(stats.utilisation);
        trace.mean_priority.push(stats.mean_effective_priority);
        trace
            .accepted_writes
            .push(outcome.map_or(0.0, |o| o.n_accepted.sum().into_scalar::<i64>() as f64));
    }
    Ok(trace)
}
