//! Text generation with a HippoFormer, reading the stream exactly as training and evaluation do.
//!
//! The stream — the prompt followed by the generated tokens — is cut into segments of
//! `segment_len` inputs, counted from the first prompt token, as training and evaluation cut
//! documents ([`HippoFormer::segment_layout`]): every segment after the first begins with the
//! base's BOS followed by the next `segment_len − 1` tokens. Within a segment the base model
//! sees only that segment (positions restart at 0), as in [`HippoFormer::forward`]; it runs
//! incrementally with its KV cache, each step reading only the new tokens. The HippoFormer
//! modules (salience gate, drift, replay from the memory state — which holds only earlier
//! segments — and fusion) are recomputed over the segment so far, which is cheap next to the
//! base, and only the last position goes through the LM head. When a segment is complete and
//! has been read, it is committed ([`HippoFormer::commit`]: salient tokens written, buffer aged)
//! and the KV cache starts afresh. Long prompts are read segment by segment the same way.
//! With `use_cache = false` the base recomputes the whole segment every step (the reference the
//! cached path is checked against).
//!
//! Continuing a stream: the returned [`HippoGeneration::state`] holds every committed segment
//! and [`HippoGeneration::pending`] the inputs of the segment after the last one (read but not
//! committed, or emitted last and not read yet), beginning with the BOS of that segment when a
//! segment was committed. Calling [`generate`] again with that state and `pending` followed by
//! new tokens as the prompt continues the stream exactly.
//!
//! Stop tokens end generation and are **not** emitted: they reach neither the callback nor
//! [`HippoGeneration::tokens`], and they are not part of the stream.

use std::ops::ControlFlow;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_gemma::{KvCache, Sampler, SamplingConfig, StopReason};
use hippo_memory::MemoryState;

use crate::error::{HippoError, Result};
use crate::model::{HippoFormer, LogitPositions, SegmentOutput};

/// Options of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct HippoGenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    pub sampling: SamplingConfig,
    /// Tokens that end generation (not emitted).
    pub stop_tokens: Vec<u32>,
    /// Tokens per segment (use the `seq_len` the model was trained with).
    pub segment_len: usize,
    /// Run the base incrementally with its KV cache (`false`: recompute the segment each step).
    pub use_cache: bool,
}

impl Default for HippoGenerateOptions {
    /// 64 tokens, default sampling, no stop tokens, segments of 256 tokens, with the cache.
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            stop_tokens: Vec::new(),
            segment_len: 256,
            use_cache: true,
        }
    }
}

/// What [`generate`] produced.
#[derive(Debug, Clone)]
pub struct HippoGeneration {
    /// The generated ids (the prompt and any stop token excluded).
    pub tokens: Vec<u32>,
    /// Why it ended ([`StopReason::ContextFull`] never happens: segments restart positions).
    pub stop: StopReason,
    /// The memory state (batch 1) after every committed segment.
    pub state: MemoryState,
    /// The inputs of the segment after the last committed one (at most `segment_len`; they
    /// begin with BOS when a segment was committed).
    pub pending: Vec<u32>,
    /// Segments committed during this call.
    pub segments_committed: usize,
}

/// The segment being read: its tokens, and (with the cache) the base hidden states of the
/// tokens read so far.
struct SegmentReader<'a> {
    model: &'a HippoFormer,
    device: Device,
    use_cache: bool,
    ids: Vec<u32>,
    /// The token that begins every segment after a commit.
    bos: Option<u32>,
    cache: KvCache,
    hidden: Option<Tensor<3>>,
    /// The attention path's payload of the positions `hidden` holds.
    payload: Option<Tensor<3>>,
    /// Whether the base read memory's keys and values in this segment.
    read_memory: bool,
    state: MemoryState,
    committed: usize,
}

fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(flat, [1, ids.len()]), device)
}

