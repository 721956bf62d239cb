//! Long-range numbers: what memory does on the late segments of long documents.
//!
//! On the targets of segments `k ≥ segment_from` (0-based: every such target has at least
//! `segment_from` whole segments of its document before its own, i.e. out of the base's window),
//! four scorers on the identical targets:
//!
//! - `base`: the base model, one segment at a time;
//! - `hippoformer`: HippoFormer with its per-document memory;
//! - `memory_off`: the same checkpoint with memory off (LoRA and drift kept): memory's own share
//!   is `hippoformer` against this, never against `base`;
//! - `full_context`: the base with the whole document prefix in context (the upper bound).
//!
//! and the two ratios, each with a percentile bootstrap interval over documents (the documents are
//! resampled, every scorer's sums of a document move together):
//!
//! - `memory_gain = 1 − ppl(hippoformer) / ppl(memory_off)`;
//! - `gap_closed = (NLL_base − NLL_hippoformer) / (NLL_base − NLL_full_context)` (token-weighted
//!   sums; `None` without a full-context scorer or where the gap is not positive), and memory's
//!   own part of it, `memory_gap_closed = (NLL_memory_off − NLL_hippoformer) / (same)`.
//!
//! The same is reported for the **far-copyable** targets: target tokens that occur earlier in the
//! document but not in the segment being read (not among the document tokens from the segment's
//! first real token to the input predicting them) — what only a memory of earlier segments, or a
//! longer context, can copy (LongPPL, Fang et al. 2024, makes the same point about key tokens).

use std::collections::HashSet;

use hippo_data::{SegmentLayout, TokenizedCorpus};
use serde::{Deserialize, Serialize};

use crate::stats::{Interval, bootstrap_statistic};
use crate::{EvalError, Result, Trace};

/// Token perplexity of each scorer on one subset of targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerPpl {
    /// The base, one segment at a time.
    pub base: f64,
    /// HippoFormer.
    pub hippoformer: f64,
    /// The same checkpoint with memory off.
    pub memory_off: f64,
    /// The base with the whole document prefix (when scored).
    pub full_context: Option<f64>,
}

/// The numbers of one subset of late targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongRangeSubset {
    /// Targets in the subset.
    pub tokens: usize,
    /// Documents contributing at least one target.
    pub documents: usize,
    /// Token perplexity per scorer.
    pub ppl: ScorerPpl,
    /// `1 − ppl(hippoformer)/ppl(memory_off)` with its bootstrap interval (`None` with fewer
    /// than two contributing documents).
    pub memory_gain: Option<Interval>,
    /// `(NLL_base − NLL_hippoformer)/(NLL_base − NLL_full_context)` with its bootstrap interval.
    pub gap_closed: Option<Interval>,
    /// Memory's own part of it: `(NLL_memory_off − NLL_hippoformer)/(NLL_base −
    /// NLL_full_context)` (the rest of `gap_closed` is LoRA's and the drift calibrator's).
    #[serde(default)]
    pub memory_gap_closed: Option<Interval>,
}

/// The `long_range` object of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongRange {
    /// First (0-based) segment index counted.
    pub segment_from: usize,
    /// Segment length.
    pub seq_len: usize,
    /// Every target of segments `≥ segment_from`.
    #[serde(flatten)]
    pub all: LongRangeSubset,
    /// The far-copyable targets among them.
    pub far_copyable: LongRangeSubset,
    /// Confidence level of the intervals.
    pub level: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
}

/// Per-document sums of one subset: `[base, hippo, memory_off, full]` NLL sums and the count.
struct Sums {
    nll: Vec<[f64; 4]>,
    n: Vec<f64>,
}

