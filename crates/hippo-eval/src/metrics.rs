//! The paper's metrics, each with an explicit definition.
//!
//! * **Content/function-word salience ratio** ([`content_function_ratio`]): tokens are mapped to
//!   the whitespace-separated words of the original text through the tokenizer's byte offsets
//!   ([`token_words`]: a token belongs to the word holding its first non-whitespace byte;
//!   tokens made only of whitespace, and BOS, belong to none). A word's salience is the mean
//!   salience of its tokens. A word is a *function word* when its normalised form
//!   ([`normalise_word`]) is in [`FUNCTION_WORDS`], a *content word* when it is not and has a
//!   letter; other words (numbers, punctuation) are neither. The ratio is mean content-word
//!   salience / mean function-word salience (over word occurrences).
//! * **Long-range benefit** ([`long_range_benefit`]): per document, the base model's mean NLL
//!   minus HippoFormer's on the same targets of the late segments (segment index ≥
//!   `min_segment`); the mean over documents with a 95 % confidence interval. Positive = memory
//!   helps. This is measured against the base model, never early-vs-late of one model.
//! * **Buffer priority** ([`buffer_priority`]): per document, the mean effective priority
//!   `P·d^age` of the occupied slots when its last segment has been committed; the mean over
//!   documents (with a confidence interval).
//! * **Temporal coherence** ([`temporal_coherence`]): the lag-1 autocorrelation of salience
//!   within segments ([`lag1_autocorrelation`]), reported raw, next to the value the smoothing
//!   kernel alone produces on i.i.d. input: in closed form (`Σ c_j c_{j+1} / Σ c_j²`, which is
//!   `(w − 1)/w` for a width-`w` moving average) and measured on seeded uniform noise of the
//!   same segment shape ([`kernel_lag1_on_noise`]). A salience that is merely smoothed noise
//!   scores the reference value; only the excess says anything about the gate.

use hippo_data::{Document, TokenizedCorpus};
use serde::{Deserialize, Serialize};

use crate::{BufferSnapshot, EvalError, PplReport, Result, Trace};

/// English function words: NLTK's English stop-word list (`nltk_data/corpora/stopwords/english`,
/// 179 entries: pronouns, determiners, auxiliaries, prepositions, conjunctions, and the clitic
/// fragments `s`, `t`, `ll`, `don`, … that its tokenizer produces), in its order.
pub const FUNCTION_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "you're",
    "you've",
    "you'll",
    "you'd",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "she's",
    "her",
    "hers",
    "herself",
    "it",
    "it's",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "that'll",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "don't",
    "should",
    "should've",
    "now",
    "d",
    "ll",
    "m",
    "o",
    "re",
    "ve",
    "y",
    "ain",
    "aren",
    "aren't",
    "couldn",
    "couldn't",
    "didn",
    "didn't",
    "doesn",
    "doesn't",
    "hadn",
    "hadn't",
    "hasn",
    "hasn't",
    "haven",
    "haven't",
    "isn",
    "isn't",
    "ma",
    "mightn",
    "mightn't",
    "mustn",
    "mustn't",
    "needn",
    "needn't",
    "shan",
    "shan't",
    "shouldn",
    "shouldn't",
    "wasn",
    "wasn't",
    "weren",
    "weren't",
    "won",
    "won't",
    "wouldn",
    "wouldn't",
];

/// Confidence level of every interval here.
pub const CI_LEVEL: f64 = 0.95;

/// Mean and the 95 % Student t interval of `values` ([`crate::stats::mean_ci_t`]:
/// mean ± t_{0.975, n−1}·s/√n). `(NaN, NaN, NaN)` for no value; a point for one.
fn mean_ci(values: &[f64]) -> (f64, f64, f64) {
    match values.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        1 => (values[0], values[0], values[0]),
        _ => crate::stats::mean_ci_t(values, CI_LEVEL)
            .map_or((f64::NAN, f64::NAN, f64::NAN), |i| (i.mean, i.lo, i.hi)),
    }
}

/// A document's text with the byte span of each of its tokens (BOS included, as an empty span),
/// aligned with the token ids evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocText {
    /// The exact text that was tokenised.
    pub text: String,
    /// `offsets[i]`: byte range `[start, end)` of token `i` in `text`.
    pub offsets: Vec<(usize, usize)>,
}

