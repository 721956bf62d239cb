//! `cargo xtask eval`: scores a HippoFormer checkpoint (or an untrained config) and its base
//! model on the identical document streams, and computes the paper's metrics.
//!
//! Writes `--output` (`results.json`, see [`hippo_eval::EvalResults`]) and the markdown table
//! beside it (same name, `.md`), and prints the table. Progress goes to stderr (a bar on a
//! terminal, plain lines otherwise).
//!
//! Exit code 2 for bad input: a missing or malformed checkpoint or config, an unknown dataset
//! or split, `--max-docs 0`, a segment or context longer than the model allows, and a
//! non-causal config (`query_mode = "sequence_mean"`) without `--allow-leaky` — with it, every
//! number is labelled leaky.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hippo_eval::metrics::{MetricInputs, paper_metrics};
use hippo_eval::results::{RESULTS_FORMAT, Seeds, utc_timestamp};
use hippo_eval::{
    DocText, EvalError, EvalMetadata, EvalOptions, EvalResults, Scorer, evaluate_full_context,
    evaluate_long_context, evaluate_traced, evaluate_with_memory_off, smoothing_kernel, truncated,
};

/// What the extra base scorer sees (`--context`).
#[derive(Debug, Clone, Copy)]
enum ExtraContext {
    /// No extra scorer.
    Segment,
    /// Rolling windows of this many tokens.
    Rolling(usize),
    /// The whole document prefix.
    Full,
}
use hippo_data::{CorpusSpec, DataError, Split, TokenizedCorpus, default_home, load_corpus};
use hippo_gemma::GemmaTokenizer;
use hippo_model::{HippoError, HippoFormer, HippoFormerConfig, checkpoint};

use crate::{UsageError, usage};

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint directory (holding meta.json), or a training output directory (its newest
    /// checkpoint is used).
    #[arg(long, conflicts_with = "config")]
    pub checkpoint: Option<PathBuf>,
    /// Evaluate an untrained HippoFormer with this config (TOML) instead of a checkpoint;
    /// without either, the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base model (default: the checkpoint's base, else the config's base_model).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Corpus: wiki-sample, sotu, txt-dir:<path>, wikitext-raw:<dir>, wikitext-hf:<dir>.
    #[arg(long, default_value = "wiki-sample")]
    pub dataset: String,
    /// Split: train, valid, test, or all (every document of a corpus without its own split).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate only the first N documents of the split.
    #[arg(long)]
    pub max_docs: Option<usize>,
    /// Keep only the first N tokens of each document (e.g. the first 4k of long addresses).
    #[arg(long)]
    pub max_doc_tokens: Option<usize>,
    /// Segment length (default: the checkpoint's training segment length, else 512).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Also score the base model with more context: `full` (the whole document prefix, through
    /// its KV cache: the upper bound the long-range numbers measure the gap to) or a number of
    /// tokens (> --seq-len) for rolling windows.
    #[arg(long)]
    pub context: Option<String>,
    /// Documents read in parallel.
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// First (0-based) segment index counted as "late" for the long-range numbers
    /// (`long_range` in results.json) and the long-range benefit.
    #[arg(long, alias = "segment-from", default_value_t = 3)]
    pub late_segment: usize,
    /// Evaluate a non-causal config anyway; every number is then labelled leaky.
    #[arg(long)]
    pub allow_leaky: bool,
    /// Seed of the noise behind the temporal-coherence reference.
    #[arg(long, default_value_t = 0)]
    pub noise_seed: u64,
    /// Where results.json goes (the markdown table is written beside it as .md).
    #[arg(long)]
    pub output: PathBuf,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub(crate) fn data_err(e: DataError) -> anyhow::Error {
    match e {
        DataError::UnknownCorpus { .. }
        | DataError::MissingSpecPath { .. }
        | DataError::UnknownSplit { .. }
        | DataError::NoHome
        | DataError::Missing { .. }
        | DataError::BadDoc { .. }
        | DataError::EmptyCorpus { .. }
        | DataError::EmptySplit { .. }
        | DataError::BadConfig(_) => usage(e),
        other => other.into(),
    }
}

pub(crate) fn model_err(e: HippoError) -> anyhow::Error {
    match e {
        HippoError::Config { .. } | HippoError::Checkpoint { .. } => usage(e),
        other => other.into(),
    }
}

pub(crate) fn eval_err(e: EvalError) -> anyhow::Error {
    match e {
        EvalError::Leaky | EvalError::Options(_) => usage(e),
        EvalError::Model(m) => model_err(m),
        EvalError::Data(d) => data_err(d),
        other => other.into(),
    }
}

/// Texts and token offsets of the evaluated documents ([`hippo_eval::doc_texts`] on the raw
/// corpus); `None` (with a warning) when they cannot be matched to the token cache.
fn doc_texts(
    spec: &CorpusSpec,
    split: Split,
    home: &Path,
    tokenizer: &GemmaTokenizer,
    corpus: &TokenizedCorpus,
) -> Option<Vec<DocText>> {
    let texts = load_corpus(spec, split, home)
        .map_err(EvalError::from)
        .and_then(|docs| hippo_eval::doc_texts(corpus, &docs, tokenizer));
    match texts {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("no token offsets ({e}): the content/function ratio is skipped");
            None
        }
    }
}

