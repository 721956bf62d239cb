//! Honest evaluation of HippoFormer.
//!
//! Documents are read as streams of contiguous segments (the same [`StreamBatcher`] the trainer
//! uses, one document per batch row); a scorer sees one segment at a time, so the base model and
//! HippoFormer are scored on the identical token stream with the identical context window —
//! HippoFormer additionally reads its per-stream memory of earlier segments.
//!
//! - NLL is token-weighted: the sum of `-ln p(target)` over every target ≠ −100 (pads and
//!   document ends are never counted), divided by the count.
//! - Word and byte perplexities follow lm-evaluation-harness (wikitext):
//!   `word_ppl = exp(Σ NLL / words)`, `byte_ppl = exp(Σ NLL / bytes)`,
//!   `bits_per_byte = Σ NLL / (bytes · ln 2)`, with words = whitespace-separated units and bytes =
//!   UTF-8 bytes of the exact document text tokenised (the BOS token is predicted by nothing and
//!   counts for neither).
//! - Evaluation never writes to the model; HippoFormer's memory state lives in the evaluator and
//!   starts empty for every document, so evaluating twice gives identical numbers.

pub mod figures;
pub mod stats;

use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_gemma::Gemma;
use hippo_model::HippoFormer;
use hippo_train::data::{BatcherConfig, SegmentBatch, StreamBatcher, TokenizedCorpus};
use serde::Serialize;

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model refused the input or failed.
    #[error(transparent)]
    Model(#[from] hippo_model::HippoError),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] hippo_train::data::DataError),
    /// A config that can leak future tokens was evaluated without `allow_leaky`.
    #[error(
        "this HippoFormer config is not causal (query_mode = \"sequence_mean\" pools the whole segment into \
         every position's memory query); its perplexity would be meaningless. Pass --allow-leaky to evaluate \
         it anyway: every number will be labelled leaky"
    )]
    Leaky,
    /// Reading a tensor back failed.
    #[error("reading results back from the device: {0}")]
    Readback(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, EvalError>;

/// What is scored.
pub enum Scorer<'a> {
    /// The bare base model, one segment at a time.
    Base(&'a Gemma),
    /// HippoFormer with per-stream memory carried across a document's segments.
    Hippo(&'a HippoFormer),
}

/// How to walk the corpus.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOptions {
    /// Segment length (the context window of each forward).
    pub seq_len: usize,
    /// Documents read in parallel (batch rows).
    pub streams: usize,
    /// Evaluate only the first N documents.
    pub max_docs: Option<usize>,
    /// Evaluate a non-causal config anyway (numbers are labelled leaky).
    pub allow_leaky: bool,
}

/// Totals of one scored stream set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PplReport {
    /// Documents scored.
    pub documents: usize,
    /// Tokens predicted.
    pub tokens: usize,
    /// Whitespace-separated words of the scored documents.
    pub words: u64,
    /// UTF-8 bytes of the scored documents.
    pub bytes: u64,
    /// Σ NLL in nats.
    pub nll_sum: f64,
    /// Mean NLL per token.
    pub mean_nll: f64,
    /// exp(mean NLL).
    pub token_ppl: f64,
    /// exp(Σ NLL / words).
    pub word_ppl: f64,
    /// exp(Σ NLL / bytes).
    pub byte_ppl: f64,
    /// Σ NLL / (bytes · ln 2).
    pub bits_per_byte: f64,
    /// Mean NLL by segment index within a document (0 = first segment).
    pub nll_by_segment: Vec<f64>,
    /// Tokens behind each `nll_by_segment` entry.
    pub tokens_by_segment: Vec<usize>,
    /// Mean NLL by position within a segment.
    pub nll_by_position: Vec<f64>,
    /// Σ NLL and token count per document, in corpus order.
    pub per_document: Vec<(f64, usize)>,
    /// Whether the scored config can leak future tokens.
    pub leaky: bool,
}

fn ids_tensor(batch: &SegmentBatch, device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let valid: Vec<bool> = batch.valid.iter().flatten().copied().collect();
    (
        Tensor::from_data(TensorData::new(batch.input_ids_flat(), [b, t]), device),
        Tensor::from_data(TensorData::new(valid, [b, t]), device),
    )
}