/// The [`DocText`]s of `corpus`'s documents: each document's raw text from `docs` (matched by
/// id; the documents the corpus was tokenised from) with the byte span of every token, from
/// `tokenizer`, which must be the one that made the corpus. An error when a document is
/// missing or the tokenizer's ids differ from the corpus's (a different tokenizer or text).
pub fn doc_texts(
    corpus: &TokenizedCorpus,
    docs: &[Document],
    tokenizer: &hippo_gemma::GemmaTokenizer,
) -> Result<Vec<DocText>> {
    let by_id: std::collections::HashMap<&str, &str> = docs
        .iter()
        .map(|d| (d.id.as_str(), d.text.as_str()))
        .collect();
    corpus
        .docs
        .iter()
        .map(|d| {
            let text = by_id.get(d.id.as_str()).ok_or_else(|| {
                EvalError::Inconsistent(format!("no text for document `{}`", d.id))
            })?;
            let (ids, offsets) = tokenizer.encode_with_offsets(text, true)?;
            if ids != d.tokens {
                return Err(EvalError::Inconsistent(format!(
                    "the tokenizer's ids for document `{}` differ from the token cache's",
                    d.id
                )));
            }
            Ok(DocText {
                text: (*text).to_string(),
                offsets,
            })
        })
        .collect()
}

/// Lower-cases a word, maps the typographic apostrophe to `'`, and trims characters that are
/// neither alphanumeric nor an inner apostrophe from both ends (`"The,"` → `the`, `"(don’t)"` →
/// `don't`).
pub fn normalise_word(word: &str) -> String {
    let w = word.to_lowercase().replace('\u{2019}', "'");
    w.trim_matches(|c: char| !c.is_alphanumeric()).to_string()
}

/// Whether `word` (any case or surrounding punctuation) is in [`FUNCTION_WORDS`].
pub fn is_function_word(word: &str) -> bool {
    FUNCTION_WORDS.contains(&normalise_word(word).as_str())
}

/// The class of a word for the salience ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordClass {
    /// In [`FUNCTION_WORDS`].
    Function,
    /// Not a function word, and has a letter.
    Content,
    /// Neither (numbers, punctuation).
    Other,
}

/// The class of `word`.
pub fn word_class(word: &str) -> WordClass {
    if is_function_word(word) {
        WordClass::Function
    } else if word.chars().any(char::is_alphabetic) {
        WordClass::Content
    } else {
        WordClass::Other
    }
}

/// Byte ranges of the whitespace-separated words of `text` (as `str::split_whitespace`).
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// For each token span, the index of the word (of [`word_spans`]) holding its first
/// non-whitespace byte; `None` for empty or all-whitespace spans and spans outside the text.
pub fn token_words(text: &str, offsets: &[(usize, usize)]) -> Vec<Option<usize>> {
    let words = word_spans(text);
    offsets
        .iter()
        .map(|&(s, e)| {
            let e = e.min(text.len());
            if s >= e {
                return None;
            }
            // A byte-fallback token may start inside a character: start at its boundary.
            let s0 = (0..=s)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let first = text[s0..]
                .char_indices()
                .map(|(i, c)| (s0 + i, c))
                .take_while(|(i, _)| *i < e)
                .find(|(_, c)| !c.is_whitespace())
                .map(|(i, _)| i)?;
            let k = words.partition_point(|w| w.1 <= first);
            words.get(k).filter(|w| w.0 <= first).map(|_| k)
        })
        .collect()
}

/// Mean salience of content and of function words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentFunction {
    /// Mean salience over content-word occurrences.
    pub content_mean: f64,
    /// Mean salience over function-word occurrences.
    pub function_mean: f64,
    /// `content_mean / function_mean`.
    pub ratio: f64,
    /// Content-word occurrences with a scored token.
    pub content_words: usize,
    /// Function-word occurrences with a scored token.
    pub function_words: usize,
    /// Where the function-word list comes from.
    pub function_word_list: String,
}

