//! `cargo xtask eval` as a user meets it, on the real Gemma-3-270M (needs `cargo xtask assets`):
//! a small run writes a results.json that parses and a matching table; bad input exits 2.
#![allow(missing_docs, clippy::unwrap_used)]

use hippo_eval::EvalResults;

mod common;

use common::xtask;

#[test]
fn eval_on_the_real_model_writes_results_that_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run").join("results.json");
    let (code, stdout, err) = xtask(&[
        "eval",
        "--config",
        "configs/default.toml",
        "--max-docs",
        "1",
        "--seq-len",
        "64",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let r = EvalResults::read(&out).unwrap();
    assert_eq!(r.metadata.seq_len, 64);
    assert_eq!(r.metadata.split, "test");
    assert_eq!(r.metadata.corpus, "wiki-sample");
    assert!(!r.metadata.leaky);
    assert_eq!(r.base.documents, 1);
    assert!(r.base.tokens > 64, "one document of several segments");
    assert_eq!(r.base.tokens, r.hippoformer.tokens);
    // Untrained: HippoFormer is the base model exactly (identity at init).
    assert!(
        (r.base.mean_nll - r.hippoformer.mean_nll).abs() < 1e-4,
        "{} vs {}",
        r.base.mean_nll,
        r.hippoformer.mean_nll
    );
    // Gemma-3-270M on Wikipedia: a sane perplexity on the first segment (every segment starts
    // with BOS; the first has no memory before it and its own start for context).
    let first = r.base.nll_by_segment[0].unwrap();
    assert!(first > 0.5 && first < 200f64.ln(), "segment 0 NLL {first}");
    assert!(r.base.token_ppl.is_finite());
    assert!(
        r.metrics.content_function.is_some(),
        "token offsets matched"
    );
    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert_eq!(md, r.to_markdown());
    assert!(stdout.contains("| base | 64 |"), "{stdout}");
}

#[test]
fn a_leaky_config_and_bad_input_exit_with_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results.json");
    let out = out.to_str().unwrap();
    let (code, _, err) = xtask(&[
        "eval",
        "--config",
        "configs/ablations/leaky_sequence_mean.toml",
        "--output",
        out,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow-leaky"), "{err}");
    for (args, needle) in [
        (
            vec!["eval", "--checkpoint", "/nonexistent/ckpt", "--output", out],
            "not a checkpoint",
        ),
        (
            vec!["eval", "--dataset", "no-such-corpus", "--output", out],
            "no-such-corpus",
        ),
        (
            vec!["eval", "--max-docs", "0", "--output", out],
            "--max-docs",
        ),
        (vec!["eval", "--split", "dev2", "--output", out], "dev2"),
    ] {
        let (code, _, err) = xtask(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(out).exists());
}
