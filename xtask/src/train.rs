//! `cargo xtask train`: trains the HippoFormer layer over a frozen Gemma on a corpus.
//!
//! The model config comes from `--config` (TOML; built-in defaults without it); `--model`,
//! `--no-lora` and `--precision` override it, and the effective config is written to `<output>/config.toml` and
//! into every checkpoint. Training options come from flags. Bad input — a config typo, an
//! unknown or missing corpus, an empty corpus, a corpus whose every document is shorter than
//! one segment, token ids outside the model's vocabulary, bad option values — exits with code 2.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hippo_data::{CorpusSpec, DataError, Split};
use hippo_gemma::GemmaTokenizer;
use hippo_model::{HippoError, HippoFormerConfig};
use hippo_train::{Schedule, TrainError, TrainOptions};

use crate::{UsageError, usage};

/// Arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// HippoFormer config (TOML); default: the built-in defaults (= configs/default.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base model: a checkpoint dir, a .gguf file or a HF repo id in the local cache
    /// (overrides the config's base_model; "default" = the Gemma-3-270M of `cargo xtask assets`).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Corpus: wiki-sample, sotu, txt-dir:<path>, wikitext-raw:<dir>, wikitext-hf:<dir>.
    #[arg(long, default_value = "wiki-sample")]
    pub dataset: String,
    /// Tokens per segment.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Document streams per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Passes over the training split (default 1 without --max-steps).
    #[arg(long, conflicts_with = "max_steps")]
    pub epochs: Option<usize>,
    /// Optimizer steps (streams the training split endlessly until then).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// LoRA learning rate as a multiple of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub lora_lr_mult: f64,
    /// Drift-correction (A, b) learning rate as a multiple of --lr.
    #[arg(long, default_value_t = 0.01)]
    pub drift_lr_mult: f64,
    /// Fraction of the steps spent warming up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Decay after the warmup: linear, cosine or constant.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Global gradient-norm bound (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Keep the newest K checkpoints (0: all).
    #[arg(long, default_value_t = 3)]
    pub keep_last: usize,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub valid_every: usize,
    /// Validation batches per validation (0: no validation).
    #[arg(long, default_value_t = 50)]
    pub valid_batches: usize,
    /// Train without LoRA adapters (overrides the config's use_lora).
    #[arg(long)]
    pub no_lora: bool,
    /// Matmul precision of the base model: f32 or bf16 (mixed precision: bf16 matmuls, f32
    /// everything else, f32 weights and optimizer state); overrides the config's precision.
    #[arg(long)]
    pub precision: Option<String>,
    /// Where checkpoints, config.toml and metrics.jsonl go.
    #[arg(long, default_value = "runs/train")]
    pub output_dir: PathBuf,
    /// Continue from the newest checkpoint in --output-dir.
    #[arg(long)]
    pub resume: bool,
    /// Start from this checkpoint's weights (e.g. one written by `cargo xtask calibrate`) as a
    /// fresh run: step 0, new optimizer. Its config is used, unless --config gives a variant of
    /// it with the same trainable tensors (another buffer size, salience mode, decay, …).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Stop this invocation after N steps (checkpointed) without changing the schedule.
    #[arg(long)]
    pub stop_at_step: Option<usize>,
    /// Seed of shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Device(s): cpu, cuda:N, vulkan[:N]; a comma-separated list (`cuda:0,cuda:1`) trains data-parallel: each device gets a contiguous share of the batch's streams.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Whether a data error is the user's (bad spec, missing or empty corpus, bad options).
fn data_is_usage(e: &DataError) -> bool {
    matches!(
        e,
        DataError::UnknownCorpus { .. }
            | DataError::MissingSpecPath { .. }
            | DataError::UnknownSplit { .. }
            | DataError::NoHome
            | DataError::Missing { .. }
            | DataError::BadDoc { .. }
            | DataError::EmptyCorpus { .. }
            | DataError::EmptySplit { .. }
            | DataError::BadConfig(_)
            | DataError::BadState(_)
    )
}

fn classify(e: TrainError) -> anyhow::Error {
    let is_usage = match &e {
        TrainError::Options(_) => true,
        TrainError::Data(d) => data_is_usage(d),
        TrainError::Model(HippoError::Config { .. } | HippoError::Checkpoint { .. }) => true,
        _ => false,
    };
    if is_usage { usage(e) } else { e.into() }
}

