//! The ablation summary: paired per-document statistics against `full`, Holm, the table.

use hippo_eval::ablation::{AblationResults, RunResult, markdown, summarise};
use hippo_model::HippoFormerConfig;

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
        init_from: None,
        eval_doc_tokens: None,
        resamples: 2000,
        variants: s.clone(),
    });
    assert!(
        md.contains("| worse | 2 |") && md.contains("| full | 2 |"),
        "{md}"
    );
    assert!(
        !md.contains("from the checkpoint") && !md.contains("first "),
        "{md}"
    );
    let md = markdown(&AblationResults {
        git_commit: "c".into(),
        base_model: "m".into(),
        corpus: "sotu".into(),
        eval_docs: 3,
        train_steps: 0,
        seq_len: 8,
        init_from: Some("runs/cal".into()),
        eval_doc_tokens: Some(4096),
        resamples: 2000,
        variants: s,
    });
    assert!(
        md.contains("3 documents, first 4096 tokens of each")
            && md.contains("0 steps × seq 8, from the checkpoint `runs/cal`"),
        "{md}"
    );
}
