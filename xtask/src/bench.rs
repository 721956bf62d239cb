//! `cargo xtask bench`: throughput of the backend and the base model, measured in one run so
//! that ratios (achieved FLOP rate / matmul rate) are meaningful on a noisy machine.

use std::time::{Duration, Instant};

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::{Bool, Device, Distribution, Tensor};
use hippo_data::{CorpusSpec, Split, TokenizedCorpus};
use hippo_gemma::{Gemma, GemmaTokenizer, load_from};
use hippo_model::{HippoFormer, HippoFormerConfig};
use serde::Serialize;

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model (default: the Gemma-3-270M fetched by `cargo xtask assets`).
    #[arg(long)]
    pub model: Option<String>,
    /// Tokens of the forward benchmark.
    #[arg(long, default_value_t = 512)]
    pub forward_tokens: usize,
    /// Tokens generated in the decode benchmark.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// HippoFormer config of the HippoFormer sections (default: the built-in default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tokenizer.json of the evaluation and training sections (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Skip the HippoFormer forward-overhead section.
    #[arg(long)]
    pub no_hippo: bool,
    /// Skip the evaluation section.
    #[arg(long)]
    pub no_eval: bool,
    /// Skip the training section.
    #[arg(long)]
    pub no_train: bool,
    /// Wikipedia-sample test documents streamed in the evaluation section.
    #[arg(long, default_value_t = 2)]
    pub eval_docs: usize,
    /// Segment length of the evaluation section.
    #[arg(long, default_value_t = 512)]
    pub eval_seq_len: usize,
    /// Optimizer steps of the training section (the first is a warm-up and not timed).
    #[arg(long, default_value_t = 4)]
    pub train_steps: usize,
    /// Segment length of the training section.
    #[arg(long, default_value_t = 256)]
    pub train_seq_len: usize,
    /// Streams per batch of the training section.
    #[arg(long, default_value_t = 2)]
    pub train_batch: usize,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The device.
    pub device: String,
    /// f32 matmul rate of the backend (1024³, best of several), GFLOP/s.
    pub matmul_gflops: f64,
    /// Base-model forward over `forward_tokens` tokens, tokens/s.
    pub forward_tok_s: f64,
    /// Model FLOPs per token at that context (2 × multiply-adds).
    pub forward_gflop_per_token: f64,
    /// Achieved forward FLOP rate / matmul rate.
    pub forward_fraction_of_matmul: f64,
    /// The same forward with bf16 mixed precision (`Gemma::with_precision`), tokens/s; `None`
    /// where the device has no bf16. On the CPU (`flex`) bf16 matmuls run through f32.
    pub forward_bf16_tok_s: Option<f64>,
    /// Greedy decode with the KV cache after a short prompt, tokens/s (f32 throughout).
    pub decode_tok_s: f64,
    /// The same with the f16 LM head (`Gemma::with_f16_lm_head`), tokens/s; `None` on the
    /// ndarray backend, which has no f16 tensors.
    pub decode_f16_head_tok_s: Option<f64>,
    /// HippoFormer forward vs. the base forward on the same segment, with a full buffer.
    pub hippo: Option<HippoBench>,
    /// Streaming evaluation, base vs. HippoFormer on the identical token stream.
    pub eval: Option<EvalBench>,
    /// Training throughput.
    pub train: Option<TrainBench>,
    /// Cores busy in each section: the process's CPU time (user + system) over the section's
    /// wall time, in section order; empty where `/proc/self/stat` is unreadable (not Linux).
    pub cores_busy: Vec<(String, f64)>,
}

/// The process's CPU time so far (user + system, every thread), in seconds, from
/// `/proc/self/stat`; `None` where it cannot be read.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name's closing parenthesis start at field 3 (state); utime and
    // stime are fields 14 and 15, in clock ticks of USER_HZ, which Linux fixes at 100.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `f` and records the cores it kept busy (CPU time over wall time) under `name`.
