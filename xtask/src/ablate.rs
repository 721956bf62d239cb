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
//! excluded), applied on top of `--config` (default: the built-in defaults = `full`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hippo_eval::stats;
use hippo_gemma::GemmaTokenizer;
use hippo_model::HippoFormerConfig;
use hippo_train::data::{CorpusSpec, Split, TokenizedCorpus};
use serde::{Deserialize, Serialize};

use crate::UsageError;

/// Arguments of `ablate`.
#[derive(clap::Args, Debug)]
pub struct AblateArgs {
    /// The full model's config (variants are overlays on it); default: the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
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
    /// Optimizer steps per run.
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
    /// Bootstrap resamples and seed of the paired tests.
    pub resamples: usize,
    /// Variants, `full` first.
    pub variants: Vec<VariantSummary>,
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
    let base: toml::Table =
        toml::from_str(&full.to_toml()).context("re-reading the full config")?;
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
        let overlay: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut merged = base.clone();
        for (k, v) in overlay {
            merged.insert(k, v);
        }
        let config = HippoFormerConfig::from_toml_str(
            &toml::to_string(&merged)?,
            &path.display().to_string(),
        )
        .map_err(|e| UsageError::wrap(e.into()))?;
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
        bail!("no finished run of `full`");
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
            let i = stats::mean_ci_t(&nll, 0.95)?;
            (i.lo.exp(), i.hi.exp())
        } else {
            (nll_mean.exp(), nll_mean.exp())
        };
        let (delta, p) = if name == "full" {
            (None, None)
        } else {
            let docs = seed_mean_doc_nll(&rs);
            if docs.len() != full_docs.len() {
                bail!(
                    "variant {name} was evaluated on {} documents, full on {}",
                    docs.len(),
                    full_docs.len()
                );
            }
            let paired = stats::paired_bootstrap(&docs, &full_docs, 0.95, resamples, 0)?;
            let p = if docs.len() >= 2 {
                Some(stats::wilcoxon_signed_rank(&docs, &full_docs)?.p_value)
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
    let adjusted = stats::holm(&raw.iter().map(|&(_, p)| p).collect::<Vec<_>>())?;
    for ((i, _), a) in raw.iter().zip(adjusted) {
        out[*i].p_holm = Some(a);
    }
    Ok(out)
}

/// The markdown table of an ablation.
pub fn markdown(r: &AblationResults) -> String {
    let mut s = format!(
        "# Ablations\n\nBase `{}`, corpus `{}` (train → test, {} documents), {} steps × seq {}, commit `{}`.\n\
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
pub fn figure(r: &AblationResults, dir: &Path) -> Result<hippo_eval::figures::FigurePaths> {
    let bars: Vec<hippo_eval::figures::Bar> = r
        .variants
        .iter()
        .map(|v| hippo_eval::figures::Bar {
            label: v.variant.clone(),
            mean: v.ppl_mean,
            lo: v.ppl_ci.0,
            hi: v.ppl_ci.1,
        })
        .collect();
    Ok(hippo_eval::figures::ablation_bars(
        &bars,
        "token perplexity (mean, 95% CI over seeds)",
        &dir.join("ablation_bars"),
    )?)
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
    if args.seeds == 0 || args.train_steps == 0 || args.eval_docs == 0 {
        bail!(UsageError::new(
            "--seeds, --train-steps and --eval-docs must be at least 1"
        ));
    }
    let device = crate::device::parse(&args.device).map_err(UsageError::wrap)?;
    let full = match &args.config {
        Some(p) => HippoFormerConfig::from_toml_file(p).map_err(|e| UsageError::wrap(e.into()))?,
        None => HippoFormerConfig::default(),
    };
    let variants = variants(&full, &args.ablations_dir, &args.variants)?;
    let model_arg = crate::base_model_arg(args.model.as_deref(), &full.base_model)?;
    let location = hippo_gemma::resolve(&model_arg).map_err(|e| UsageError::wrap(e.into()))?;
    let tok_path = crate::tokenizer_path(args.tokenizer.as_deref(), &location, "pass --tokenizer")?;
    let tok = GemmaTokenizer::from_file(&tok_path)?;
    let spec: CorpusSpec = args
        .dataset
        .parse()
        .map_err(|e: hippo_train::data::DataError| UsageError::wrap(e.into()))?;
    let train = load_corpus(&spec, Split::Train, &tok)?;
    let mut test = (*load_corpus(&spec, Split::Test, &tok)?).clone();
    test.docs.sort_by_key(|d| std::cmp::Reverse(d.tokens.len()));
    test.docs.truncate(args.eval_docs);
    let test = Arc::new(test);
    let base = hippo_gemma::load_from(&location, &device)?;

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
            tracing::info!(variant = %name, seed, run = done, of = total, "training");
            let config = HippoFormerConfig {
                seed,
                base_model: model_arg.clone(),
                ..config.clone()
            };
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
                log_every: 5,
                ..hippo_train::TrainOptions::default()
            };
            let (model, summary) = hippo_train::train_model(
                base.clone(),
                location.path(),
                config.clone(),
                train.clone(),
                None,
                &opts,
                &device,
            )?;
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
                steps: summary.steps,
                train_tok_s: summary.tokens_per_sec,
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

    fn run(variant: &str, seed: u64, doc_nll: &[f64]) -> RunResult {
        let per_document: Vec<(f64, usize)> = doc_nll.iter().map(|&x| (10.0 * x, 10)).collect();
        let mean = doc_nll.iter().sum::<f64>() / doc_nll.len() as f64;
        RunResult {
            variant: variant.into(),
            seed,
            config: HippoFormerConfig::default(),
            steps: 1,
            train_tok_s: 1.0,
            tokens: 10 * doc_nll.len(),
            mean_nll: mean,
            token_ppl: mean.exp(),
            bits_per_byte: 0.0,
            per_document,
        }
    }

    #[test]
    fn summary_pairs_documents_and_holm_adjusts() {
        let full = [2.0, 2.5, 3.0, 2.2, 2.8, 3.1, 2.4, 2.9];
        let worse: Vec<f64> = full
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.3 + 0.01 * i as f64)
            .collect();
        let same: Vec<f64> = full
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i % 2 == 0 { 0.01 } else { -0.012 })
            .collect();
        let runs = vec![
            run("full", 0, &full),
            run("full", 1, &full),
            run("worse", 0, &worse),
            run("worse", 1, &worse),
            run("same", 0, &same),
            run("same", 1, &same),
        ];
        let order: Vec<String> = ["full", "worse", "same"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = summarise(&runs, &order, 2000).expect("summary");
        assert_eq!(s.len(), 3);
        assert!(s[0].delta_nll.is_none() && s[0].p_holm.is_none());
        let (d, lo, hi) = s[1].delta_nll.expect("delta");
        assert!((d - (0.3 + 0.035)).abs() < 1e-9, "{d}");
        assert!(lo > 0.0 && hi > lo, "{lo} {hi}");
        // Every document is worse: the exact two-sided Wilcoxon p of n = 8 is 2/256.
        let p = s[1].p_wilcoxon.expect("p");
        assert!((p - 2.0 / 256.0).abs() < 1e-12, "{p}");
        // Holm: the smaller p is multiplied by 2 (two tests).
        assert!((s[1].p_holm.expect("holm") - 2.0 * p).abs() < 1e-12);
        // Mixed tiny differences: two-sided permutation p = 2·36/256 ≈ 0.28 (tied ranks).
        assert!(s[2].p_wilcoxon.expect("p") > 0.05);
        // Identical seeds → a zero-width interval over seeds.
        assert_eq!(s[1].ppl_ci.0, s[1].ppl_ci.1);
        let md = markdown(&AblationResults {
            git_commit: "c".into(),
            base_model: "m".into(),
            corpus: "wiki-sample".into(),
            eval_docs: 8,
            train_steps: 1,
            seq_len: 8,
            resamples: 2000,
            variants: s,
        });
        assert!(
            md.contains("| worse | 2 |") && md.contains("| full | 2 |"),
            "{md}"
        );
    }
}