/// Runs `train`.
#[allow(clippy::print_stdout)]
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut devices = crate::device::parse_list(&args.device).map_err(usage)?;
    let device = devices.remove(0);
    let init_from = args
        .init_from
        .as_deref()
        .map(crate::checkpoint_dir)
        .transpose()?;
    let mut cfg = match (&args.config, &init_from) {
        (Some(p), _) => HippoFormerConfig::from_toml_file(p).map_err(usage)?,
        (None, Some(d)) => hippo_model::checkpoint::read_config(d).map_err(usage)?,
        (None, None) => HippoFormerConfig::default(),
    };
    if args.no_lora {
        cfg.use_lora = false;
    }
    if let Some(p) = &args.precision {
        cfg.precision = p
            .parse()
            .map_err(|e: String| usage(anyhow::anyhow!("--precision: {e}")))?;
    }
    let model_arg = crate::base_model_arg(args.model.as_deref(), &cfg.base_model)?;
    cfg.base_model = model_arg.clone();
    cfg.validate().map_err(usage)?;
    let schedule: Schedule = args
        .schedule
        .parse()
        .map_err(|e: String| usage(anyhow::anyhow!(e)))?;
    let opts = TrainOptions {
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_steps: args.max_steps,
        epochs: args.epochs,
        lr: args.lr,
        lora_lr_mult: args.lora_lr_mult,
        drift_lr_mult: args.drift_lr_mult,
        warmup_ratio: args.warmup_ratio,
        schedule,
        weight_decay: args.weight_decay,
        clip_norm: (args.clip_norm > 0.0).then_some(args.clip_norm),
        checkpoint_every: args.checkpoint_every,
        keep_last: args.keep_last,
        valid_every: args.valid_every,
        valid_batches: args.valid_batches,
        seed: args.seed,
        output_dir: args.output_dir.clone(),
        resume: args.resume,
        init_from,
        log_every: 10,
        stop_at_step: args.stop_at_step,
        extra_devices: devices,
    };
    opts.validate().map_err(usage)?;

    let location = hippo_gemma::resolve(&model_arg)?;
    let gemma_config = hippo_gemma::load::load_config(&location)?;
    if gemma_config.max_position_embeddings < args.seq_len {
        bail!(UsageError::new(format!(
            "--seq-len {} exceeds the model's max_position_embeddings {}",
            args.seq_len, gemma_config.max_position_embeddings
        )));
    }
    let tok_path = crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
    let tok = GemmaTokenizer::from_file(&tok_path)?;

    let spec: CorpusSpec = args.dataset.parse().map_err(usage)?;
    let train = crate::tokenized_split(&spec, Split::Train, &tok).map_err(|e| {
        if data_is_usage(&e) {
            usage(e)
        } else {
            e.into()
        }
    })?;
    if train.docs.is_empty() {
        bail!(UsageError::new(format!(
            "the train split of `{}` has no documents",
            args.dataset
        )));
    }
    let long_enough = train
        .docs
        .iter()
        .filter(|d| d.tokens.len() > args.seq_len)
        .count();
    if long_enough == 0 {
        let longest = train.docs.iter().map(|d| d.tokens.len()).max().unwrap_or(0);
        bail!(UsageError::new(format!(
            "every document of `{}` (train split, {} documents, longest {longest} tokens) is \
             shorter than one segment of --seq-len {} + 1 tokens; lower --seq-len",
            args.dataset,
            train.docs.len(),
            args.seq_len
        )));
    }
    train
        .check_vocabulary(gemma_config.vocab_size)
        .map_err(crate::usage)?;
    let valid = if args.valid_batches == 0 {
        None
    } else {
        match crate::tokenized_split(&spec, Split::Valid, &tok) {
            Ok(c) if c.docs.iter().any(|d| d.tokens.len() >= 2) => Some(Arc::new(c)),
            Ok(_) => {
                tracing::warn!("the validation split is empty: no validation");
                None
            }
            Err(e) => {
                tracing::warn!("no validation split ({e}): no validation");
                None
            }
        }
    };
    tracing::info!(
        model = %location.path().display(),
        dataset = %args.dataset,
        train_docs = train.docs.len(),
        train_tokens = train.docs.iter().map(|d| d.tokens.len()).sum::<usize>(),
        use_lora = cfg.use_lora,
        precision = %cfg.precision,
        "training"
    );
    let started = std::time::Instant::now();
    let base = hippo_gemma::load_from(&location, &device)?;
    tracing::info!("base model loaded in {:.1?}", started.elapsed());
    let summary = hippo_train::Trainer::new(
        base,
        location.path(),
        cfg,
        Arc::new(train),
        valid,
        &opts,
        &device,
    )
    .and_then(|t| t.run(&mut crate::progress::train_reporter(opts.log_every)))
    .map(|(_, s)| s)
    .map_err(classify)
    .context("training failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "steps: {}\ntokens: {}\ntokens/s: {:.1}\nfinal train loss: {}\nvalidation: {}\ncheckpoint: {}",
            summary.steps,
            summary.tokens,
            summary.tokens_per_sec,
            summary
                .train_loss
                .last()
                .map_or_else(|| "-".to_string(), |(_, l)| format!("{l:.4}")),
            summary.valid.last().map_or_else(
                || "-".to_string(),
                |v| format!("loss {:.4}, ppl {:.2} (step {})", v.loss, v.ppl, v.step)
            ),
            summary
                .final_checkpoint
                .as_ref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string()),
        );
    }
    Ok(())
}
