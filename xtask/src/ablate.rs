//! `cargo xtask ablate`: each ablation variant trained briefly and evaluated over several seeds,
//! compared with the full model per document (paired tests, Holm-corrected).
//!
//! Layout of `--output-dir`:
//!
//! ```text
//! runs/<variant>/seed-<s>/train/     the training run (checkpoints, metrics.jsonl)
//! runs/<variant>/seed-<s>/eval.json  its evaluation (per-document NLL) — a finished run is reused
//! results.json, results.md           the aggregate
//! ablation_bars.{png,svg}            token perplexity per variant, mean ± CI over seeds
//! ```
//!
//! Variants are the overlay files of `configs/ablations/` (the leaky `sequence_mean` one is
//! excluded), applied on top of the full config: `--config`, else the `--init-from`
//! checkpoint's, else the built-in defaults, with each `--overlay` applied to it first.
//!
//! With `--init-from CKPT` every run starts from that checkpoint's weights (a calibrated or
//! trained model) loaded into the variant's model, which must have the same trainable tensors;
//! `--train-steps 0` then evaluates the variants as they are, which is how to compare what the
//! buffer keeps (salience mode, buffer size, decay) on one calibrated memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hippo_data::{CorpusSpec, Split, TokenizedCorpus};
use hippo_eval::ablation::{AblationResults, RunResult, figure, markdown, summarise};
use hippo_gemma::GemmaTokenizer;
use hippo_model::HippoFormerConfig;

use crate::UsageError;

