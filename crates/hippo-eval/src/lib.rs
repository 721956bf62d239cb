//! Honest evaluation of HippoFormer.
//!
//! Documents are read as streams of segments (the same [`StreamBatcher`] and [`SegmentLayout`]
//! the trainer uses, one document per batch row: every segment after a document's first begins
//! with BOS, whose position has no target); a scorer sees one segment at a time, so the base
//! model and HippoFormer are scored on the identical token stream with the identical context
//! window — HippoFormer additionally reads its per-stream memory of earlier segments.
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
//! - [`evaluate_long_context`] scores the base model on the same targets with a longer rolling
//!   window (an upper bound for what memory of earlier segments could recover).
//!
//! Every target of a document has one index `j` (it is `tokens[j + 1]`, predicted from document
//! token `j`); it lies in the segment and at the input position [`SegmentLayout::locate`] gives
//! for `j` (segment `j / L`, position `j % L` in the first segment; later segments start at
//! input position 1, after their BOS), whatever the scorer, so segment-wise numbers of every
//! scorer compare target by target.
//!
//! [`metrics`] derives the paper's metrics from a [`Trace`]; [`results`] holds a whole run
//! (`results.json`) and its markdown table.
//!
//! # Example
//!
//! A random tiny Gemma 3 and a fresh HippoFormer over it, scored on the identical segments of
//! four documents: at init HippoFormer is the base, with memory on or off.
//!
//! ```
//! use std::sync::Arc;
//! use burn::tensor::Device;
//! use hippo_data::{Document, Split, Tokenize, TokenizedCorpus};
//! use hippo_eval::{EvalOptions, Scorer, evaluate, evaluate_with_memory_off};
//! use hippo_gemma::{Gemma, GemmaConfig, GemmaFamily};
//! use hippo_model::{HippoFormer, HippoFormerConfig};
//!
//! /// Bytes folded into the tiny model's vocabulary of 64 (BOS = 2).
//! struct Tiny;
//! impl Tokenize for Tiny {
//!     fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
//!         Ok(std::iter::once(2).chain(text.bytes().map(|b| u32::from(b) % 60 + 3)).collect())
//!     }
//!     fn fingerprint(&self) -> hippo_data::Result<String> {
//!         Ok("tiny".into())
//!     }
//! }
//!
//! let device = Device::flex();
//! let base = Gemma::random(&GemmaConfig::tiny(GemmaFamily::Gemma3), 0, &device)?;
//! let config = HippoFormerConfig { buffer_size: 16, lora_r: 4, n_anchors: 8, ..Default::default() };
//! let model = HippoFormer::new(base.clone(), config, &device)?;
//! let docs: Vec<Document> = (0..4)
//!     .map(|i| Document {
//!         id: format!("d{i}"),
//!         title: String::new(),
//!         text: format!("document {i}: ").repeat(3 + i),
//!         source: "example".into(),
//!         url: None,
//!     })
//!     .collect();
//! let corpus = Arc::new(TokenizedCorpus::build(&docs, &Tiny, "example", Split::Test)?);
//! let opts = EvalOptions { seq_len: 16, streams: 2, max_docs: None, allow_leaky: false };
//!
//! let b = evaluate(&Scorer::Base(&base), corpus.clone(), &opts, &device)?;
//! let [(h, _), (off, _)] = evaluate_with_memory_off(&model, corpus, &opts, &device, &mut |_| {})?;
//! // Every target of every document once (the BOS of a later segment predicts nothing).
//! let targets: usize = docs.iter().map(|d| d.text.len()).sum();
//! assert_eq!((b.tokens, h.tokens, off.tokens), (targets, targets, targets));
//! assert!(b.nll_by_segment.len() > 2); // documents span several segments
//! assert!((h.mean_nll - b.mean_nll).abs() < 1e-5 && (off.mean_nll - b.mean_nll).abs() < 1e-5);
//! assert!((b.token_ppl - b.mean_nll.exp()).abs() < 1e-9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod metrics;
pub mod results;

pub mod ablation;
pub mod calibrate;
#[cfg(feature = "figures")]
pub mod figures;
pub mod long_range;
pub mod probe;
pub mod stats;

use std::sync::Arc;