/// Runs `eval`.
#[allow(clippy::print_stdout)]
pub fn run(args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    let device = crate::device::parse(&args.device).map_err(usage)?;
    if args.max_docs == Some(0) {
        bail!(UsageError::new("--max-docs must be ≥ 1"));
    }
    if args.streams == 0 {
        bail!(UsageError::new("--streams must be ≥ 1"));
    }
    if args.seq_len == Some(0) {
        bail!(UsageError::new("--seq-len must be ≥ 1"));
    }

    // The config: the checkpoint's, or --config, or the defaults.
    let ckpt = match &args.checkpoint {
        Some(p) => {
            let dir = crate::checkpoint_dir(p)?;
            let meta = checkpoint::read_meta(&dir).map_err(model_err)?;
            Some((dir, meta))
        }
        None => None,
    };
    let config = match (&ckpt, &args.config) {
        (Some((dir, _)), _) => checkpoint::read_config(dir).map_err(model_err)?,
        (None, p) => {
            HippoFormerConfig::from_toml_file_or_default(p.as_deref()).map_err(model_err)?
        }
    };
    if config.is_leaky() && !args.allow_leaky {
        return Err(usage(EvalError::Leaky));
    }
    let spec: CorpusSpec = args.dataset.parse().map_err(usage)?;
    let split: Split = args.split.parse().map_err(usage)?;
    let (train_seq_len, train_seed) = ckpt
        .as_ref()
        .map_or((None, None), |(d, _)| crate::trained_with(d));
    let seq_len = args.seq_len.or(train_seq_len).unwrap_or(512);

    let model_arg = match (&args.model, &ckpt) {
        (Some(m), _) => crate::base_model_arg(Some(m), &config.base_model)?,
        (None, Some((_, meta))) => meta.base.path.clone(),
        (None, None) => crate::base_model_arg(None, &config.base_model)?,
    };
    let location = hippo_gemma::resolve(&model_arg)?;
    let gemma_config = hippo_gemma::load::load_config(&location)?;
    let max_pos = gemma_config.max_position_embeddings;
    if seq_len > max_pos {
        bail!(UsageError::new(format!(
            "--seq-len {seq_len} exceeds the model's max_position_embeddings {max_pos}"
        )));
    }
    let context = match args.context.as_deref() {
        None => ExtraContext::Segment,
        Some("full") => ExtraContext::Full,
        Some(c) => match c.parse::<usize>() {
            Ok(c) if c > seq_len && c <= max_pos => ExtraContext::Rolling(c),
            _ => bail!(UsageError::new(format!(
                "--context {c}: expected `full` or a number of tokens that exceeds the segment \
                 length {seq_len} and fits the model's max_position_embeddings {max_pos}"
            ))),
        },
    };
    let tok_path = crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
    let tok = GemmaTokenizer::from_file(&tok_path)?;
    let home = default_home().map_err(data_err)?;
    let corpus = crate::tokenized_split(&spec, split, &tok)
        .map_err(data_err)
        .with_context(|| format!("loading {spec} ({split})"))?;
    if corpus.docs.iter().all(|d| d.tokens.len() < 2) {
        bail!(UsageError::new(format!(
            "the {split} split of `{spec}` has no document of two tokens or more"
        )));
    }
    corpus
        .check_vocabulary(gemma_config.vocab_size)
        .map_err(crate::usage)?;
    if args.max_doc_tokens.is_some_and(|n| n < 2) {
        bail!(UsageError::new("--max-doc-tokens must be ≥ 2"));
    }
    let corpus = crate::calibrate::clipped(
        truncated(Arc::new(corpus), args.max_docs),
        args.max_doc_tokens,
        &tok,
    )?;
    tracing::info!(
        corpus = %spec, %split, documents = corpus.docs.len(), tokens = corpus.total_tokens(),
        seq_len, "evaluating"
    );

    // The base scorer computes in the model's precision (the checkpoint's), so both compare alike.
    let base = hippo_gemma::load_from(&location, &device)?
        .with_precision(config.precision)
        .map_err(usage)?;
    let (model, step) = match &ckpt {
        Some((dir, _)) => {
            let (m, meta) =
                checkpoint::load(base.clone(), location.path(), dir, &device).map_err(model_err)?;
            (m.for_inference(), Some(meta.step))
        }
        None => {
            let mut c = config.clone();
            c.base_model = location.path().display().to_string();
            (
                HippoFormer::new(base.clone(), c, &device).map_err(model_err)?,
                None,
            )
        }
    };
    let opts = EvalOptions {
        seq_len,
        streams: args.streams,
        max_docs: None,
        allow_leaky: args.allow_leaky,
    };
    let t = Instant::now();
    let (base_report, base_trace) = evaluate_traced(
        &Scorer::Base(&base),
        corpus.clone(),
        &opts,
        &device,
        &mut crate::progress::eval_reporter("base"),
    )
    .map_err(eval_err)?;
    tracing::info!(
        token_ppl = base_report.token_ppl,
        "base done in {:.1?}",
        t.elapsed()
    );
    let t = Instant::now();
    let [(hippo_report, trace), (off_report, off_trace)] = evaluate_with_memory_off(
        &model,
        corpus.clone(),
        &opts,
        &device,
        &mut crate::progress::eval_reporter("hippoformer + memory off"),
    )
    .map_err(eval_err)?;
    tracing::info!(
        token_ppl = hippo_report.token_ppl,
        memory_off = off_report.token_ppl,
        "hippoformer and memory off done in {:.1?}",
        t.elapsed()
    );
    let full = match context {
        ExtraContext::Full => {
            let t = Instant::now();
            let (r, tr) = evaluate_full_context(
                &base,
                corpus.clone(),
                &opts,
                &device,
                &mut crate::progress::eval_reporter("full context"),
            )
            .map_err(eval_err)?;
            tracing::info!(
                token_ppl = r.token_ppl,
                "full-context base done in {:.1?}",
                t.elapsed()
            );
            Some((r, tr))
        }
        _ => None,
    };
    let long_range = hippo_eval::long_range(
        &corpus,
        &base_trace,
        &trace,
        &off_trace,
        full.as_ref().map(|(_, t)| t),
        args.late_segment,
        args.noise_seed,
    )
    .map_err(eval_err)?;
    let long = match context {
        ExtraContext::Rolling(c) => {
            let t = Instant::now();
            let (r, _) = evaluate_long_context(
                &base,
                corpus.clone(),
                &opts,
                c,
                &device,
                &mut crate::progress::eval_reporter("long context"),
            )
            .map_err(eval_err)?;
            tracing::info!(
                token_ppl = r.token_ppl,
                context = c,
                "long-context base done in {:.1?}",
                t.elapsed()
            );
            Some(r)
        }
        _ => None,
    };
    let texts = doc_texts(&spec, split, &home, &tok, &corpus);
    let kernel = smoothing_kernel(&model).map_err(eval_err)?;
    let metrics = paper_metrics(&MetricInputs {
        base: &base_report,
        base_long: long.as_ref().or(full.as_ref().map(|(r, _)| r)),
        hippo: &hippo_report,
        trace: &trace,
        texts: texts.as_deref(),
        kernel: &kernel,
        min_segment: args.late_segment,
        noise_seed: args.noise_seed,
    })
    .map_err(eval_err)?;
    let results = EvalResults {
        format: RESULTS_FORMAT,
        metadata: EvalMetadata {
            git_commit: crate::git_commit(),
            timestamp: utc_timestamp(),
            config: model.config.clone(),
            checkpoint: ckpt.as_ref().map(|(d, _)| d.display().to_string()),
            checkpoint_step: step,
            base_model: location.path().display().to_string(),
            tokenizer: tok_path.display().to_string(),
            seeds: Seeds {
                model: model.config.seed,
                training: train_seed,
                noise: args.noise_seed,
            },
            corpus: spec.to_string(),
            corpus_key: corpus.key.clone(),
            split: split.to_string(),
            max_docs: args.max_docs,
            seq_len,
            streams: args.streams,
            context: match context {
                ExtraContext::Rolling(c) => Some(c),
                _ => None,
            },
            late_segment: args.late_segment,
            leaky: hippo_report.leaky,
            device: args.device.clone(),
            elapsed_s: started.elapsed().as_secs_f64(),
        },
        base: base_report,
        base_long_context: long,
        hippoformer: hippo_report,
        memory_off: Some(off_report),
        full_context: full.map(|(r, _)| r),
        long_range: Some(long_range),
        metrics,
    };
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    results.write(&args.output)?;
    let md = results.to_markdown();
    let md_path = args.output.with_extension("md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!(
        "wrote {} and {} in {:.1?}",
        args.output.display(),
        md_path.display(),
        started.elapsed()
    );
    Ok(())
}