/// The content/function-word salience ratio (see the [module docs](self)). `salience[d][i]` is
/// the salience of token `i` of document `d` (NaN = not scored, skipped).
pub fn content_function_ratio(
    texts: &[DocText],
    salience: &[Vec<f64>],
) -> Result<Option<ContentFunction>> {
    if texts.len() != salience.len() {
        return Err(EvalError::Inconsistent(format!(
            "{} document texts for {} scored documents",
            texts.len(),
            salience.len()
        )));
    }
    let (mut content, mut function) = (Vec::new(), Vec::new());
    for (doc, sal) in texts.iter().zip(salience) {
        let words = word_spans(&doc.text);
        let tw = token_words(&doc.text, &doc.offsets);
        let mut acc = vec![(0.0f64, 0usize); words.len()];
        for (i, &s) in sal.iter().enumerate() {
            if let Some(Some(w)) = tw.get(i)
                && !s.is_nan()
            {
                acc[*w].0 += s;
                acc[*w].1 += 1;
            }
        }
        for (w, (sum, n)) in acc.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let mean = sum / *n as f64;
            match word_class(&doc.text[words[w].0..words[w].1]) {
                WordClass::Content => content.push(mean),
                WordClass::Function => function.push(mean),
                WordClass::Other => {}
            }
        }
    }
    if content.is_empty() || function.is_empty() {
        return Ok(None);
    }
    let content_mean = content.iter().sum::<f64>() / content.len() as f64;
    let function_mean = function.iter().sum::<f64>() / function.len() as f64;
    Ok(Some(ContentFunction {
        content_mean,
        function_mean,
        ratio: content_mean / function_mean,
        content_words: content.len(),
        function_words: function.len(),
        function_word_list: format!("NLTK English stop words ({} entries)", FUNCTION_WORDS.len()),
    }))
}

/// Lag-1 autocorrelation pooled over sequences: each sequence is centred on its own mean, then
/// `Σ (x_t − m)(x_{t+1} − m) / Σ (x_t − m)²` over all sequences (the usual biased sample ACF).
/// `None` without variance.
pub fn lag1_autocorrelation(sequences: &[Vec<f64>]) -> Option<f64> {
    let (mut num, mut den, mut raw) = (0.0, 0.0, 0.0);
    for s in sequences.iter().filter(|s| s.len() >= 2) {
        let m = s.iter().sum::<f64>() / s.len() as f64;
        num += s.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>();
        den += s.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        raw += s.iter().map(|x| x * x).sum::<f64>();
    }
    // Rounding leaves a constant sequence a variance of ~1e-32: that is no variance.
    (den > 1e-12 * raw).then(|| num / den)
}

/// Lag-1 autocorrelation of `y_t = Σ_j c_j x_{t−j}` for i.i.d. `x`: `Σ c_j c_{j+1} / Σ c_j²`
/// (`(w − 1)/w` for the width-`w` moving average).
pub fn kernel_lag1_closed_form(kernel: &[f64]) -> f64 {
    let den: f64 = kernel.iter().map(|c| c * c).sum();
    let num: f64 = kernel.windows(2).map(|w| w[0] * w[1]).sum();
    num / den
}

/// The causal convolution of the salience gate (`y_t = Σ_j c_j x_{t−j}`, `x` = 0 before the
/// segment) applied to seeded i.i.d. uniform noise in `segments` segments of `segment_len`,
/// measured with [`lag1_autocorrelation`].
pub fn kernel_lag1_on_noise(
    kernel: &[f64],
    segment_len: usize,
    segments: usize,
    seed: u64,
) -> Option<f64> {
    let mut rng = hippo_data::seed::SplitMix64(seed);
    let seqs: Vec<Vec<f64>> = (0..segments)
        .map(|_| {
            let x: Vec<f64> = (0..segment_len)
                .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
                .collect();
            (0..segment_len)
                .map(|t| {
                    kernel
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j <= t)
                        .map(|(j, c)| c * x[t - j])
                        .sum()
                })
                .collect()
        })
        .collect();
    lag1_autocorrelation(&seqs)
}

/// Temporal coherence of salience and its noise reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalCoherence {
    /// Lag-1 autocorrelation of salience within segments (raw).
    pub salience_lag1: Option<f64>,
    /// Segments behind it.
    pub segments: usize,
    /// The gate's smoothing kernel `c_j` (weight of `t − j`).
    pub kernel: Vec<f64>,
    /// `(w − 1)/w`: a width-`w` moving average of i.i.d. input (`w` = kernel width).
    pub moving_average_closed_form: f64,
    /// `Σ c_j c_{j+1} / Σ c_j²` of the kernel as it is.
    pub kernel_closed_form: f64,
    /// The kernel applied to seeded uniform noise in segments of the evaluated shape.
    pub kernel_on_random_input: Option<f64>,
    /// Seed of that noise.
    pub noise_seed: u64,
}

