//! `cargo xtask score`: per-token NLL and perplexity of a text or id file under a base model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hippo_gemma::score::score_ids;
use hippo_gemma::{GemmaTokenizer, load_from, resolve};

use crate::UsageError;

/// Arguments of `score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// Model: a checkpoint dir, a .gguf file or a HF repo id in the local cache
    /// (default: the Gemma-3-270M fetched by `cargo xtask assets`).
    #[arg(long)]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// UTF-8 text to score (BOS is prepended).
    #[arg(
        long,
        conflicts_with = "ids_file",
        required_unless_present = "ids_file"
    )]
    pub text_file: Option<PathBuf>,
    /// Raw token ids (JSON array or whitespace-separated integers; no BOS is added).
    #[arg(long)]
    pub ids_file: Option<PathBuf>,
    /// Longest window fed to the model.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Targets scored per window (default: context / 2).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Print one JSON object: input_ids, nll, count, mean_nll, perplexity.
    #[arg(long)]
    pub json: bool,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let t = text.trim();
    if t.starts_with('[') {
        return serde_json::from_str::<Vec<u32>>(t).context("ids file is not a JSON array of u32");
    }
    t.split_whitespace()
        .map(|w| {
            w.parse::<u32>()
                .with_context(|| format!("`{w}` is not a token id"))
        })
        .collect()
}

/// Runs `score`.
#[allow(clippy::print_stdout)]
pub fn run(args: &ScoreArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(UsageError::wrap)?;
    let model_arg = crate::model_arg(args.model.as_deref())?;
    let location = resolve(&model_arg)?;
    let ids = match (&args.text_file, &args.ids_file) {
        (Some(f), None) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))
                .map_err(UsageError::wrap)?;
            let tok_path =
                crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
            GemmaTokenizer::from_file(&tok_path)?.encode(&text, true)?
        }
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))
                .map_err(UsageError::wrap)?;
            parse_ids(&text).map_err(UsageError::wrap)?
        }
        _ => bail!(UsageError::new(
            "give exactly one of --text-file, --ids-file"
        )),
    };
    let stride = args.stride.unwrap_or((args.context / 2).max(1));
    let started = std::time::Instant::now();
    let model = load_from(&location, &device)?;
    tracing::info!(model = %location.path().display(), tokens = ids.len(), "loaded in {:.1?}", started.elapsed());
    let scores = score_ids(&model, &ids, args.context, stride, &device).map_err(|e| match e {
        hippo_gemma::GemmaError::TokenOutOfRange { .. }
        | hippo_gemma::GemmaError::InvalidInput(_) => UsageError::wrap(e.into()),
        other => other.into(),
    })?;
    if args.json {
        let out = serde_json::json!({
            "input_ids": scores.input_ids,
            "nll": scores.nll,
            "count": scores.count(),
            "mean_nll": scores.mean_nll(),
            "perplexity": scores.perplexity(),
            "context": args.context,
            "stride": stride,
        });
        println!("{out}");
    } else {
        println!(
            "tokens scored: {}\nmean NLL: {:.6} nats\nperplexity: {:.4}",
            scores.count(),
            scores.mean_nll(),
            scores.perplexity()
        );
    }
    Ok(())
}
