//! `cargo xtask generate`: text generation with a trained HippoFormer (`--checkpoint`) or with
//! the bare base model (`--model`), streaming the decoded text to stdout as tokens arrive.
//!
//! With `--checkpoint`, the stream (prompt, then generated text) is read in segments of
//! `--segment-len` tokens — by default the `seq_len` the checkpoint was trained with (from its
//! `trainer.json`), else 256 — and each completed segment is written to memory, exactly as in
//! training (see `hippo_model::generate`). With `--model` the base reads the whole context.
//! Generation stops at `--max-new-tokens`, at the tokenizer's end-of-sequence tokens (unless
//! `--ignore-eos`) and at each `--stop` string (one token each); stop tokens are not printed.
//! The rate (tokens/s) goes to stderr at the end. Bad input exits with code 2.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hippo_gemma::{GemmaTokenizer, SamplingConfig, StopReason};
use hippo_model::{HippoError, HippoGenerateOptions};

use crate::{UsageError, usage};

/// Segment length when the checkpoint does not record the one it was trained with.
const DEFAULT_SEGMENT_LEN: usize = 256;

/// Arguments of `generate`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["checkpoint", "model"])))]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_file"])))]
pub struct GenerateArgs {
    /// A HippoFormer checkpoint: a `step-N` directory, or a training output directory (its
    /// newest checkpoint). Its base model is the one it was trained over.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The bare base model: a checkpoint dir, a .gguf file or a HF repo id in the local cache;
    /// `--model` alone (or `default`) is the Gemma-3-270M of `cargo xtask assets`.
    #[arg(long, num_args = 0..=1, default_missing_value = "default")]
    pub model: Option<String>,
    /// tokenizer.json (default: the one beside the base model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The prompt (BOS is prepended).
    #[arg(long)]
    pub prompt: Option<String>,
    /// A UTF-8 file holding the prompt.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Greedy decoding (arg-max; temperature, top-p, top-k and seed unused).
    #[arg(long)]
    pub greedy: bool,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop at this string (must be one token; repeatable; not printed).
    #[arg(long, num_args = 1..)]
    pub stop: Vec<String>,
    /// Do not stop at the tokenizer's end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Tokens per segment (with --checkpoint; default: the training seq_len, else 256).
    #[arg(long)]
    pub segment_len: Option<usize>,
    /// Recompute the base over the context every step instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Compute the LM head in f16 (faster decoding on CPU; logits differ by ~1e-2).
    #[arg(long)]
    pub f16_lm_head: bool,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn tokenizer_for(
    args: &GenerateArgs,
    location: &hippo_gemma::ModelLocation,
) -> Result<GemmaTokenizer> {
    let path = crate::tokenizer_path(args.tokenizer.as_deref(), location, "pass --tokenizer")?;
    Ok(GemmaTokenizer::from_file(&path)?)
}

/// Prints the text of the tokens as they arrive: the whole generation is decoded each time and
/// the new suffix printed once it no longer ends in a partial UTF-8 character.
struct TextStream<'a> {
    tok: &'a GemmaTokenizer,
    ids: Vec<u32>,
    printed: String,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl TextStream<'_> {
    #[allow(clippy::print_stdout)]
    fn push(&mut self, id: u32) -> Result<()> {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(());
        }
        let new = match text.strip_prefix(self.printed.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                // The decoding of earlier tokens changed: print from the first difference on.
                let common = text
                    .char_indices()
                    .zip(self.printed.chars())
                    .find(|((_, a), b)| a != b)
                    .map_or(self.printed.len().min(text.len()), |((i, _), _)| i);
                text.get(common..).unwrap_or_default().to_string()
            }
        };
        if !new.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(new.as_bytes())?;
            out.flush()?;
        }
        self.printed = text;
        Ok(())
    }
}

