//! `cargo xtask bench`: throughput of the backend and the base model, measured in one run so
//! that ratios (achieved FLOP rate / matmul rate) are meaningful on a noisy machine.

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::tensor::{Distribution, Tensor};
use hippo_gemma::load_from;
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
    /// Greedy decode with the KV cache after a short prompt, tokens/s (f32 throughout).
    pub decode_tok_s: f64,
    /// The same with the f16 LM head (`Gemma::with_f16_lm_head`), tokens/s; `None` on the
    /// ndarray backend, which has no f16 tensors.
    pub decode_f16_head_tok_s: Option<f64>,
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

/// Runs `bench`.
#[allow(clippy::print_stdout)]
pub fn run(args: &BenchArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(crate::UsageError::wrap)?;
    let model_arg = crate::model_arg(args.model.as_deref())?;
    let location = hippo_gemma::resolve(&model_arg)?;
    let model = load_from(&location, &device)?;
    let cfg = model.config().clone();

    let matmul = matmul_gflops(&device, 1024);

    // Forward: a fixed pseudo-random id sequence (BOS first).
    let n = args.forward_tokens.max(2);
    let ids: Vec<u32> = std::iter::once(cfg.bos_token_id)
        .chain((1..n).map(|i| (i as u32 * 7919) % (cfg.vocab_size as u32 - 10) + 10))
        .collect();
    let x = model.ids_tensor(std::slice::from_ref(&ids), &device)?;
    let _ = model.forward(x.clone(), None).logits.into_data(); // warm-up
    let t = best_of(3, || {
        let _ = model.forward(x.clone(), None).logits.into_data();
    });
    let forward_tok_s = n as f64 / t.as_secs_f64();
    let gflop_tok = cfg.flops_per_token(n / 2) / 1e9;

    let decode_tok_s = decode_rate(&model, &ids, args.decode_tokens, &device)?;
    let decode_f16_head_tok_s = if args.device == "ndarray" {
        None
    } else {
        let model = model.with_f16_lm_head();
        Some(decode_rate(&model, &ids, args.decode_tokens, &device)?)
    };

    let report = BenchReport {
        device: args.device.clone(),
        matmul_gflops: matmul,
        forward_tok_s,
        forward_gflop_per_token: gflop_tok,
        forward_fraction_of_matmul: forward_tok_s * gflop_tok / matmul,
        decode_tok_s,
        decode_f16_head_tok_s,
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
        println!("greedy decode (cache) {:.1} tok/s", report.decode_tok_s);
        if let Some(r) = report.decode_f16_head_tok_s {
            println!("  with f16 LM head    {r:.1} tok/s");
        }
    }
    Ok(())
}
