//! One evaluation run as data: `results.json` ([`EvalResults::write`], [`EvalResults::read`])
//! and its markdown table ([`EvalResults::to_markdown`]), which is a pure function of the data,
//! so a results file read back renders the identical table.

use std::fmt::Write as _;
use std::path::Path;

use hippo_model::HippoFormerConfig;
use serde::{Deserialize, Serialize};

use crate::long_range::{LongRange, LongRangeSubset};
use crate::metrics::PaperMetrics;
use crate::stats::Interval;
use crate::{EvalError, PplReport, Result};

/// Version of the `results.json` layout.
pub const RESULTS_FORMAT: u32 = 1;

/// Seeds that shaped the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// `config.seed`: module initialisation and random salience.
    pub model: u64,
    /// The training run's seed (shuffling, dropout), when the checkpoint records one.
    pub training: Option<u64>,
    /// Seed of the noise behind the temporal-coherence reference.
    pub noise: u64,
}

/// Where the numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetadata {
    /// `git rev-parse HEAD` of the evaluating build's checkout, or `unknown`.
    pub git_commit: String,
    /// When the run finished (UTC, RFC 3339).
    pub timestamp: String,
    /// The full HippoFormer config evaluated.
    pub config: HippoFormerConfig,
    /// The checkpoint directory, if one was loaded.
    pub checkpoint: Option<String>,
    /// Its optimizer step.
    pub checkpoint_step: Option<u64>,
    /// The base model's path.
    pub base_model: String,
    /// The tokenizer's path.
    pub tokenizer: String,
    /// Seeds.
    pub seeds: Seeds,
    /// Corpus spec (`wiki-sample`, `sotu`, `txt-dir:…`, …).
    pub corpus: String,
    /// Token cache key of the corpus split (identifies tokenizer and sources).
    pub corpus_key: String,
    /// Split evaluated.
    pub split: String,
    /// Document limit.
    pub max_docs: Option<usize>,
    /// Segment length (the context of the base and of HippoFormer).
    pub seq_len: usize,
    /// Streams (batch rows).
    pub streams: usize,
    /// Context of the long-context base, if scored.
    pub context: Option<usize>,
    /// First segment index counted as late.
    pub late_segment: usize,
    /// The config is not causal (evaluated with `--allow-leaky`): every HippoFormer number is
    /// invalid.
    pub leaky: bool,
    /// Device the run used.
    pub device: String,
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
}

/// A whole evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResults {
    /// [`RESULTS_FORMAT`].
    pub format: u32,
    /// Provenance.
    pub metadata: EvalMetadata,
    /// The base model on the identical segments.
    pub base: PplReport,
    /// The base model with the longer context (an upper bound), where it was scored.
    pub base_long_context: Option<PplReport>,
    /// HippoFormer, memory carried across each document's segments.
    pub hippoformer: PplReport,
    /// The same checkpoint with memory off, on the identical segments (memory's own share is
    /// `hippoformer` against this).
    #[serde(default)]
    pub memory_off: Option<PplReport>,
    /// The base with the whole document prefix in context (`--context full`).
    #[serde(default)]
    pub full_context: Option<PplReport>,
    /// Late-segment numbers of long documents (see [`crate::long_range`]).
    #[serde(default)]
    pub long_range: Option<LongRange>,
    /// The paper's metrics.
    pub metrics: PaperMetrics,
}