use burn::tensor::{Bool, Device, Tensor};
use hippo_data::{
    BatcherConfig, IGNORE_INDEX, SegmentBatch, SegmentLayout, StreamBatcher, TokenizedCorpus,
};
use hippo_gemma::Gemma;
use hippo_model::{HippoFormer, SegmentTensors, StreamRunner};
use serde::{Deserialize, Serialize};

pub use long_range::{LongRange, LongRangeSubset, ScorerPpl, long_range};
pub use metrics::{DocText, PaperMetrics, doc_texts};
pub use results::{EvalMetadata, EvalResults};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model refused the input or failed.
    #[error(transparent)]
    Model(#[from] hippo_model::HippoError),
    /// The base model refused the input or failed.
    #[error(transparent)]
    Gemma(#[from] hippo_gemma::GemmaError),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] hippo_data::DataError),
    /// A config that can leak future tokens was evaluated without `allow_leaky`.
    #[error(
        "this HippoFormer config is not causal (query_mode = \"sequence_mean\" pools the whole segment into \
         every position's memory query); its perplexity would be meaningless. Pass --allow-leaky to evaluate \
         it anyway: every number will be labelled leaky"
    )]
    Leaky,
    /// Options that cannot be honoured (named in the message).
    #[error("bad evaluation options: {0}")]
    Options(String),
    /// Inputs that do not belong together (e.g. reports of different token streams).
    #[error("inconsistent evaluation inputs: {0}")]
    Inconsistent(String),
    /// Reading or writing a results file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Reading a tensor back failed.
    #[error("reading results back from the device: {0}")]
    Readback(String),
    /// A score came out NaN or infinite (named by scorer, document, segment and position).
    #[error("non-finite score: {0}")]
    NonFinite(String),
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
///
/// Means over an empty set (a segment index or position no document reaches) are `None`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    pub nll_by_segment: Vec<Option<f64>>,
    /// Tokens behind each `nll_by_segment` entry.
    pub tokens_by_segment: Vec<usize>,
    /// Mean NLL by position within a segment.
    pub nll_by_position: Vec<Option<f64>>,
    /// Σ NLL and token count per document, in corpus order.
    pub per_document: Vec<(f64, usize)>,
    /// Σ NLL and token count per document (corpus order) and segment index.
    pub per_document_by_segment: Vec<Vec<(f64, usize)>>,
    /// Whether the scored config can leak future tokens.
    pub leaky: bool,
}

/// The memory of one stream when its document ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BufferSnapshot {
    /// Occupied slots.
    pub entries: usize,
    /// Mean effective priority `P·d^age` of the occupied slots (`None` when there is none).
    pub mean_effective_priority: Option<f64>,
}

/// Per-token record of an evaluation, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// How the documents were cut into segments.
    pub layout: SegmentLayout,
    /// `nll[d][j] = −ln p(tokens[j + 1] | …)` for every target of document `d`.
    pub nll: Vec<Vec<f64>>,
    /// `salience[d][i]`: salience of input token `i` of document `d` (HippoFormer only;
    /// empty vectors for the base model).
    pub salience: Vec<Vec<f64>>,
    /// Each document's memory after its last segment was committed (HippoFormer with memory
    /// on; `None` otherwise).
    pub end_of_document: Vec<Option<BufferSnapshot>>,
}

/// How far an evaluation has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Targets scored so far.
    pub tokens_done: usize,
    /// Targets in the whole run.
    pub tokens_total: usize,
}

fn to_host_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EvalError::Readback(format!("{e:?}")))
}

fn to_host_bool<const D: usize>(t: Tensor<D, Bool>) -> Vec<bool> {
    t.into_data().iter::<bool>().collect()
}

/// Per-token NLL `[B, T]` of `targets` under `logits`, on the host (0 where target = −100).
fn token_nll(
    logits: Tensor<3>,
    tensors: &SegmentTensors,
    batch: &SegmentBatch,
) -> Result<Vec<f64>> {
    let lp = hippo_gemma::score::log_probs_at(logits, tensors.gather_targets());
    nll_of(lp, batch)
}