fn busy<T>(log: &mut Vec<(String, f64)>, name: &str, f: impl FnOnce() -> T) -> T {
    let (cpu, wall) = (process_cpu_seconds(), Instant::now());
    let out = f();
    let secs = wall.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu, process_cpu_seconds())
        && secs > 0.0
    {
        log.push((name.to_string(), (b - a) / secs));
    }
    out
}

/// HippoFormer forward overhead (read-only forward of one segment, scored: the log-probability
/// of every next token).
#[derive(Debug, Serialize)]
pub struct HippoBench {
    /// Segment length.
    pub tokens: usize,
    /// Buffer capacity, filled to capacity with entries above the priority threshold.
    pub buffer_entries: usize,
    /// Replay rounds.
    pub replay_rounds: usize,
    /// Base layers reading the buffer's keys and values on the attention path (opened at
    /// `g = 1`; 0 with `memory_attention = "off"`).
    pub attention_layers: usize,
    /// Base forward (hidden states + LM head), tokens/s, measured interleaved with the next.
    pub base_tok_s: f64,
    /// HippoFormer forward, tokens/s.
    pub hippo_tok_s: f64,
    /// `hippo time / base time − 1` (target ≤ 0.15).
    pub overhead: f64,
}

/// Streaming evaluation throughput (`hippo_eval::evaluate`, memory written after every segment).
#[derive(Debug, Serialize)]
pub struct EvalBench {
    /// Documents streamed.
    pub documents: usize,
    /// Tokens scored.
    pub tokens: usize,
    /// Segment length.
    pub seq_len: usize,
    /// Base, tokens/s.
    pub base_tok_s: f64,
    /// HippoFormer, tokens/s.
    pub hippo_tok_s: f64,
    /// `hippo time / base time − 1` (target ≤ 0.15).
    pub slowdown: f64,
}

/// Training throughput (`hippo_train::train_model`, LoRA per the config).
#[derive(Debug, Serialize)]
pub struct TrainBench {
    /// Segment length.
    pub seq_len: usize,
    /// Streams per batch.
    pub batch: usize,
    /// Timed optimizer steps (after one warm-up step).
    pub steps: usize,
    /// Trained tokens/s over the timed steps.
    pub tok_s: f64,
    /// FLOPs per trained token: forward + the backward's input gradients (≈ 2× forward; weight
    /// gradients exist only for the small trainable part). Without LoRA the backward stops at the
    /// frozen base, so this is an upper bound there.
    pub gflop_per_token: f64,
    /// Achieved FLOP rate / matmul rate.
    pub fraction_of_matmul: f64,
}