fn io_err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Io {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn ci(mean: f64, lo: f64, hi: f64) -> String {
    format!("{mean:+.4} [{lo:+.4}, {hi:+.4}]")
}

impl EvalResults {
    /// Writes pretty JSON to `path` (its directory must exist).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| io_err(path, e.to_string()))?;
        std::fs::write(path, json).map_err(|e| io_err(path, e.to_string()))
    }

    /// Reads a results file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e.to_string()))?;
        let r: Self = serde_json::from_str(&text)
            .map_err(|e| io_err(path, format!("not a results file: {e}")))?;
        if r.format != RESULTS_FORMAT {
            return Err(io_err(
                path,
                format!(
                    "results format {} (this build reads {RESULTS_FORMAT})",
                    r.format
                ),
            ));
        }
        Ok(r)
    }

    /// The markdown report: provenance, the perplexity table, NLL by segment, the metrics.
    pub fn to_markdown(&self) -> String {
        let m = &self.metadata;
        let leak = if m.leaky { " [LEAKY]" } else { "" };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HippoFormer evaluation — {} ({}), segments of {} tokens{leak}\n",
            m.corpus, m.split, m.seq_len
        );
        if m.leaky {
            let _ = writeln!(
                s,
                "**LEAKY: this config is not causal (query_mode = {:?}); it was evaluated with \
                 --allow-leaky and every HippoFormer number below is invalid.**\n",
                m.config.query_mode
            );
        }
        let _ = writeln!(
            s,
            "- checkpoint: {} (step {})\n- base model: {}\n- documents: {} (max_docs {}), streams {}\n- seeds: model {}, training {}, noise {}\n- git commit {} · {} · {} · {:.1} s\n",
            m.checkpoint.as_deref().unwrap_or("none (untrained config)"),
            m.checkpoint_step
                .map_or_else(|| "–".into(), |x| x.to_string()),
            m.base_model,
            self.base.documents,
            m.max_docs.map_or_else(|| "all".into(), |x| x.to_string()),
            m.streams,
            m.seeds.model,
            m.seeds
                .training
                .map_or_else(|| "–".into(), |x| x.to_string()),
            m.seeds.noise,
            m.git_commit,
            m.timestamp,
            m.device,
            m.elapsed_s
        );
        s.push_str(
            "| scorer | context | tokens | mean NLL | token PPL | word PPL | byte PPL | bits/byte |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut rows: Vec<(String, String, &PplReport)> =
            vec![("base".into(), m.seq_len.to_string(), &self.base)];
        if let (Some(r), Some(c)) = (&self.base_long_context, m.context) {
            rows.push(("base, long context (upper bound)".into(), c.to_string(), r));
        }
        if let Some(r) = &self.full_context {
            rows.push((
                "base, full document prefix (upper bound)".into(),
                "full".into(),
                r,
            ));
        }
        rows.push((
            format!("hippoformer{leak}"),
            format!("{} + memory", m.seq_len),
            &self.hippoformer,
        ));
        if let Some(r) = &self.memory_off {
            rows.push(("hippoformer, memory off".into(), m.seq_len.to_string(), r));
        }
        for (name, ctx, r) in &rows {
            let _ = writeln!(
                s,
                "| {name} | {ctx} | {} | {:.4} | {:.3} | {:.3} | {:.4} | {:.4} |",
                r.tokens, r.mean_nll, r.token_ppl, r.word_ppl, r.byte_ppl, r.bits_per_byte
            );
        }
        s.push_str("\n## Mean NLL by segment index\n\n| segment | tokens | base |");
        if self.base_long_context.is_some() {
            s.push_str(" base long context |");
        }
        let _ = writeln!(s, " hippoformer{leak} | base − hippoformer |");
        s.push_str("|---:|---:|---:|");
        if self.base_long_context.is_some() {
            s.push_str("---:|");
        }
        s.push_str("---:|---:|\n");
        for (k, n) in self.base.tokens_by_segment.iter().enumerate() {
            let b = self.base.nll_by_segment.get(k).copied().flatten();
            let h = self.hippoformer.nll_by_segment.get(k).copied().flatten();
            let _ = write!(s, "| {k} | {n} | {} |", opt(b, 4));
            if let Some(l) = &self.base_long_context {
                let _ = write!(
                    s,
                    " {} |",
                    opt(l.nll_by_segment.get(k).copied().flatten(), 4)
                );
            }
            let d = b.zip(h).map(|(b, h)| b - h);
            let _ = writeln!(s, " {} | {} |", opt(h, 4), opt(d, 4));
        }
        if let Some(lr) = &self.long_range {
            long_range_markdown(&mut s, lr, leak);
        }
        let x = &self.metrics;
        let _ = writeln!(
            s,
            "\n## Metrics{leak}\n\nIntervals: {:.0} %, {}.\n",
            x.ci_level * 100.0,
            x.ci_method
        );
        s.push_str("| metric | value | detail |\n|---|---|---|\n");
        match &x.long_range_benefit {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| long-range benefit (base − hippoformer NLL, segments ≥ {}) | {} | {} documents, {} tokens; pooled {:+.4} ({:.4} − {:.4}) |",
                    b.min_segment,
                    ci(b.mean, b.lo, b.hi),
                    b.documents,
                    b.tokens,
                    b.pooled,
                    b.pooled_base_nll,
                    b.pooled_hippo_nll
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| long-range benefit (segments ≥ {}) | – | no document reaches segment {} |",
                    m.late_segment, m.late_segment
                );
            }
        }
        if let Some(b) = &x.long_context_benefit {
            let _ = writeln!(
                s,
                "| long-context benefit (base − base long context, segments ≥ {}) | {} | upper bound; {} documents |",
                b.min_segment,
                ci(b.mean, b.lo, b.hi),
                b.documents
            );
        }
        match &x.content_function {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "| content/function salience ratio | {:.4} | content {:.4} ({} words), function {:.4} ({} words); {} |",
                    c.ratio,
                    c.content_mean,
                    c.content_words,
                    c.function_mean,
                    c.function_words,
                    c.function_word_list
                );
            }
            None => s.push_str("| content/function salience ratio | – | no document texts |\n"),
        }
        match &x.buffer_priority {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| buffer priority at document end | {} | {} of {} documents with entries; {:.1} entries on average |",
                    ci(b.mean, b.lo, b.hi),
                    b.documents_with_entries,
                    b.documents,
                    b.mean_entries
                );
            }
            None => s.push_str("| buffer priority at document end | – | memory off |\n"),
        }
        let t = &x.temporal_coherence;
        let _ = writeln!(
            s,
            "| temporal coherence (lag-1 autocorrelation of salience) | {} | kernel alone on random input: {} measured, {:.4} closed form ((w−1)/w = {:.4}); {} segments |",
            opt(t.salience_lag1, 4),
            opt(t.kernel_on_random_input, 4),
            t.kernel_closed_form,
            t.moving_average_closed_form,
            t.segments
        );
        s
    }
}