/// `−ln p` on the host from target log-probabilities (any shape of `B·T` values), 0 where the
/// target is −100.
fn nll_of<const D: usize>(lp: Tensor<D>, batch: &SegmentBatch) -> Result<Vec<f64>> {
    let targets = batch.targets_flat();
    let n = batch.batch_size() * batch.seq_len();
    let lp = to_host_f32(lp.reshape([n]))?;
    Ok(lp
        .iter()
        .zip(&targets)
        .map(|(&l, &y)| {
            if y == IGNORE_INDEX {
                0.0
            } else {
                -f64::from(l)
            }
        })
        .collect())
}

/// Targets of a corpus: every document token but the first.
fn total_targets(corpus: &TokenizedCorpus) -> usize {
    corpus
        .docs
        .iter()
        .map(|d| d.tokens.len().saturating_sub(1))
        .sum()
}

/// An empty trace of a base scorer over `docs` documents, on the segments of length `l`
/// (filled document by document; no salience, no buffer).
fn base_trace(base: &Gemma, l: usize, docs: usize) -> Trace {
    Trace {
        layout: SegmentLayout::with_bos(l, base.config().bos_token_id),
        nll: Vec::with_capacity(docs),
        salience: vec![Vec::new(); docs],
        end_of_document: vec![None; docs],
    }
}

/// The first `max_docs` documents of `corpus` (all of them without a limit).
pub fn truncated(corpus: Arc<TokenizedCorpus>, max_docs: Option<usize>) -> Arc<TokenizedCorpus> {
    match max_docs {
        Some(n) if n < corpus.docs.len() => {
            let mut c = (*corpus).clone();
            c.docs.truncate(n);
            Arc::new(c)
        }
        _ => corpus,
    }
}

fn check_options(opts: &EvalOptions) -> Result<()> {
    if opts.seq_len < 2 || opts.streams == 0 {
        return Err(EvalError::Options(format!(
            "seq_len ({}) must be ≥ 2 (a later segment is BOS and at least one token) and \
             streams ({}) ≥ 1",
            opts.seq_len, opts.streams
        )));
    }
    if opts.max_docs == Some(0) {
        return Err(EvalError::Options("max_docs must be ≥ 1".into()));
    }
    Ok(())
}

/// Scores a tokenised corpus as document streams.
pub fn evaluate(
    scorer: &Scorer<'_>,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
) -> Result<PplReport> {
    evaluate_traced(scorer, corpus, opts, device, &mut |_| {}).map(|(r, _)| r)
}

/// Scores a tokenised corpus as document streams and keeps the per-token record; `progress` is
/// called after every batch.
pub fn evaluate_traced(
    scorer: &Scorer<'_>,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PplReport, Trace)> {
    let mut runs = evaluate_streams(scorer, false, corpus, opts, device, progress)?;
    runs.pop()
        .ok_or_else(|| EvalError::Inconsistent("no evaluation output".into()))
}