/// Temporal coherence of the salience in `trace` (see the [module docs](self)).
pub fn temporal_coherence(trace: &Trace, kernel: &[f64], noise_seed: u64) -> TemporalCoherence {
    let layout = trace.layout;
    let l = layout.seq_len.max(1);
    let segs: Vec<Vec<f64>> = trace
        .salience
        .iter()
        .flat_map(|d| {
            (0..layout.count(d.len())).map(|k| {
                d[layout.range(k, d.len())]
                    .iter()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .collect()
            })
        })
        .filter(|s: &Vec<f64>| s.len() >= 2)
        .collect();
    let w = kernel.len().max(1) as f64;
    TemporalCoherence {
        salience_lag1: lag1_autocorrelation(&segs),
        segments: segs.len(),
        kernel: kernel.to_vec(),
        moving_average_closed_form: (w - 1.0) / w,
        kernel_closed_form: kernel_lag1_closed_form(kernel),
        kernel_on_random_input: kernel_lag1_on_noise(
            kernel,
            l,
            segs.len().clamp(64, 4096),
            noise_seed,
        ),
        noise_seed,
    }
}

/// The memory summary of one stream: occupied slots and the mean of their effective priorities
/// (`eff[i]`, as `MemoryState::effective_priorities` gives them).
pub fn snapshot(effective_priorities: &[f64], occupied: &[bool]) -> BufferSnapshot {
    let live: Vec<f64> = effective_priorities
        .iter()
        .zip(occupied)
        .filter(|(_, v)| **v)
        .map(|(e, _)| *e)
        .collect();
    BufferSnapshot {
        entries: live.len(),
        mean_effective_priority: (!live.is_empty())
            .then(|| live.iter().sum::<f64>() / live.len() as f64),
    }
}

/// Mean effective priority of the buffers at document ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferPriority {
    /// Documents with a snapshot.
    pub documents: usize,
    /// Of those, documents whose buffer held anything.
    pub documents_with_entries: usize,
    /// Mean over those documents of their mean effective priority.
    pub mean: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end of the 95 % interval.
    pub hi: f64,
    /// Mean occupied slots at a document's end.
    pub mean_entries: f64,
}

/// Buffer priority from the document-end snapshots of a trace (`None` without memory).
pub fn buffer_priority(trace: &Trace) -> Option<BufferPriority> {
    let snaps: Vec<&BufferSnapshot> = trace.end_of_document.iter().flatten().collect();
    if snaps.is_empty() {
        return None;
    }
    let values: Vec<f64> = snaps
        .iter()
        .filter_map(|s| s.mean_effective_priority)
        .collect();
    let (mean, lo, hi) = mean_ci(&values);
    Some(BufferPriority {
        documents: snaps.len(),
        documents_with_entries: values.len(),
        mean,
        lo,
        hi,
        mean_entries: snaps.iter().map(|s| s.entries as f64).sum::<f64>() / snaps.len() as f64,
    })
}

/// Base − HippoFormer NLL on late segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongRangeBenefit {
    /// First segment index counted as late.
    pub min_segment: usize,
    /// Documents that reach it.
    pub documents: usize,
    /// Late targets over those documents.
    pub tokens: usize,
    /// Mean over documents of (base mean NLL − HippoFormer mean NLL) on their late targets.
    pub mean: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end of the 95 % interval.
    pub hi: f64,
    /// Token-weighted base NLL over all late targets.
    pub pooled_base_nll: f64,
    /// Token-weighted HippoFormer NLL over all late targets.
    pub pooled_hippo_nll: f64,
    /// `pooled_base_nll − pooled_hippo_nll`.
    pub pooled: f64,
    /// The per-document differences, in corpus order.
    pub per_document: Vec<f64>,
}