/// Greedy decode of `steps` tokens after a 16-token prompt, tokens/s.
fn decode_rate(
    model: &hippo_gemma::Gemma,
    ids: &[u32],
    steps: usize,
    device: &burn::tensor::Device,
) -> Result<f64> {
    let mut cache = model.new_cache();
    let p = 16.min(ids.len());
    let prompt = model.ids_tensor(&[ids[..p].to_vec()], device)?;
    let logits = model.forward(prompt, Some(&mut cache)).logits;
    let mut next = logits.slice_dim(1, p - 1..p).argmax(2).reshape([1, 1]);
    let started = Instant::now();
    for _ in 0..steps {
        let l = model.forward(next, Some(&mut cache)).logits;
        next = l.argmax(2).reshape([1, 1]);
        let _ = next.clone().into_data();
    }
    Ok(steps as f64 / started.elapsed().as_secs_f64())
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Measures the backend's f32 matmul rate in GFLOP/s on `n × n × n`.
pub fn matmul_gflops(device: &burn::tensor::Device, n: usize) -> f64 {
    let a = Tensor::<2>::random([n, n], Distribution::Default, device);
    let b = Tensor::<2>::random([n, n], Distribution::Default, device);
    let _ = a.clone().matmul(b.clone()).into_data(); // warm-up
    let t = best_of(5, || {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e9
}

/// Interleaves `a` and `b` `reps` times and returns the best time of each.
fn best_of_pair<A: FnMut() -> Result<()>, B: FnMut() -> Result<()>>(
    reps: usize,
    mut a: A,
    mut b: B,
) -> Result<(Duration, Duration)> {
    let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        let t = Instant::now();
        a()?;
        ta = ta.min(t.elapsed());
        let t = Instant::now();
        b()?;
        tb = tb.min(t.elapsed());
    }
    Ok((ta, tb))
}

fn bench_config(args: &BenchArgs) -> Result<HippoFormerConfig> {
    HippoFormerConfig::from_toml_file_or_default(args.config.as_deref()).map_err(crate::usage)
}

/// HippoFormer's read-only forward over `ids` with every stream's buffer full, scored (log-probability
/// of each next token), vs. the bare base forward (hidden states + LM head + log-normaliser) scored
/// the same way on the same ids, interleaved.
fn hippo_overhead(
    base: &Gemma,
    config: &HippoFormerConfig,
    ids: &[u32],
    device: &Device,
) -> Result<HippoBench> {
    // The attention path open (g = 1 on the layers `memory_attention` names), as calibration
    // leaves it: a fresh model's closed path would skip the layers' memory reads.
    let hippo = HippoFormer::new(base.clone(), config.clone(), device)?
        .with_attention_weight(1.0)
        .for_inference();
    let d = base.config().hidden_size;
    let m = config.buffer_size;
    let t = ids.len();
    // Fill the buffer to capacity with entries well above the priority threshold.
    let [lo, hi] = config.importance_range;
    let floor = (config.priority_threshold / config.decay_rate + 1e-3).max(lo);
    let state = hippo.empty_state(1, device);
    // Every entry with a next token, as HippoFormer's own writes store them (so the
    // probability path's mixture works over M real tokens).
    let vocab = base.config().vocab_size;
    let next: Vec<i64> = (0..m as i64).map(|i| (i * 7919) % vocab as i64).collect();
    // With the attention path on, every entry also holds each reading layer's key and value.
    let attention_layers =
        hippo_model::model::attention_layers(base, config.memory_attention).len();
    let width = hippo_model::model::attention_payload_width(base, attention_layers);
    let payload = (config.memory && width > 0)
        .then(|| Tensor::<3>::random([1, m, width], Distribution::Normal(0.0, 1.0), device));
    let (state, _) = hippo.memory.write_entries(
        state,
        Tensor::<3>::random([1, m, d], Distribution::Normal(0.0, 1.0), device),
        Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(next, [1, m]),
            device,
        ),
        payload,
        Tensor::<2>::random(
            [1, m],
            Distribution::Uniform(floor, hi.max(floor + 1.0)),
            device,
        ),
        Tensor::<2, Bool>::full([1, m], true, device),
    )?;
    let state = hippo.memory.age(state);
    let entries = state.valid.clone().int().sum().into_scalar::<i64>().max(0) as usize;
    let x = base.ids_tensor(&[ids.to_vec()], device)?;
    let valid = Tensor::<2, Bool>::full([1, t], true, device);
    // What a scorer needs from each: the log-probability of every next token. The base: LM
    // head, log-normaliser, one gather; HippoFormer: its forward (the probability path's
    // normaliser included) and `target_log_probs` (no dense mixed logits).
    let targets: Vec<u32> = ids[1..].iter().copied().chain([ids[0]]).collect();
    let y = base.ids_tensor(&[targets], device)?;
    let base_score = || -> Result<()> {
        let logits = base.forward(x.clone(), None).logits;
        let lse = hippo_model::log_sum_exp(logits.clone());
        let _ = logits
            .gather(2, y.clone().reshape([1, t, 1]))
            .reshape([1, t])
            .sub(lse)
            .into_data();
        Ok(())
    };
    let hippo_score = || -> Result<()> {
        let out = hippo.forward(x.clone(), valid.clone(), &state)?;
        let _ = HippoFormer::target_log_probs(&out, y.clone()).into_data();
        Ok(())
    };
    // Warm-up both.
    base_score()?;
    hippo_score()?;
    let (tb, th) = best_of_pair(5, base_score, hippo_score)?;
    Ok(HippoBench {
        tokens: t,
        buffer_entries: entries,
        replay_rounds: config.max_replay_rounds,
        attention_layers,
        base_tok_s: t as f64 / tb.as_secs_f64(),
        hippo_tok_s: t as f64 / th.as_secs_f64(),
        overhead: th.as_secs_f64() / tb.as_secs_f64() - 1.0,
    })
}

/// The tokenizer of the evaluation and training sections.
fn bench_tokenizer(
    args: &BenchArgs,
    location: &hippo_gemma::ModelLocation,
) -> Result<GemmaTokenizer> {
    let path = crate::tokenizer_path(
        args.tokenizer.as_deref(),
        location,
        "pass --tokenizer or --no-eval --no-train",
    )?;
    Ok(GemmaTokenizer::from_file(&path)?)
}

fn wiki_split(tok: &GemmaTokenizer, split: Split) -> Result<TokenizedCorpus> {
    crate::tokenized_split(&CorpusSpec::WikiSample, split, tok).with_context(|| {
        format!("tokenising the Wikipedia sample ({split}); run `cargo xtask assets`")
    })
}

/// Streams the `docs` longest Wikipedia-sample test documents through the base and HippoFormer.
fn eval_throughput(
    base: &Gemma,
    config: &HippoFormerConfig,
    tok: &GemmaTokenizer,
    args: &BenchArgs,
    device: &Device,
) -> Result<EvalBench> {
    let mut corpus = wiki_split(tok, Split::Test)?;
    corpus
        .docs
        .sort_by_key(|d| std::cmp::Reverse(d.tokens.len()));
    corpus.docs.truncate(args.eval_docs.max(1));
    let corpus = Arc::new(corpus);
    let hippo = HippoFormer::new(base.clone(), config.clone(), device)?
        .with_attention_weight(1.0)
        .for_inference();
    let opts = hippo_eval::EvalOptions {
        seq_len: args.eval_seq_len,
        streams: 1,
        max_docs: None,
        allow_leaky: false,
    };
    let mut tokens = 0;
    let (tb, th) = best_of_pair(
        1,
        || {
            let r = hippo_eval::evaluate(
                &hippo_eval::Scorer::Base(base),
                corpus.clone(),
                &opts,
                device,
            )?;
            tokens = r.tokens;
            Ok(())
        },
        || {
            hippo_eval::evaluate(
                &hippo_eval::Scorer::Hippo(&hippo),
                corpus.clone(),
                &opts,
                device,
            )?;
            Ok(())
        },
    )?;
    Ok(EvalBench {
        documents: corpus.docs.len(),
        tokens,
        seq_len: args.eval_seq_len,
        base_tok_s: tokens as f64 / tb.as_secs_f64(),
        hippo_tok_s: tokens as f64 / th.as_secs_f64(),
        slowdown: th.as_secs_f64() / tb.as_secs_f64() - 1.0,
    })
}

/// A few optimizer steps of real training; the first step is a warm-up and is not timed.
fn train_throughput(
    base: &Gemma,
    base_path: &std::path::Path,
    config: &HippoFormerConfig,
    tok: &GemmaTokenizer,
    args: &BenchArgs,
    matmul: f64,
    device: &Device,
) -> Result<TrainBench> {
    let train = Arc::new(wiki_split(tok, Split::Train)?);
    let dir = tempfile::tempdir()?;
    let steps = args.train_steps.max(2);
    let opts = hippo_train::TrainOptions {
        seq_len: args.train_seq_len,
        batch_size: args.train_batch,
        max_steps: Some(steps),
        checkpoint_every: 0,
        keep_last: 1,
        valid_every: 0,
        valid_batches: 0,
        log_every: 1,
        output_dir: dir.path().to_path_buf(),
        ..hippo_train::TrainOptions::default()
    };
    hippo_train::train_model(
        base.clone(),
        base_path,
        config.clone(),
        train,
        None,
        &opts,
        device,
    )?;
    let log = dir.path().join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let (mut tokens, mut secs) = (0u64, 0f64);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let step = v["step"].as_u64().unwrap_or(0);
        // Skip validation-only lines and the warm-up step.
        if step < 2 || v.get("step_seconds").is_none() {
            continue;
        }
        tokens += v["tokens"].as_u64().unwrap_or(0);
        secs += v["step_seconds"].as_f64().unwrap_or(0.0);
    }
    if tokens == 0 || secs <= 0.0 {
        anyhow::bail!("the training log {} has no timed steps", log.display());
    }
    let tok_s = tokens as f64 / secs;
    let gflop = 2.0 * base.config().flops_per_token(args.train_seq_len / 2) / 1e9;
    Ok(TrainBench {
        seq_len: args.train_seq_len,
        batch: args.train_batch,
        steps: steps - 1,
        tok_s,
        gflop_per_token: gflop,
        fraction_of_matmul: tok_s * gflop / matmul,
    })
}