/// HippoFormer and the same model with memory off, from one pass: the memory-off logits reuse
/// HippoFormer's base forward ([`HippoFormer::memory_off_logits`]), so both are scored on the
/// identical segments for the price of one base pass (plus one LM head when a hidden-space
/// fusion path exists). Returns `[hippoformer, memory_off]`; the memory-off trace carries the
/// same salience and no buffer snapshots.
pub fn evaluate_with_memory_off(
    model: &HippoFormer,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<[(PplReport, Trace); 2]> {
    let runs = evaluate_streams(&Scorer::Hippo(model), true, corpus, opts, device, progress)?;
    <[(PplReport, Trace); 2]>::try_from(runs)
        .map_err(|_| EvalError::Inconsistent("expected two evaluation outputs".into()))
}

fn evaluate_streams(
    scorer: &Scorer<'_>,
    with_memory_off: bool,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(PplReport, Trace)>> {
    check_options(opts)?;
    let leaky = match scorer {
        Scorer::Hippo(m) => m.config.is_leaky(),
        Scorer::Base(_) => false,
    };
    if leaky && !opts.allow_leaky {
        return Err(EvalError::Leaky);
    }
    let corpus = truncated(corpus, opts.max_docs);
    let l = opts.seq_len;
    let layout = match scorer {
        Scorer::Hippo(m) => m.segment_layout(l),
        Scorer::Base(g) => SegmentLayout::with_bos(l, g.config().bos_token_id),
    };
    let config = BatcherConfig::new(l, opts.streams)
        .with_layout(layout)
        .with_min_tokens(2);
    let batcher = StreamBatcher::new(corpus.clone(), config)?;
    let mut runner = match scorer {
        Scorer::Hippo(m) => Some(StreamRunner::new(m, opts.streams, device)),
        Scorer::Base(_) => None,
    };
    let (collect_salience, decay) = match scorer {
        Scorer::Hippo(m) => (true, Some((m.config.decay_rate, m.config.memory))),
        Scorer::Base(_) => (false, None),
    };
    let n_docs = corpus.docs.len();
    let outputs = if with_memory_off { 2 } else { 1 };
    let mut trace = Trace {
        layout,
        nll: corpus
            .docs
            .iter()
            .map(|d| vec![f64::NAN; d.tokens.len().saturating_sub(1)])
            .collect(),
        salience: corpus
            .docs
            .iter()
            .map(|d| {
                if collect_salience {
                    vec![f64::NAN; d.tokens.len()]
                } else {
                    Vec::new()
                }
            })
            .collect(),
        end_of_document: vec![None; n_docs],
    };
    let mut twin = with_memory_off.then(|| Trace {
        layout,
        nll: trace.nll.clone(),
        salience: Vec::new(),
        end_of_document: vec![None; n_docs],
    });
    let tokens_total = total_targets(&corpus);
    let mut tokens_done = 0usize;
    for batch in batcher {
        let t = batch.seq_len();
        let (nll, salience) = match (scorer, runner.as_mut()) {
            (Scorer::Hippo(m), Some(run)) => {
                let step = run.read(&batch)?;
                let out = &step.output;
                let sal = to_host_f32(out.salience.salience.clone())?;
                // Target log-probabilities from the segment's output: with the probability
                // path, gathers and the stored LM normaliser instead of a softmax over the
                // vocabulary (see `HippoFormer::target_log_probs`).
                let y = step.tensors.gather_targets();
                let mut nll = vec![nll_of(
                    HippoFormer::target_log_probs(out, y.clone()),
                    &batch,
                )?];
                if with_memory_off {
                    nll.push(nll_of(m.memory_off_target_log_probs(out, y), &batch)?);
                }
                run.write(&step)?;
                (nll, Some(sal))
            }
            (scorer, _) => {
                let tensors = SegmentTensors::new(&batch, device);
                let logits = match scorer {
                    Scorer::Base(g) => g.forward(tensors.ids.clone(), None).logits,
                    Scorer::Hippo(_) => {
                        return Err(EvalError::Inconsistent("lost the memory stream".into()));
                    }
                };
                (vec![token_nll(logits, &tensors, &batch)?], None)
            }
        };
        if nll.len() != outputs {
            return Err(EvalError::Options(
                "the memory-off twin needs a HippoFormer scorer".into(),
            ));
        }

        let mut ended: Vec<(usize, usize)> = Vec::new();
        for (r, doc) in batch.doc_index.iter().enumerate() {
            let Some(doc) = *doc else { continue };
            let k = batch.segment_index[r];
            // Input position p ≥ prefix holds document token start + p − prefix.
            let (start, prefix) = (layout.start(k), layout.prefix(k));
            if batch.targets[r][..prefix.min(t)]
                .iter()
                .any(|&x| x != IGNORE_INDEX)
            {
                return Err(EvalError::Inconsistent(format!(
                    "the BOS of segment {k} of document {doc} has a target"
                )));
            }
            for p in prefix..t {
                let j = start + p - prefix;
                if let Some(sal) = &salience
                    && batch.valid[r][p]
                    && let Some(slot) = trace.salience[doc].get_mut(j)
                {
                    *slot = f64::from(sal[r * t + p]);
                }
                if batch.targets[r][p] == IGNORE_INDEX {
                    continue;
                }
                let slot = trace.nll[doc].get_mut(j).ok_or_else(|| {
                    EvalError::Inconsistent(format!(
                        "target {j} of document {doc} lies past its end"
                    ))
                })?;
                for (o, x) in nll.iter().enumerate() {
                    let v = x[r * t + p];
                    if !v.is_finite() {
                        return Err(EvalError::NonFinite(format!(
                            "{} gives NLL {v} (the logits there are not finite) at document \
                             {doc} (`{}`), segment {k}, input position {p}, target {j} \
                             (predicting token {} of the document)",
                            match (scorer, o) {
                                (Scorer::Base(_), _) => "the base model",
                                (Scorer::Hippo(_), 0) => "HippoFormer",
                                (Scorer::Hippo(_), _) => "HippoFormer with memory off",
                            },
                            corpus.docs[doc].id,
                            j + 1
                        )));
                    }
                }
                *slot = nll[0][r * t + p];
                if let (Some(tw), Some(x)) = (twin.as_mut(), nll.get(1))
                    && let Some(slot) = tw.nll[doc].get_mut(j)
                {
                    *slot = x[r * t + p];
                }
                tokens_done += 1;
            }
            let n = corpus.docs[doc].tokens.len();
            if k + 1 == layout.count(n) {
                ended.push((r, doc));
            }
        }
        if let (Some((decay, true)), Some(run), false) = (decay, &runner, ended.is_empty()) {
            let s = run.state()?;
            let m = s.capacity();
            let eff = to_host_f32(s.effective_priorities(decay))?;
            let occupied = to_host_bool(s.valid.clone());
            for (r, doc) in ended {
                let row = r * m..(r + 1) * m;
                trace.end_of_document[doc] = Some(metrics::snapshot(
                    &eff[row.clone()]
                        .iter()
                        .map(|&x| f64::from(x))
                        .collect::<Vec<_>>(),
                    &occupied[row],
                ));
            }
        }
        progress(Progress {
            tokens_done,
            tokens_total,
        });
    }
    if let Some((d, j)) = trace
        .nll
        .iter()
        .enumerate()
        .find_map(|(d, v)| v.iter().position(|x| x.is_nan()).map(|j| (d, j)))
    {
        return Err(EvalError::Inconsistent(format!(
            "target {j} of document {d} was never scored"
        )));
    }
    let mut runs = vec![(report_from_trace(&corpus, &trace, leaky), trace)];
    if let Some(mut tw) = twin {
        tw.salience = runs[0].1.salience.clone();
        runs.push((report_from_trace(&corpus, &tw, false), tw));
    }
    Ok(runs)
}

/// Scores the base model on the same targets as [`evaluate`] with segments of `opts.seq_len`,
/// but with rolling windows of `context` tokens ([`hippo_gemma::score::score_ids`], stride =
/// `seq_len`): every target sees at least `context − seq_len` earlier tokens more than it does
/// in its segment (BOS is prepended to windows that do not start the document). The report's
/// segment and position breakdowns use the segments of [`evaluate`], so they compare target by
/// target.
pub fn evaluate_long_context(
    base: &Gemma,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    context: usize,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PplReport, Trace)> {
    check_options(opts)?;
    let l = opts.seq_len;
    if context <= l {
        return Err(EvalError::Options(format!(
            "the long context ({context}) must exceed the segment length ({l})"
        )));
    }
    let max_pos = base.config().max_position_embeddings;
    if context > max_pos {
        return Err(EvalError::Options(format!(
            "the long context ({context}) exceeds the model's max_position_embeddings ({max_pos})"
        )));
    }
    let corpus = truncated(corpus, opts.max_docs);
    let tokens_total = total_targets(&corpus);
    let mut tokens_done = 0;
    let mut trace = base_trace(base, l, corpus.docs.len());
    for d in &corpus.docs {
        if d.tokens.len() < 2 {
            trace.nll.push(Vec::new());
            continue;
        }
        let s = hippo_gemma::score::score_ids(base, &d.tokens, context, l, device)?;
        tokens_done += s.nll.len();
        trace.nll.push(s.nll);
        progress(Progress {
            tokens_done,
            tokens_total,
        });
    }
    Ok((report_from_trace(&corpus, &trace, false), trace))
}

/// Scores the base model with the **whole document prefix** in context: each document is read
/// in chunks of `opts.seq_len` tokens through the base's KV cache, so target `j` is predicted from
/// document tokens `0..=j` (the upper bound memory of earlier segments tries to reach; Gemma's
/// sliding-window layers still see only their window, as in transformers). The report's segment
/// and position breakdowns use the segments of [`evaluate`], so they compare target by target.
/// A document longer than the model's `max_position_embeddings` is an error.
pub fn evaluate_full_context(
    base: &Gemma,
    corpus: Arc<TokenizedCorpus>,
    opts: &EvalOptions,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PplReport, Trace)> {
    check_options(opts)?;
    let l = opts.seq_len;
    let corpus = truncated(corpus, opts.max_docs);
    let max_pos = base.config().max_position_embeddings;
    if let Some(d) = corpus.docs.iter().find(|d| d.tokens.len() > max_pos) {
        return Err(EvalError::Options(format!(
            "document {} has {} tokens, more than the model's max_position_embeddings ({max_pos}); \
             the full-context base cannot read it whole",
            d.id,
            d.tokens.len()
        )));
    }
    let tokens_total = total_targets(&corpus);
    let mut tokens_done = 0;
    let mut trace = base_trace(base, l, corpus.docs.len());
    for d in &corpus.docs {
        let n = d.tokens.len();
        let mut nll = Vec::with_capacity(n.saturating_sub(1));
        let mut cache = base.new_cache();
        let mut a = 0;
        while a + 1 < n {
            let b = (a + l).min(n - 1); // inputs a..b predict targets a+1..=b
            let x = base.ids_tensor(&[d.tokens[a..b].to_vec()], device)?;
            let logits = base
                .forward(x, Some(&mut cache))
                .logits
                .reshape([b - a, base.config().vocab_size]);
            let lp = hippo_gemma::score::target_log_probs(logits, &d.tokens[a + 1..=b], device);
            if lp.len() != b - a {
                return Err(EvalError::Readback(format!(
                    "{} log-probabilities for {} targets",
                    lp.len(),
                    b - a
                )));
            }
            nll.extend(lp.into_iter().map(|x| -x));
            tokens_done += b - a;
            a = b;
        }
        trace.nll.push(nll);
        progress(Progress {
            tokens_done,
            tokens_total,
        });
    }
    Ok((report_from_trace(&corpus, &trace, false), trace))
}

/// The totals of a trace (see [`PplReport`]); documents' words and bytes come from `corpus`.
pub fn report_from_trace(corpus: &TokenizedCorpus, trace: &Trace, leaky: bool) -> PplReport {
    let layout = trace.layout;
    let mut by_seg: Vec<(f64, usize)> = Vec::new();
    let mut by_pos: Vec<(f64, usize)> = vec![(0.0, 0); layout.seq_len.max(1)];
    let mut per_doc = Vec::with_capacity(trace.nll.len());
    let mut per_doc_seg = Vec::with_capacity(trace.nll.len());
    for doc in &trace.nll {
        // Targets 0..n−1 of a document of n tokens come from document tokens 0..n−1.
        let mut segs: Vec<(f64, usize)> = vec![(0.0, 0); layout.count(doc.len())];
        for (j, &x) in doc.iter().enumerate() {
            let (k, p) = layout.locate(j);
            if segs.len() <= k {
                segs.resize(k + 1, (0.0, 0));
            }
            if by_pos.len() <= p {
                by_pos.resize(p + 1, (0.0, 0));
            }
            segs[k].0 += x;
            segs[k].1 += 1;
            by_pos[p].0 += x;
            by_pos[p].1 += 1;
        }
        if by_seg.len() < segs.len() {
            by_seg.resize(segs.len(), (0.0, 0));
        }
        for (k, s) in segs.iter().enumerate() {
            by_seg[k].0 += s.0;
            by_seg[k].1 += s.1;
        }
        per_doc.push((segs.iter().map(|s| s.0).sum::<f64>(), doc.len()));
        per_doc_seg.push(segs);
    }
    let stats = corpus.total_stats();
    let nll_sum: f64 = per_doc.iter().map(|d| d.0).sum();
    let tokens: usize = per_doc.iter().map(|d| d.1).sum();
    let mean = |(s, n): &(f64, usize)| (*n > 0).then(|| s / *n as f64);
    PplReport {
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
        per_document_by_segment: per_doc_seg,
        leaky,
    }
}

/// The salience gate's smoothing kernel `c_j` (weight of position `t − j`), read back.
pub fn smoothing_kernel(model: &HippoFormer) -> Result<Vec<f64>> {
    Ok(to_host_f32(model.gate.smoothing.val())?
        .into_iter()
        .map(f64::from)
        .collect())
}