/// Per-token NLL `[B, T]` of `targets` under `logits`, on the host (0 where target = −100).
fn token_nll(logits: Tensor<3>, batch: &SegmentBatch, device: &Device) -> Result<Vec<f64>> {
    let [b, t, v] = logits.dims();
    let targets = batch.targets_flat();
    let safe: Vec<i64> = targets.iter().map(|&x| x.max(0)).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(safe, [b * t, 1]), device);
    let lp = log_softmax(logits.reshape([b * t, v]), 1)
        .gather(1, idx)
        .reshape([b * t]);
    let lp = lp
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EvalError::Readback(format!("{e:?}")))?;
    Ok(lp
        .iter()
        .zip(&targets)
        .map(|(&l, &y)| if y == -100 { 0.0 } else { -(l as f64) })
        .collect())
}

/// Scores a tokenised corpus as document streams.
pub fn evaluate(
    scorer: &Scorer<'_>,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
) -> Result<PplReport> {
    let leaky = match scorer {
        Scorer::Hippo(m) => m.config.is_leaky(),
        Scorer::Base(_) => false,
    };
    if leaky && !opts.allow_leaky {
        return Err(EvalError::Leaky);
    }
    let corpus = match opts.max_docs {
        Some(n) if n < corpus.docs.len() => {
            let mut c = (*corpus).clone();
            c.docs.truncate(n);
            Arc::new(c)
        }
        _ => corpus,
    };
    let config = BatcherConfig::new(opts.seq_len, opts.streams).with_min_tokens(2);
    let batcher = StreamBatcher::new(corpus.clone(), config)?;
    let mut state = match scorer {
        Scorer::Hippo(m) => Some(m.empty_state(opts.streams, device)),
        Scorer::Base(_) => None,
    };
    let mut per_doc = vec![(0f64, 0usize); corpus.docs.len()];
    // (Σ NLL, count) per segment index and per position.
    let mut by_seg: Vec<(f64, usize)> = Vec::new();
    let mut by_pos: Vec<(f64, usize)> = vec![(0.0, 0); opts.seq_len];
    for batch in batcher {
        let (ids, valid) = ids_tensor(&batch, device);
        let logits = match scorer {
            Scorer::Base(g) => g.forward(ids, None).logits,
            Scorer::Hippo(m) => {
                let resets: Vec<usize> = batch
                    .reset
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r)
                    .map(|(i, _)| i)
                    .collect();
                let mut s = state
                    .take()
                    .ok_or_else(|| EvalError::Readback("lost memory state".into()))?;
                if !resets.is_empty() {
                    s = s
                        .reset_row_indices(&resets)
                        .map_err(hippo_model::HippoError::from)?;
                }
                let out = m.forward(ids, valid, &s)?;
                let (s, _) = m.commit(s, &out)?;
                state = Some(s);
                out.logits
            }
        };
        let t = batch.seq_len();
        let nll = token_nll(logits, &batch, device)?;
        for (r, doc) in batch.doc_index.iter().enumerate() {
            let Some(doc) = *doc else { continue };
            let seg = batch.segment_index[r];
            if by_seg.len() <= seg {
                by_seg.resize(seg + 1, (0.0, 0));
            }
            for p in 0..t {
                if batch.targets[r][p] == -100 {
                    continue;
                }
                let x = nll[r * t + p];
                per_doc[doc].0 += x;
                per_doc[doc].1 += 1;
                by_seg[seg].0 += x;
                by_seg[seg].1 += 1;
                by_pos[p].0 += x;
                by_pos[p].1 += 1;
            }
        }
    }
    let stats = corpus.total_stats();
    let nll_sum: f64 = per_doc.iter().map(|d| d.0).sum();
    let tokens: usize = per_doc.iter().map(|d| d.1).sum();
    let mean = |(s, n): &(f64, usize)| if *n == 0 { f64::NAN } else { s / *n as f64 };
    Ok(PplReport {
        documents: corpus.docs.len(),
        tokens,
        words: stats.words,
        bytes: stats.bytes,
        nll_sum,
        mean_nll: nll_sum / tokens.max(1) as f64,
        token_ppl: (nll_sum / tokens.max(1) as f64).exp(),
        word_ppl: (nll_sum / stats.words.max(1) as f64).exp(),
        byte_ppl: (nll_sum / stats.bytes.max(1) as f64).exp(),
        bits_per_byte: nll_sum / (stats.bytes.max(1) as f64 * std::f64::consts::LN_2),
        nll_by_segment: by_seg.iter().map(mean).collect(),
        tokens_by_segment: by_seg.iter().map(|x| x.1).collect(),
        nll_by_position: by_pos.iter().map(mean).collect(),
        per_document: per_doc,
        leaky,
    })
}