/// Runs `bench`.
#[allow(clippy::print_stdout)]
pub fn run(args: &BenchArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(crate::UsageError::wrap)?;
    let model_arg = crate::model_arg(args.model.as_deref())?;
    let location = hippo_gemma::resolve(&model_arg)?;
    let model = load_from(&location, &device)?;
    let cfg = model.config().clone();

    let mut cores = Vec::new();
    let matmul = busy(&mut cores, "matmul", || matmul_gflops(&device, 1024));

    // Forward: a fixed pseudo-random id sequence (BOS first).
    let n = args.forward_tokens.max(2);
    let ids: Vec<u32> = std::iter::once(cfg.bos_token_id)
        .chain((1..n).map(|i| (i as u32 * 7919) % (cfg.vocab_size as u32 - 10) + 10))
        .collect();
    let x = model.ids_tensor(std::slice::from_ref(&ids), &device)?;
    let _ = model.forward(x.clone(), None).logits.into_data(); // warm-up
    let t = busy(&mut cores, "forward", || {
        best_of(3, || {
            let _ = model.forward(x.clone(), None).logits.into_data();
        })
    });
    let forward_tok_s = n as f64 / t.as_secs_f64();
    let forward_bf16_tok_s = if device.supports_dtype(burn::tensor::DType::BF16) {
        let bf16 = model.clone().with_precision(hippo_gemma::Precision::Bf16)?;
        let _ = bf16.forward(x.clone(), None).logits.into_data(); // warm-up
        let t = best_of(3, || {
            let _ = bf16.forward(x.clone(), None).logits.into_data();
        });
        Some(n as f64 / t.as_secs_f64())
    } else {
        None
    };
    let gflop_tok = cfg.flops_per_token(n / 2) / 1e9;

    let decode_tok_s = busy(&mut cores, "decode", || {
        decode_rate(&model, &ids, args.decode_tokens, &device)
    })?;
    let decode_f16_head_tok_s = if args.device == "ndarray" {
        None
    } else {
        let model = model.clone().with_f16_lm_head();
        Some(decode_rate(&model, &ids, args.decode_tokens, &device)?)
    };

    let config = bench_config(args)?;
    let hippo = if args.no_hippo {
        None
    } else {
        tracing::info!("HippoFormer forward overhead");
        Some(busy(&mut cores, "hippoformer forward", || {
            hippo_overhead(&model, &config, &ids, &device)
        })?)
    };
    let tok = if args.no_eval && args.no_train {
        None
    } else {
        Some(bench_tokenizer(args, &location)?)
    };
    let eval = match (&tok, args.no_eval) {
        (Some(tok), false) => {
            tracing::info!("evaluation throughput");
            Some(busy(&mut cores, "evaluation", || {
                eval_throughput(&model, &config, tok, args, &device)
            })?)
        }
        _ => None,
    };
    let train = match (&tok, args.no_train) {
        (Some(tok), false) => {
            tracing::info!("training throughput");
            Some(busy(&mut cores, "training", || {
                train_throughput(&model, location.path(), &config, tok, args, matmul, &device)
            })?)
        }
        _ => None,
    };

    let report = BenchReport {
        device: args.device.clone(),
        matmul_gflops: matmul,
        forward_tok_s,
        forward_gflop_per_token: gflop_tok,
        forward_fraction_of_matmul: forward_tok_s * gflop_tok / matmul,
        forward_bf16_tok_s,
        decode_tok_s,
        decode_f16_head_tok_s,
        hippo,
        eval,
        train,
        cores_busy: cores,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("device                {}", report.device);
        println!("matmul (1024³ f32)    {:.1} GFLOP/s", report.matmul_gflops);
        println!(
            "forward ({n} tokens)   {:.1} tok/s  ({:.2} GFLOP/token, {:.0}% of matmul rate)",
            report.forward_tok_s,
            report.forward_gflop_per_token,
            100.0 * report.forward_fraction_of_matmul
        );
        if let Some(r) = report.forward_bf16_tok_s {
            println!("  with bf16 matmuls   {r:.1} tok/s");
        }
        println!("greedy decode (cache) {:.1} tok/s", report.decode_tok_s);
        if let Some(r) = report.decode_f16_head_tok_s {
            println!("  with f16 LM head    {r:.1} tok/s");
        }
        if let Some(h) = &report.hippo {
            println!(
                "HippoFormer forward   {:.1} tok/s vs base {:.1} tok/s ({} tokens, {} buffer entries, R = {}, {} attention layers): overhead {:+.1}% (target ≤ 15%)",
                h.hippo_tok_s,
                h.base_tok_s,
                h.tokens,
                h.buffer_entries,
                h.replay_rounds,
                h.attention_layers,
                100.0 * h.overhead
            );
        }
        if let Some(e) = &report.eval {
            println!(
                "evaluation            HippoFormer {:.1} tok/s vs base {:.1} tok/s ({} docs, {} tokens, seq {}): {:+.1}% slower (target ≤ 15%)",
                e.hippo_tok_s,
                e.base_tok_s,
                e.documents,
                e.tokens,
                e.seq_len,
                100.0 * e.slowdown
            );
        }
        if let Some(t) = &report.train {
            println!(
                "training              {:.1} tok/s (seq {}, batch {}, {} timed steps; {:.2} GFLOP/token, {:.0}% of matmul rate)",
                t.tok_s,
                t.seq_len,
                t.batch,
                t.steps,
                t.gflop_per_token,
                100.0 * t.fraction_of_matmul
            );
        }
        if !report.cores_busy.is_empty() {
            let sections: Vec<String> = report
                .cores_busy
                .iter()
                .map(|(name, c)| format!("{name} {c:.2}"))
                .collect();
            println!(
                "cores busy            {} (process CPU time / wall time, of {} available)",
                sections.join(", "),
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU-time counter advances while this thread spins, and `busy` records the share of
    /// one core that a single spinning thread keeps busy: above 0, at most the machine's cores.
    #[test]
    fn cores_busy_counts_the_cpu_time_of_a_spinning_thread() {
        let Some(start) = process_cpu_seconds() else {
            panic!("/proc/self/stat is unreadable (this test runs on Linux)");
        };
        let mut log = Vec::new();
        let spun = busy(&mut log, "spin", || {
            let t = Instant::now();
            let mut x = 0u64;
            while process_cpu_seconds().is_some_and(|c| c - start < 0.1)
                && t.elapsed() < Duration::from_secs(20)
            {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            x
        });
        std::hint::black_box(spun);
        let used = process_cpu_seconds().expect("readable") - start;
        assert!(used >= 0.1, "spun for {used} s of CPU time");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert_eq!(log.len(), 1);
        let (name, c) = &log[0];
        assert_eq!(name, "spin");
        assert!(*c > 0.0 && *c <= cores + 0.2, "cores busy {c}");
    }
}