fn interval(x: &Option<Interval>, pct: bool) -> String {
    match x {
        Some(i) if pct => format!(
            "{:+.2}% [{:+.2}%, {:+.2}%]",
            100.0 * i.mean,
            100.0 * i.lo,
            100.0 * i.hi
        ),
        Some(i) => format!("{:+.3} [{:+.3}, {:+.3}]", i.mean, i.lo, i.hi),
        None => "–".into(),
    }
}

fn long_range_markdown(s: &mut String, lr: &LongRange, leak: &str) {
    let _ = writeln!(
        s,
        "\n## Long range{leak}: segments ≥ {} (0-based) of {}-token segments\n\n\
         Intervals: {:.0} % percentile bootstrap over documents ({} resamples). memory gain = \
         1 − ppl(hippoformer)/ppl(memory off); gap closed = (NLL base − NLL hippoformer)/(NLL base \
         − NLL full context). Far-copyable: targets that occur earlier in the document but not in \
         the segment being read.\n",
        lr.segment_from,
        lr.seq_len,
        lr.level * 100.0,
        lr.resamples
    );
    s.push_str(
        "| targets | documents | tokens | base | full context | hippoformer | memory off | memory gain | gap closed | of which memory |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let row = |s: &mut String, name: &str, x: &LongRangeSubset| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {} | {} | {} |",
            x.documents,
            x.tokens,
            x.ppl.base,
            opt(x.ppl.full_context, 3),
            x.ppl.hippoformer,
            x.ppl.memory_off,
            interval(&x.memory_gain, true),
            interval(&x.gap_closed, true),
            interval(&x.memory_gap_closed, true)
        );
    };
    row(s, "all late", &lr.all);
    row(s, "far-copyable", &lr.far_copyable);
}

/// The current time as RFC 3339 UTC (`2026-11-25T21:53:50Z`).
pub fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
