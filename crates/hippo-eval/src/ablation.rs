//! Ablations: the typed `results.json` of a set of (variant, seed) runs and its statistics.
//!
//! Each variant is trained and evaluated over several seeds on the identical test documents.
//! [`summarise`] gives, per variant, the perplexity over seeds with a Student t interval taken
//! on the NLL, and against `full`: the Δ mean per-document NLL with a paired bootstrap
//! interval, a two-sided Wilcoxon signed-rank p over documents (per-document NLL averaged over
//! seeds), Holm-adjusted across variants. [`markdown`] and [`figure`] present the result.

use hippo_model::HippoFormerConfig;
use serde::{Deserialize, Serialize};

use crate::{EvalError, Result, stats};

fn stat(e: stats::StatsError) -> EvalError {
    EvalError::Inconsistent(format!("ablation statistics: {e}"))
}

/// One finished (variant, seed) run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Variant name.
    pub variant: String,
    /// Seed (model init, data order).
    pub seed: u64,
    /// The effective config.
    pub config: HippoFormerConfig,
    /// Optimizer steps trained.
    pub steps: usize,
    /// Training tokens/s.
    pub train_tok_s: f64,
    /// Evaluation: tokens scored.
    pub tokens: usize,
    /// Mean NLL per token.
    pub mean_nll: f64,
    /// exp(mean NLL).
    pub token_ppl: f64,
    /// Bits per byte.
    pub bits_per_byte: f64,
    /// Σ NLL and token count per evaluated document, in corpus order.
    pub per_document: Vec<(f64, usize)>,
}

/// One variant over its seeds, and its comparison with `full`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VariantSummary {
    /// Variant name.
    pub variant: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Token perplexity over seeds: exp(mean over seeds of the mean NLL).
    pub ppl_mean: f64,
    /// exp of the 95% Student-t interval of the mean NLL over seeds (lo, hi); a point with one
    /// seed.
    pub ppl_ci: (f64, f64),
    /// Mean NLL per token, mean over seeds.
    pub nll_mean: f64,
    /// Δ mean per-document NLL vs full (variant − full; > 0 = worse), with its 95% paired
    /// bootstrap interval over documents. `None` for `full`.
    pub delta_nll: Option<(f64, f64, f64)>,
    /// Two-sided Wilcoxon signed-rank p-value over documents (per-document NLL, averaged over
    /// seeds), raw and Holm-adjusted across variants.
    pub p_wilcoxon: Option<f64>,
    /// Holm-adjusted p-value.
    pub p_holm: Option<f64>,
}

/// `results.json` of an ablation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AblationResults {
    /// Git commit of the code.
    pub git_commit: String,
    /// Base model.
    pub base_model: String,
    /// Corpus spec; training on its train split, evaluation on its test split.
    pub corpus: String,
    /// Documents evaluated.
    pub eval_docs: usize,
    /// Training steps per run.
    pub train_steps: usize,
    /// Segment length.
    pub seq_len: usize,
    /// The checkpoint every run started from (its weights; the variants' configs overlay its
    /// config), or `None` for runs trained from the initialisation.
    #[serde(default)]
    pub init_from: Option<String>,
    /// Each test document was scored on its first this many tokens (`None`: whole documents).
    #[serde(default)]
    pub eval_doc_tokens: Option<usize>,
    /// Bootstrap resamples and seed of the paired tests.
    pub resamples: usize,
    /// Variants, `full` first.
    pub variants: Vec<VariantSummary>,
}

/// Mean NLL per token of each document.
fn doc_nll(r: &RunResult) -> Vec<f64> {
    r.per_document
        .iter()
        .map(|&(s, n)| if n == 0 { 0.0 } else { s / n as f64 })
        .collect()
}

/// Per-document NLL averaged over a variant's seeds.
fn seed_mean_doc_nll(runs: &[&RunResult]) -> Vec<f64> {
    let docs = runs.first().map_or(0, |r| r.per_document.len());
    (0..docs)
        .map(|i| runs.iter().map(|r| doc_nll(r)[i]).sum::<f64>() / runs.len() as f64)
        .collect()
}