/// Runs `generate`.
#[allow(clippy::print_stdout)]
pub fn run(args: &GenerateArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(usage)?;
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        greedy: args.greedy,
        seed: args.seed,
    };
    sampling.validate().map_err(usage)?;
    if args.segment_len == Some(0) {
        bail!(UsageError::new("--segment-len must be ≥ 1"));
    }
    if args.model.is_some() && args.segment_len.is_some() {
        bail!(UsageError::new(
            "--segment-len applies to --checkpoint (the bare base reads the whole context)"
        ));
    }
    let prompt_text = match (&args.prompt, &args.prompt_file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the prompt file {}", f.display()))
            .map_err(usage)?,
        _ => bail!(UsageError::new(
            "give exactly one of --prompt, --prompt-file"
        )),
    };
    let ckpt = args
        .checkpoint
        .as_deref()
        .map(crate::checkpoint_dir)
        .transpose()?;
    let model_arg = match (&ckpt, &args.model) {
        (Some(dir), None) => {
            let meta = hippo_model::checkpoint::read_meta(dir).map_err(usage)?;
            if Path::new(&meta.base.path).exists() {
                meta.base.path
            } else {
                let cfg = hippo_model::checkpoint::read_config(dir).map_err(usage)?;
                crate::base_model_arg(None, &cfg.base_model)?
            }
        }
        (None, Some(m)) => crate::base_model_arg(Some(m), "default")?,
        _ => bail!(UsageError::new("give exactly one of --checkpoint, --model")),
    };
    let location = hippo_gemma::resolve(&model_arg)?;
    let tok = tokenizer_for(args, &location)?;
    let prompt = tok.encode(&prompt_text, true)?;
    let mut stop_tokens: Vec<u32> = if args.ignore_eos {
        Vec::new()
    } else {
        tok.eos_ids().to_vec()
    };
    for s in &args.stop {
        match tok.encode(s, false)?.as_slice() {
            [id] => stop_tokens.push(*id),
            ids => bail!(UsageError::new(format!(
                "--stop {s:?} is {} tokens ({ids:?}); each stop string must be one token",
                ids.len()
            ))),
        }
    }

    let started = Instant::now();
    let base = hippo_gemma::load_from(&location, &device)?;
    let mut stream = TextStream {
        tok: &tok,
        ids: Vec::new(),
        printed: String::new(),
        first: None,
        last: None,
    };
    let mut print_error = None;
    let mut on_token = |id: u32| match stream.push(id) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            print_error = Some(e);
            ControlFlow::Break(())
        }
    };
    let gen_started;
    let (tokens, stop, detail) = match &ckpt {
        Some(dir) => {
            let (mut model, meta) =
                hippo_model::checkpoint::load(base, location.path(), dir, &device).map_err(
                    |e| match e {
                        HippoError::Checkpoint { .. } | HippoError::Config { .. } => usage(e),
                        other => other.into(),
                    },
                )?;
            model = model.for_inference();
            if args.f16_lm_head {
                model.base = model.base.with_f16_lm_head();
            }
            let (segment_len, from) = match (args.segment_len, crate::trained_with(dir).0) {
                (Some(n), _) => (n, "--segment-len"),
                (None, Some(n)) => (n, "the training seq_len"),
                (None, None) => (DEFAULT_SEGMENT_LEN, "default"),
            };
            tracing::info!(
                checkpoint = %dir.display(),
                step = meta.step,
                base = %location.path().display(),
                segment_len,
                segment_len_from = from,
                prompt_tokens = prompt.len(),
                "loaded in {:.1?}",
                started.elapsed()
            );
            let options = HippoGenerateOptions {
                max_new_tokens: args.max_new_tokens,
                sampling,
                stop_tokens,
                segment_len,
                use_cache: !args.no_cache,
            };
            let state = model.empty_state(1, &device);
            gen_started = Instant::now();
            let g = hippo_model::generate(&model, &prompt, state, &options, &mut on_token)
                .map_err(|e| match e {
                    HippoError::InvalidInput(_) => usage(e),
                    other => other.into(),
                })?;
            let detail = format!(
                ", {} segments of {segment_len} tokens written to memory",
                g.segments_committed
            );
            (g.tokens, g.stop, detail)
        }
        None => {
            let base = if args.f16_lm_head {
                base.with_f16_lm_head()
            } else {
                base
            };
            tracing::info!(
                model = %location.path().display(),
                prompt_tokens = prompt.len(),
                "loaded in {:.1?}",
                started.elapsed()
            );
            let options = hippo_gemma::GenerateOptions {
                max_new_tokens: args.max_new_tokens,
                sampling,
                stop_tokens,
                use_cache: !args.no_cache,
            };
            gen_started = Instant::now();
            let g = hippo_gemma::sample::generate(&base, &prompt, &options, &mut on_token)
                .map_err(|e| match e {
                    hippo_gemma::GemmaError::InvalidInput(_) => usage(e),
                    other => other.into(),
                })?;
            (g.tokens, g.stop, String::new())
        }
    };
    if let Some(e) = print_error {
        return Err(e.context("writing the generated text"));
    }
    println!();
    let total = gen_started.elapsed().as_secs_f64();
    let n = tokens.len();
    let first = stream.first.map(|t| (t - gen_started).as_secs_f64());
    let decode = match (stream.first, stream.last) {
        (Some(a), Some(b)) if n > 1 => Some((n - 1) as f64 / (b - a).as_secs_f64().max(1e-9)),
        _ => None,
    };
    let stop = match stop {
        StopReason::MaxTokens => "max tokens".to_string(),
        StopReason::StopToken(id) => format!("stop token {id}"),
        StopReason::Callback => "interrupted".to_string(),
        StopReason::ContextFull => "context full".to_string(),
    };
    eprintln!(
        "{n} tokens in {total:.2} s ({:.2} tokens/s; decode {} tokens/s; first token after {} s; \
         prompt {} tokens); stopped: {stop}{detail}",
        n as f64 / total.max(1e-9),
        decode.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
        first.map_or_else(|| "-".into(), |f| format!("{f:.2}")),
        prompt.len(),
    );
    Ok(())
}