impl Sums {
    fn subset(&self, level: f64, resamples: usize, seed: u64, full: bool) -> LongRangeSubset {
        let total = |c: &[f64], s: usize| -> f64 {
            self.nll.iter().zip(c).map(|(x, w)| x[s] * w).sum::<f64>()
        };
        let count = |c: &[f64]| self.n.iter().zip(c).map(|(n, w)| n * w).sum::<f64>();
        let ppl = |c: &[f64], s: usize| (total(c, s) / count(c)).exp();
        let gain = |c: &[f64]| 1.0 - ((total(c, 1) - total(c, 2)) / count(c)).exp();
        // (NLL of scorer `from` − NLL of HippoFormer) / (NLL base − NLL full context).
        let share = |c: &[f64], from: usize| {
            let denom = total(c, 0) - total(c, 3);
            if denom > 0.0 {
                (total(c, from) - total(c, 1)) / denom
            } else {
                f64::NAN
            }
        };
        let gap = |c: &[f64]| share(c, 0);
        let memory_gap = |c: &[f64]| share(c, 2);
        // Only documents with targets in the subset are resampled.
        let docs: Vec<usize> = (0..self.n.len()).filter(|&d| self.n[d] > 0.0).collect();
        let weights = |c: &[f64]| {
            let mut w = vec![0.0; self.n.len()];
            for (k, &d) in docs.iter().enumerate() {
                w[d] = c[k];
            }
            w
        };
        let ones = vec![1.0; self.n.len()];
        let interval = |f: &dyn Fn(&[f64]) -> f64| {
            bootstrap_statistic(docs.len(), |c| f(&weights(c)), level, resamples, seed).ok()
        };
        let tokens = count(&ones) as usize;
        let gap_point = gap(&ones);
        LongRangeSubset {
            tokens,
            documents: docs.len(),
            ppl: ScorerPpl {
                base: ppl(&ones, 0),
                hippoformer: ppl(&ones, 1),
                memory_off: ppl(&ones, 2),
                full_context: full.then(|| ppl(&ones, 3)),
            },
            memory_gain: if tokens > 0 { interval(&gain) } else { None },
            gap_closed: if full && gap_point.is_finite() {
                interval(&gap)
            } else {
                None
            },
            memory_gap_closed: if full && gap_point.is_finite() {
                interval(&memory_gap)
            } else {
                None
            },
        }
    }
}

/// Whether each target of a document is far-copyable (see the module docs): `tokens[j + 1]`
/// occurs among `tokens[..start]` but not among `tokens[start..=j]`, where `start` is the
/// document index of the first real token of the segment that reads input `j`.
pub fn far_copyable(tokens: &[u32], layout: &SegmentLayout) -> Vec<bool> {
    let n = tokens.len();
    let mut out = Vec::with_capacity(n.saturating_sub(1));
    let mut earlier: HashSet<u32> = HashSet::new();
    let mut current: HashSet<u32> = HashSet::new();
    let mut seg = usize::MAX;
    for j in 0..n.saturating_sub(1) {
        let (k, _) = layout.locate(j);
        if k != seg {
            // A new segment: what was current becomes earlier.
            earlier.extend(current.drain());
            seg = k;
        }
        current.insert(tokens[j]);
        let y = tokens[j + 1];
        out.push(earlier.contains(&y) && !current.contains(&y));
    }
    out
}

/// The long-range numbers of four traces of the same corpus (`full` optional).
pub fn long_range(
    corpus: &TokenizedCorpus,
    base: &Trace,
    hippo: &Trace,
    memory_off: &Trace,
    full: Option<&Trace>,
    segment_from: usize,
    seed: u64,
) -> Result<LongRange> {
    let layout = hippo.layout;
    let traces: Vec<&Trace> = [Some(base), Some(hippo), Some(memory_off), full]
        .into_iter()
        .flatten()
        .collect();
    for t in &traces {
        if t.nll.len() != corpus.docs.len() {
            return Err(EvalError::Inconsistent(format!(
                "a trace covers {} documents, the corpus has {}",
                t.nll.len(),
                corpus.docs.len()
            )));
        }
        if t.layout != layout {
            return Err(EvalError::Inconsistent(
                "the traces were cut into segments differently".into(),
            ));
        }
    }
    let n_docs = corpus.docs.len();
    let mut all = Sums {
        nll: vec![[0.0; 4]; n_docs],
        n: vec![0.0; n_docs],
    };
    let mut far = Sums {
        nll: vec![[0.0; 4]; n_docs],
        n: vec![0.0; n_docs],
    };
    for (d, doc) in corpus.docs.iter().enumerate() {
        let copyable = far_copyable(&doc.tokens, &layout);
        for (j, &fc) in copyable.iter().enumerate() {
            if layout.locate(j).0 < segment_from {
                continue;
            }
            let mut x = [0.0; 4];
            for (s, t) in [Some(base), Some(hippo), Some(memory_off), full]
                .into_iter()
                .enumerate()
            {
                if let Some(t) = t {
                    x[s] = *t.nll[d].get(j).ok_or_else(|| {
                        EvalError::Inconsistent(format!(
                            "target {j} of document {d} is missing from a trace"
                        ))
                    })?;
                }
            }
            for (sums, on) in [(&mut all, true), (&mut far, fc)] {
                if on {
                    for (acc, v) in sums.nll[d].iter_mut().zip(x) {
                        *acc += v;
                    }
                    sums.n[d] += 1.0;
                }
            }
        }
    }
    let (level, resamples) = (0.95, 2000);
    Ok(LongRange {
        segment_from,
        seq_len: layout.seq_len,
        all: all.subset(level, resamples, seed, full.is_some()),
        far_copyable: far.subset(level, resamples, seed, full.is_some()),
        level,
        resamples,
    })
}