/// Aggregates finished runs: mean ± CI over seeds, paired per-document tests vs `full`, Holm.
pub fn summarise(
    runs: &[RunResult],
    order: &[String],
    resamples: usize,
) -> Result<Vec<VariantSummary>> {
    let of = |v: &str| -> Vec<&RunResult> { runs.iter().filter(|r| r.variant == v).collect() };
    let full = of("full");
    if full.is_empty() {
        return Err(EvalError::Inconsistent("no finished run of `full`".into()));
    }
    let full_docs = seed_mean_doc_nll(&full);
    let mut out = Vec::new();
    for name in order {
        let rs = of(name);
        if rs.is_empty() {
            continue;
        }
        // Perplexity over seeds: exp of the mean NLL, with the t interval taken on the NLL
        // (so the interval is positive and matches the geometric mean of the perplexities).
        let nll: Vec<f64> = rs.iter().map(|r| r.mean_nll).collect();
        let nll_mean = nll.iter().sum::<f64>() / nll.len() as f64;
        let ci = if nll.len() >= 2 {
            let i = stats::mean_ci_t(&nll, 0.95).map_err(stat)?;
            (i.lo.exp(), i.hi.exp())
        } else {
            (nll_mean.exp(), nll_mean.exp())
        };
        let (delta, p) = if name == "full" {
            (None, None)
        } else {
            let docs = seed_mean_doc_nll(&rs);
            if docs.len() != full_docs.len() {
                return Err(EvalError::Inconsistent(format!(
                    "variant {name} was evaluated on {} documents, full on {}",
                    docs.len(),
                    full_docs.len()
                )));
            }
            let paired =
                stats::paired_bootstrap(&docs, &full_docs, 0.95, resamples, 0).map_err(stat)?;
            let p = if docs.len() >= 2 {
                Some(
                    stats::wilcoxon_signed_rank(&docs, &full_docs)
                        .map_err(stat)?
                        .p_value,
                )
            } else {
                None
            };
            (Some((paired.mean_diff, paired.ci.lo, paired.ci.hi)), p)
        };
        out.push(VariantSummary {
            variant: name.clone(),
            seeds: rs.iter().map(|r| r.seed).collect(),
            ppl_mean: nll_mean.exp(),
            ppl_ci: ci,
            nll_mean,
            delta_nll: delta,
            p_wilcoxon: p,
            p_holm: None,
        });
    }
    let raw: Vec<(usize, f64)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.p_wilcoxon.map(|p| (i, p)))
        .collect();
    let adjusted = stats::holm(&raw.iter().map(|&(_, p)| p).collect::<Vec<_>>()).map_err(stat)?;
    for ((i, _), a) in raw.iter().zip(adjusted) {
        out[*i].p_holm = Some(a);
    }
    Ok(out)
}

/// The markdown table of an ablation.
pub fn markdown(r: &AblationResults) -> String {
    let start = r
        .init_from
        .as_ref()
        .map_or(String::new(), |c| format!(", from the checkpoint `{c}`"));
    let clip = r
        .eval_doc_tokens
        .map_or(String::new(), |n| format!(", first {n} tokens of each"));
    let mut s = format!(
        "# Ablations\n\nBase `{}`, corpus `{}` (train → test, {} documents{clip}), {} steps × seq {}{start}, commit `{}`.\n\
         Δ NLL = variant − full per document (nats/token; > 0 = worse), paired bootstrap 95% CI; \
         p = two-sided Wilcoxon signed-rank over documents, Holm-adjusted across variants.\n\n\
         | variant | seeds | token ppl (95% CI over seeds) | Δ NLL vs full [95% CI] | p (Wilcoxon) | p (Holm) |\n\
         |---|---|---|---|---|---|\n",
        r.base_model, r.corpus, r.eval_docs, r.train_steps, r.seq_len, r.git_commit
    );
    for v in &r.variants {
        let delta = v.delta_nll.map_or("—".to_string(), |(d, lo, hi)| {
            format!("{d:+.4} [{lo:+.4}, {hi:+.4}]")
        });
        let p = |x: Option<f64>| x.map_or("—".to_string(), |p| format!("{p:.3}"));
        s.push_str(&format!(
            "| {} | {} | {:.3} [{:.3}, {:.3}] | {} | {} | {} |\n",
            v.variant,
            v.seeds.len(),
            v.ppl_mean,
            v.ppl_ci.0,
            v.ppl_ci.1,
            delta,
            p(v.p_wilcoxon),
            p(v.p_holm)
        ));
    }
    s
}

/// Writes the ablation bars figure (PNG + SVG) of `r` under `dir`.
#[cfg(feature = "figures")]
pub fn figure(
    r: &AblationResults,
    dir: &std::path::Path,
) -> crate::figures::Result<crate::figures::FigurePaths> {
    let bars: Vec<crate::figures::Bar> = r
        .variants
        .iter()
        .map(|v| crate::figures::Bar {
            label: v.variant.clone(),
            mean: v.ppl_mean,
            lo: v.ppl_ci.0,
            hi: v.ppl_ci.1,
        })
        .collect();
    crate::figures::ablation_bars(
        &bars,
        "token perplexity (mean, 95% CI over seeds)",
        &dir.join("ablation_bars"),
    )
}
