//! `cargo xtask calibrate`: a working memory with zero gradient steps.
//!
//! Line-searches the retrieval's score scale `θ` and the probability mixture's weight `λ` on a
//! held-out split ([`hippo_eval::calibrate`]: one streaming pass, every grid point scored on the
//! host), applies the best pair and writes a checkpoint (`--output`) that `eval`, `generate`
//! and `train --init-from` read, with `calibration.json` (every grid point) beside it.
//!
//! Exit code 2 for bad input: a malformed config or checkpoint, an unknown dataset or split, a
//! config without memory or without a probability path, a bad grid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use hippo_data::{CorpusSpec, Split};
use hippo_eval::calibrate::{CalibrationGrid, apply, calibrate};
use hippo_eval::{EvalOptions, Progress, truncated};
use hippo_gemma::GemmaTokenizer;
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::{HippoFormer, HippoFormerConfig};

use crate::eval::{data_err, eval_err, model_err};
use crate::usage;

/// Arguments of `calibrate`.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Config (TOML) of the model to calibrate; without it (and without --checkpoint), the
    /// built-in defaults.
    #[arg(long, conflicts_with = "checkpoint")]
    pub config: Option<PathBuf>,
    /// Calibrate a trained checkpoint instead (its weights are kept, θ and λ replaced).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Base model (default: the config's base_model).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Corpus: wiki-sample, sotu, txt-dir:<path>, ….
    #[arg(long, default_value = "sotu")]
    pub dataset: String,
    /// Split to calibrate on (never the test split you report).
    #[arg(long, default_value = "valid")]
    pub split: String,
    /// Use only the first N documents.
    #[arg(long)]
    pub max_docs: Option<usize>,
    /// Keep only the first N tokens of each document.
    #[arg(long)]
    pub max_doc_tokens: Option<usize>,
    /// Segment length.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Documents read in parallel.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Score scales θ to try (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub score_scales: Option<Vec<f64>>,
    /// Mixture weights λ to try (comma-separated, each in (0, 0.4995]).
    #[arg(long, value_delimiter = ',')]
    pub lambdas: Option<Vec<f64>>,
    /// Slopes a ≥ 0 of the confidence gate λ_t = 2λ·σ(a·(best similarity − c)) to try
    /// (comma-separated; 0 = a constant λ).
    #[arg(long, value_delimiter = ',')]
    pub gate_slopes: Option<Vec<f64>>,
    /// Centres c of that gate to try (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub gate_centers: Option<Vec<f64>>,
    /// Weights g ≥ 0 of the attention path to try (comma-separated; one streaming pass each;
    /// used only with memory_attention on; default 0,1).
    #[arg(long, value_delimiter = ',')]
    pub attention_weights: Option<Vec<f64>>,
    /// Where the calibrated checkpoint goes.
    #[arg(long, default_value = "runs/calibrated")]
    pub output: PathBuf,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The first `n` tokens of every document (all of them without a limit). A clipped document's
/// word and byte counts are those of the decoded kept tokens (BOS excluded), so word and byte
/// perplexities stay per word and byte of what was scored.
pub fn clipped(
    corpus: Arc<hippo_data::TokenizedCorpus>,
    n: Option<usize>,
    tok: &GemmaTokenizer,
) -> Result<Arc<hippo_data::TokenizedCorpus>> {
    match n {
        Some(n) if corpus.docs.iter().any(|d| d.tokens.len() > n) => {
            let mut c = (*corpus).clone();
            for d in c.docs.iter_mut().filter(|d| d.tokens.len() > n) {
                d.tokens.truncate(n);
                let text = tok
                    .decode(&d.tokens[1..])
                    .with_context(|| format!("decoding the kept tokens of {}", d.id))?;
                d.stats = hippo_data::TextStats::of(&text);
            }
            Ok(Arc::new(c))
        }
        _ => Ok(corpus),
    }
}