/// Arguments of `ablate`.
#[derive(clap::Args, Debug)]
pub struct AblateArgs {
    /// The full model's config (variants are overlays on it); default: the `--init-from`
    /// checkpoint's config, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overlay files applied to the full config before the variants (in the order given), e.g.
    /// `configs/ablations/buffer_512.toml` to compare salience modes at buffer 512.
    #[arg(long)]
    pub overlay: Vec<PathBuf>,
    /// Start every run from this checkpoint's weights (e.g. `cargo xtask calibrate`'s output)
    /// instead of the initialisation.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Directory of variant overlays (`*.toml`).
    #[arg(long, default_value = "configs/ablations")]
    pub ablations_dir: PathBuf,
    /// Only these variants (file stems, comma-separated); `full` is always run.
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Seeds per variant (0, 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Base model (default: the config's `base_model`).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Training and evaluation corpus.
    #[arg(long, default_value = "wiki-sample")]
    pub dataset: String,
    /// Optimizer steps per run (0 with `--init-from`: evaluate the checkpoint's weights under
    /// each variant's config without training).
    #[arg(long, default_value_t = 20)]
    pub train_steps: usize,
    /// Segment length (training and evaluation).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Streams per training batch.
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Test documents evaluated per run (the longest ones, so memory has earlier segments).
    #[arg(long, default_value_t = 20)]
    pub eval_docs: usize,
    /// Score only the first N tokens of each test document (default: whole documents).
    #[arg(long)]
    pub eval_doc_tokens: Option<usize>,
    /// Bootstrap resamples of the paired tests.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Where runs and results go.
    #[arg(long, default_value = "results/ablate")]
    pub output_dir: PathBuf,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The variants: `full` plus the overlay files, in file-name order.
pub fn variants(
    full: &HippoFormerConfig,
    dir: &Path,
    only: &[String],
) -> Result<Vec<(String, HippoFormerConfig)>> {
    let mut out = vec![("full".to_string(), full.clone())];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the ablations directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config = full
            .with_overlay(&text, &path.display().to_string())
            .map_err(crate::usage)?;
        if config.is_leaky() {
            tracing::info!(variant = %name, "skipping a non-causal variant (audit-only)");
            continue;
        }
        out.push((name, config));
    }
    for want in only {
        if !out.iter().any(|(n, _)| n == want) {
            bail!(UsageError::new(format!(
                "unknown variant `{want}`: no {}/{want}.toml",
                dir.display()
            )));
        }
    }
    Ok(out)
}

fn load_corpus(
    spec: &CorpusSpec,
    split: Split,
    tok: &GemmaTokenizer,
) -> Result<Arc<TokenizedCorpus>> {
    let c = crate::tokenized_split(spec, split, tok)
        .with_context(|| format!("tokenising {spec} ({split})"))?;
    if c.docs.is_empty() {
        bail!(UsageError::new(format!(
            "the {split} split of `{spec}` has no documents"
        )));
    }
    Ok(Arc::new(c))
}

/// Runs `ablate`.
#[allow(clippy::print_stdout)]
pub fn run(args: &AblateArgs) -> Result<()> {
    let started = Instant::now();
    if args.seeds == 0 || args.eval_docs == 0 {
        bail!(UsageError::new(
            "--seeds and --eval-docs must be at least 1"
        ));
    }
    if args.train_steps == 0 && args.init_from.is_none() {
        bail!(UsageError::new(
            "--train-steps 0 needs --init-from (an untrained model is the base by construction)"
        ));
    }
    if args.eval_doc_tokens.is_some_and(|n| n < 2) {
        bail!(UsageError::new("--eval-doc-tokens must be ≥ 2"));
    }
    let device = crate::device::parse(&args.device).map_err(UsageError::wrap)?;
    let init_from = args
        .init_from
        .as_deref()
        .map(crate::checkpoint_dir)
        .transpose()?;
    let mut full = match (&args.config, &init_from) {
        (Some(p), _) => HippoFormerConfig::from_toml_file(p).map_err(crate::usage)?,
        (None, Some(d)) => hippo_model::checkpoint::read_config(d).map_err(crate::usage)?,
        (None, None) => HippoFormerConfig::default(),
    };
    for path in &args.overlay {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the overlay {}", path.display()))
            .map_err(UsageError::wrap)?;
        full = full
            .with_overlay(&text, &path.display().to_string())
            .map_err(crate::usage)?;
    }
    let variants = variants(&full, &args.ablations_dir, &args.variants)?;
    let model_arg = crate::base_model_arg(args.model.as_deref(), &full.base_model)?;
    let location = hippo_gemma::resolve(&model_arg).map_err(|e| UsageError::wrap(e.into()))?;
    let tok_path = crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
    let tok = GemmaTokenizer::from_file(&tok_path)?;
    let spec: CorpusSpec = args
        .dataset
        .parse()
        .map_err(|e: hippo_data::DataError| UsageError::wrap(e.into()))?;
    let train = load_corpus(&spec, Split::Train, &tok)?;
    let mut test = (*load_corpus(&spec, Split::Test, &tok)?).clone();
    test.docs.sort_by_key(|d| std::cmp::Reverse(d.tokens.len()));
    test.docs.truncate(args.eval_docs);
    let test = crate::calibrate::clipped(Arc::new(test), args.eval_doc_tokens, &tok)?;
    let base = hippo_gemma::load_from(&location, &device)?;
    let base_ref = hippo_model::checkpoint::BaseRef::of(location.path())?;

    let mut runs = Vec::new();
    let total = variants.len() as u64 * args.seeds;
    let mut done = 0u64;
    for (name, config) in &variants {
        for seed in 0..args.seeds {
            done += 1;
            let dir = args
                .output_dir
                .join("runs")
                .join(name)
                .join(format!("seed-{seed}"));
            let eval_path = dir.join("eval.json");
            if let Ok(text) = std::fs::read_to_string(&eval_path) {
                let r: RunResult = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", eval_path.display()))?;
                tracing::info!(variant = %name, seed, run = done, of = total, ppl = r.token_ppl, "reusing a finished run");
                runs.push(r);
                continue;
            }
            let config = HippoFormerConfig {
                seed,
                base_model: model_arg.clone(),
                ..config.clone()
            };
            let (model, steps, train_tok_s) = if args.train_steps == 0 {
                let dir = init_from
                    .as_deref()
                    .context("--train-steps 0 without --init-from")?;
                tracing::info!(variant = %name, seed, run = done, of = total, "loading the checkpoint's weights");
                let fresh = hippo_model::HippoFormer::new(base.clone(), config.clone(), &device)?;
                let (model, _) = hippo_model::checkpoint::load_weights_into(fresh, dir, &base_ref)
                    .with_context(|| format!("variant `{name}`"))
                    .map_err(UsageError::wrap)?;
                (model, 0, 0.0)
            } else {
                tracing::info!(variant = %name, seed, run = done, of = total, "training");
                let opts = hippo_train::TrainOptions {
                    seq_len: args.seq_len,
                    batch_size: args.batch_size,
                    max_steps: Some(args.train_steps),
                    lr: args.lr,
                    checkpoint_every: 0,
                    keep_last: 1,
                    valid_every: 0,
                    valid_batches: 0,
                    seed,
                    output_dir: dir.join("train"),
                    init_from: init_from.clone(),
                    log_every: 5,
                    ..hippo_train::TrainOptions::default()
                };
                let (model, summary) = hippo_train::Trainer::new(
                    base.clone(),
                    location.path(),
                    config.clone(),
                    train.clone(),
                    None,
                    &opts,
                    &device,
                )?
                .run(&mut crate::progress::train_reporter(opts.log_every))?;
                (model, summary.steps, summary.tokens_per_sec)
            };
            let model = model.for_inference();
            let report = hippo_eval::evaluate(
                &hippo_eval::Scorer::Hippo(&model),
                test.clone(),
                &hippo_eval::EvalOptions {
                    seq_len: args.seq_len,
                    streams: 1,
                    max_docs: None,
                    allow_leaky: false,
                },
                &device,
            )?;
            let r = RunResult {
                variant: name.clone(),
                seed,
                config,
                steps,
                train_tok_s,
                tokens: report.tokens,
                mean_nll: report.mean_nll,
                token_ppl: report.token_ppl,
                bits_per_byte: report.bits_per_byte,
                per_document: report.per_document,
            };
            tracing::info!(variant = %name, seed, ppl = r.token_ppl, "evaluated");
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join("eval.json.tmp");
            std::fs::write(&tmp, serde_json::to_string_pretty(&r)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &eval_path)?;
            runs.push(r);
        }
    }
    let order: Vec<String> = variants.iter().map(|(n, _)| n.clone()).collect();
    let results = AblationResults {
        git_commit: crate::git_commit(),
        base_model: model_arg,
        corpus: spec.to_string(),
        eval_docs: test.docs.len(),
        train_steps: args.train_steps,
        seq_len: args.seq_len,
        init_from: init_from.as_ref().map(|d| d.display().to_string()),
        eval_doc_tokens: args.eval_doc_tokens,
        resamples: args.resamples,
        variants: summarise(&runs, &order, args.resamples)?,
    };
    let md = markdown(&results);
    std::fs::write(
        args.output_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(args.output_dir.join("results.md"), &md)?;
    let fig = figure(&results, &args.output_dir)?;
    println!("{md}");
    println!(
        "wrote {}, {} and {} in {:.0} s",
        args.output_dir.join("results.json").display(),
        fig.png.display(),
        fig.svg.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn variants_are_overlays_on_the_full_config() {
        let full = HippoFormerConfig {
            buffer_size: 300,
            ..HippoFormerConfig::default()
        };
        let dir = root().join("configs/ablations");
        let all = variants(&full, &dir, &[]).expect("variants");
        assert_eq!(all[0].0, "full");
        // The leaky audit-only overlay is excluded; every other file is a variant.
        assert!(
            all.iter()
                .all(|(n, c)| n != "leaky_sequence_mean" && !c.is_leaky())
        );
        let get = |n: &str| &all.iter().find(|(m, _)| m == n).expect(n).1;
        assert_eq!(get("decay_0.8").decay_rate, 0.8);
        // Keys the overlay does not set come from the full config, not the defaults.
        assert_eq!(get("decay_0.8").buffer_size, 300);
        assert_eq!(get("buffer_512").buffer_size, 512);
        assert!(!get("no_memory").memory);
        let only = variants(&full, &dir, &["no_drift".into()]).expect("only");
        assert_eq!(
            only.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["full", "no_drift"]
        );
        let err = variants(&full, &dir, &["nope".into()]).expect_err("unknown variant");
        assert!(err.to_string().contains("unknown variant `nope`"), "{err}");
    }
}