/// Long-range benefit of `hippo` over `base` (same documents and segments) from segment
/// `min_segment` on; `None` when no document reaches it.
pub fn long_range_benefit(
    base: &PplReport,
    hippo: &PplReport,
    min_segment: usize,
) -> Result<Option<LongRangeBenefit>> {
    if base.per_document_by_segment.len() != hippo.per_document_by_segment.len() {
        return Err(EvalError::Inconsistent(format!(
            "base scored {} documents, HippoFormer {}",
            base.per_document_by_segment.len(),
            hippo.per_document_by_segment.len()
        )));
    }
    let (mut diffs, mut tokens, mut sb, mut sh) = (Vec::new(), 0usize, 0.0, 0.0);
    for (d, (b, h)) in base
        .per_document_by_segment
        .iter()
        .zip(&hippo.per_document_by_segment)
        .enumerate()
    {
        let late = |v: &Vec<(f64, usize)>| {
            v.iter()
                .skip(min_segment)
                .fold((0.0, 0usize), |a, s| (a.0 + s.0, a.1 + s.1))
        };
        let (lb, nb) = late(b);
        let (lh, nh) = late(h);
        if nb != nh {
            return Err(EvalError::Inconsistent(format!(
                "document {d}: base has {nb} late targets, HippoFormer {nh}"
            )));
        }
        if nb == 0 {
            continue;
        }
        diffs.push(lb / nb as f64 - lh / nh as f64);
        tokens += nb;
        sb += lb;
        sh += lh;
    }
    if diffs.is_empty() {
        return Ok(None);
    }
    let (mean, lo, hi) = mean_ci(&diffs);
    let (pb, ph) = (sb / tokens as f64, sh / tokens as f64);
    Ok(Some(LongRangeBenefit {
        min_segment,
        documents: diffs.len(),
        tokens,
        mean,
        lo,
        hi,
        pooled_base_nll: pb,
        pooled_hippo_nll: ph,
        pooled: pb - ph,
        per_document: diffs,
    }))
}

/// All of the paper's metrics of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperMetrics {
    /// Content/function-word salience ratio (`None` without document texts or without both
    /// kinds of word).
    pub content_function: Option<ContentFunction>,
    /// Long-range benefit against the base (`None` when no document reaches the late segments).
    pub long_range_benefit: Option<LongRangeBenefit>,
    /// Long-range benefit of the base with the longer context over the base: what full
    /// attention to the earlier segments recovers (an upper bound for memory).
    pub long_context_benefit: Option<LongRangeBenefit>,
    /// Buffer priority at document ends (`None` with memory off).
    pub buffer_priority: Option<BufferPriority>,
    /// Temporal coherence of salience.
    pub temporal_coherence: TemporalCoherence,
    /// Confidence level of every interval.
    pub ci_level: f64,
    /// How the intervals are computed.
    pub ci_method: String,
    /// Whether the HippoFormer config leaks future tokens (then every number is invalid).
    pub leaky: bool,
}

/// Inputs of [`paper_metrics`].
#[derive(Debug, Clone, Copy)]
pub struct MetricInputs<'a> {
    /// The base model's report on the segments.
    pub base: &'a PplReport,
    /// The base model with the longer context, if scored.
    pub base_long: Option<&'a PplReport>,
    /// HippoFormer's report.
    pub hippo: &'a PplReport,
    /// HippoFormer's trace.
    pub trace: &'a Trace,
    /// Document texts with token offsets, aligned with the trace.
    pub texts: Option<&'a [DocText]>,
    /// The gate's smoothing kernel.
    pub kernel: &'a [f64],
    /// First late segment.
    pub min_segment: usize,
    /// Seed of the noise reference.
    pub noise_seed: u64,
}

/// Computes every metric.
pub fn paper_metrics(inputs: &MetricInputs<'_>) -> Result<PaperMetrics> {
    let content_function = match inputs.texts {
        Some(t) => content_function_ratio(t, &inputs.trace.salience)?,
        None => None,
    };
    Ok(PaperMetrics {
        content_function,
        long_range_benefit: long_range_benefit(inputs.base, inputs.hippo, inputs.min_segment)?,
        long_context_benefit: match inputs.base_long {
            Some(l) => long_range_benefit(inputs.base, l, inputs.min_segment)?,
            None => None,
        },
        buffer_priority: buffer_priority(inputs.trace),
        temporal_coherence: temporal_coherence(inputs.trace, inputs.kernel, inputs.noise_seed),
        ci_level: CI_LEVEL,
        ci_method: "mean ± t(0.975, n−1)·s/√n over documents (Student t)".into(),
        leaky: inputs.hippo.leaky,
    })
}