/// Runs `calibrate`.
#[allow(clippy::print_stdout)]
pub fn run(args: &CalibrateArgs) -> Result<()> {
    let started = Instant::now();
    let device = crate::device::parse(&args.device).map_err(usage)?;
    let ckpt = args
        .checkpoint
        .as_deref()
        .map(crate::checkpoint_dir)
        .transpose()?;
    let config = match (&ckpt, &args.config) {
        (Some(d), _) => checkpoint::read_config(d).map_err(model_err)?,
        (None, p) => {
            HippoFormerConfig::from_toml_file_or_default(p.as_deref()).map_err(model_err)?
        }
    };
    let mut grid = CalibrationGrid::default();
    if let Some(s) = &args.score_scales {
        grid.score_scales = s.clone();
    }
    if let Some(l) = &args.lambdas {
        grid.lambdas = l.clone();
    }
    if let Some(a) = &args.gate_slopes {
        grid.gate_slopes = a.clone();
    }
    if let Some(c) = &args.gate_centers {
        grid.gate_centers = c.clone();
    }
    if let Some(g) = &args.attention_weights {
        grid.attention_weights = g.clone();
    }
    if args.max_doc_tokens.is_some_and(|n| n < 2) {
        return Err(usage(anyhow::anyhow!("--max-doc-tokens must be ≥ 2")));
    }
    let model_arg = match (&args.model, &ckpt) {
        (Some(m), _) => crate::base_model_arg(Some(m), &config.base_model)?,
        (None, Some(d)) => checkpoint::read_meta(d).map_err(model_err)?.base.path,
        (None, None) => crate::base_model_arg(None, &config.base_model)?,
    };
    let location = hippo_gemma::resolve(&model_arg)?;
    let tok_path = crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
    let tok = GemmaTokenizer::from_file(&tok_path)?;
    let spec: CorpusSpec = args.dataset.parse().map_err(usage)?;
    let split: Split = args.split.parse().map_err(usage)?;
    let corpus = crate::tokenized_split(&spec, split, &tok)
        .map_err(data_err)
        .with_context(|| format!("loading {spec} ({split})"))?;
    let corpus = clipped(
        truncated(Arc::new(corpus), args.max_docs),
        args.max_doc_tokens,
        &tok,
    )?;

    let base = hippo_gemma::load_from(&location, &device)?
        .with_precision(config.precision)
        .map_err(usage)?;
    let (model, step) = match &ckpt {
        Some(dir) => {
            let (m, meta) =
                checkpoint::load(base, location.path(), dir, &device).map_err(model_err)?;
            (m, meta.step)
        }
        None => {
            let mut c = config.clone();
            c.base_model = location.path().display().to_string();
            (HippoFormer::new(base, c, &device).map_err(model_err)?, 0)
        }
    };
    let opts = EvalOptions {
        seq_len: args.seq_len,
        streams: args.streams,
        max_docs: None,
        allow_leaky: false,
    };
    tracing::info!(
        corpus = %spec, %split, documents = corpus.docs.len(), tokens = corpus.total_tokens(),
        "calibrating θ × λ × gate over {} × {} × ({} slopes, {} centres)",
        grid.score_scales.len(),
        grid.lambdas.len(),
        grid.gate_slopes.len(),
        grid.gate_centers.len()
    );
    let mut last = Instant::now();
    let cal = calibrate(
        &model.for_inference(),
        corpus,
        &opts,
        &grid,
        &device,
        &mut |p: Progress| {
            if last.elapsed().as_secs() >= 10 || p.tokens_done == p.tokens_total {
                eprintln!("calibrate: {}/{} targets", p.tokens_done, p.tokens_total);
                last = Instant::now();
            }
        },
    )
    .map_err(eval_err)?;
    let model = apply(model, &cal.best);
    let base_ref = BaseRef::of(location.path()).map_err(model_err)?;
    // calibration.json first, so the checkpoint's seal covers it too.
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let json_path = args.output.join("calibration.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&cal)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    checkpoint::save(&model, &args.output, step, &base_ref).map_err(model_err)?;
    println!(
        "calibrated on {} documents, {} targets ({} with memory): LM alone {:.4} nats \
         (ppl {:.3}); best θ = {}, λ = {}, gate slope {} centre {}: {:.4} nats (ppl {:.3}, \
         {:+.2}%)",
        cal.documents,
        cal.tokens,
        cal.tokens_with_memory,
        cal.lm_mean_nll,
        cal.lm_mean_nll.exp(),
        cal.best.score_scale,
        cal.best.lambda,
        cal.best.gate_slope,
        cal.best.gate_center,
        cal.best.mean_nll,
        cal.best.mean_nll.exp(),
        100.0 * ((cal.best.mean_nll - cal.lm_mean_nll).exp() - 1.0)
    );
    for (g, nll) in &cal.lm_mean_nll_by_attention {
        println!(
            "attention path weight g = {g}: LM {nll:.4} nats (ppl {:.3}, {:+.2}%)",
            nll.exp(),
            100.0 * ((nll - cal.lm_mean_nll).exp() - 1.0)
        );
    }
    if !cal.lm_mean_nll_by_attention.is_empty() {
        println!(
            "best attention path weight g = {}",
            cal.best.attention_weight
        );
    }
    eprintln!(
        "wrote {} (checkpoint) and {} in {:.1?}",
        args.output.display(),
        json_path.display(),
        started.elapsed()
    );
    Ok(())
}