impl SegmentReader<'_> {
    /// Reads the segment up to its last token: the base runs on the tokens not read yet (all of
    /// them without the cache), then the HippoFormer modules on the whole segment.
    fn read(&mut self) -> Result<SegmentOutput> {
        let n = self.ids.len();
        let cat = |a: Option<Tensor<3>>, b: Option<Tensor<3>>| match (a, b) {
            (Some(a), Some(b)) => Some(Tensor::cat(vec![a, b], 1)),
            (a, b) => a.or(b),
        };
        let (base_hidden, payload, read_memory) = if self.use_cache {
            let done = self.hidden.as_ref().map_or(0, |h| h.dims()[1]);
            if done < n {
                let new = self.model.base_states(
                    ids_tensor(&self.ids[done..], &self.device),
                    Some(&mut self.cache),
                    &self.state,
                )?;
                self.hidden = cat(self.hidden.take(), Some(new.hidden));
                self.payload = cat(self.payload.take(), new.payload);
                // The state is the same for every call within a segment.
                self.read_memory = new.read_memory;
            }
            let hidden = self.hidden.clone().ok_or_else(|| {
                HippoError::InvalidInput("an empty segment cannot be read".into())
            })?;
            (hidden, self.payload.clone(), self.read_memory)
        } else {
            let b =
                self.model
                    .base_states(ids_tensor(&self.ids, &self.device), None, &self.state)?;
            (b.hidden, b.payload, b.read_memory)
        };
        let valid =
            Tensor::<2, Bool>::from_data(TensorData::new(vec![true; n], [1, n]), &self.device);
        let mut out = self.model.forward_from_base(
            ids_tensor(&self.ids, &self.device),
            valid,
            base_hidden,
            &self.state,
            LogitPositions::Last,
        )?;
        out.attention_payload = payload;
        out.attention_read = read_memory;
        Ok(out)
    }

    /// Commits the segment just read (`out`) and starts a new one.
    fn commit(&mut self, out: &SegmentOutput) -> Result<()> {
        let (state, _) = self.model.commit(self.state.clone(), out)?;
        self.state = state;
        self.ids.clear();
        self.ids.extend(self.bos);
        self.cache.reset();
        self.hidden = None;
        self.payload = None;
        self.read_memory = false;
        self.committed += 1;
        Ok(())
    }
}

/// Generates a continuation of `prompt` with `model`, continuing the stream whose memory is
/// `state` (batch 1; [`HippoFormer::empty_state`] for a new one). See the [module docs](self)
/// for how the stream is read. `on_token` receives each emitted token in order; returning
/// [`ControlFlow::Break`] ends generation after that token.
///
/// Run on a device without autodiff: the drift calibrator updates its running statistics on an
/// autodiff device, which generation must not do.
pub fn generate(
    model: &HippoFormer,
    prompt: &[u32],
    state: MemoryState,
    options: &HippoGenerateOptions,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<HippoGeneration> {
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let seg_len = options.segment_len;
    let layout = model.segment_layout(seg_len);
    let max_pos = model.base.config().max_position_embeddings;
    if seg_len < 2 || seg_len > max_pos {
        return Err(HippoError::InvalidInput(format!(
            "segment_len = {seg_len} must lie in [2, {max_pos}] (a later segment is BOS and at \
             least one token; at most the base's max_position_embeddings)"
        )));
    }
    if prompt.is_empty() {
        return Err(HippoError::InvalidInput(
            "the prompt needs at least one token".into(),
        ));
    }
    model.base.check_ids(prompt)?;
    if state.batch_size() != 1 {
        return Err(HippoError::InvalidInput(format!(
            "generation reads one stream, the memory state holds {}",
            state.batch_size()
        )));
    }
    let device = model.base.embed_tokens.val().device();
    if device.is_autodiff() {
        return Err(HippoError::InvalidInput(
            "generate on a device without autodiff (the drift statistics would be updated)".into(),
        ));
    }
    let mut r = SegmentReader {
        model,
        device,
        use_cache: options.use_cache,
        ids: Vec::with_capacity(seg_len),
        bos: layout.bos,
        cache: model.base.new_cache(),
        hidden: None,
        payload: None,
        read_memory: false,
        state,
        committed: 0,
    };
    // Prefill: every full segment followed by more prompt is read and committed.
    let mut rest = prompt;
    loop {
        let take = (seg_len - r.ids.len()).min(rest.len());
        r.ids.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if rest.is_empty() {
            break;
        }
        let out = r.read()?;
        r.commit(&out)?;
    }
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        let out = r.read()?;
        let next = sampler.sample_last(out.logits()).map_err(|e| {
            let e = match e {
                hippo_gemma::GemmaError::InvalidInput(m) => m,
                e => e.to_string(),
            };
            HippoError::InvalidInput(format!(
                "at segment {} position {} (prompt of {} tokens, {} generated): {e}",
                r.committed,
                r.ids.len().saturating_sub(1),
                prompt.len(),
                tokens.len()
            ))
        })?;
        if r.ids.len() == seg_len {
            r.commit(&out)?;
        }
        if options.stop_tokens.contains(&next) {
            break StopReason::StopToken(next);
        }
        tokens.push(next);
        r.ids.push(next);
        if on_token(next).is_break() {
            break StopReason::Callback;
        }
    };
    Ok(HippoGeneration {
        tokens,
        stop,
        state: r.state,
        pending: r.ids,
        segments_committed: r.committed,
    })
}
