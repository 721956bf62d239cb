//! `cargo xtask ablate --init-from` as a user meets it, on the tiny Gemma 3 fixture: a trained
//! checkpoint's weights are evaluated under variant configs (an overlay on the checkpoint's
//! config, then each variant's) without training. The `full` variant scores exactly what
//! `eval --checkpoint` scores on the same clipped test documents, so the weights really were
//! loaded; each variant's config is the overlays on the checkpoint's; bad input exits 2.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use hippo_eval::EvalResults;
use hippo_eval::ablation::{AblationResults, RunResult};

use common::{Setup, root, setup};

/// Runs the xtask binary with the fixture's model, tokenizer and `HIPPO_HOME`.
fn run(s: &Setup, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--model")
        .arg(&s.base)
        .arg("--tokenizer")
        .arg(&s.tokenizer)
        .current_dir(root())
        .env("HIPPO_HOME", &s.home)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_run(dir: &Path, variant: &str) -> RunResult {
    let path = dir
        .join("runs")
        .join(variant)
        .join("seed-0")
        .join("eval.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn ablate_from_a_checkpoint_evaluates_its_weights_under_each_variant() {
    let s = setup();
    let tmp = tempfile::tempdir().unwrap();
    let dataset = format!("txt-dir:{}", s.corpus.display());
    let train = tmp.path().join("train");
    let (code, err) = run(
        &s,
        &[
            "train",
            "--config",
            s.config.to_str().unwrap(),
            "--dataset",
            &dataset,
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--max-steps",
            "3",
            "--checkpoint-every",
            "3",
            "--valid-batches",
            "0",
            "--lr",
            "3e-3",
            "--output-dir",
            train.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ckpt = train.join("checkpoints").join("step-00000003");

    // The reference: `eval` of the checkpoint on the test split, each document clipped to 60.
    let eval_out = tmp.path().join("eval").join("results.json");
    let (code, err) = run(
        &s,
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--dataset",
            &dataset,
            "--seq-len",
            "16",
            "--max-doc-tokens",
            "60",
            "--output",
            eval_out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let eval = EvalResults::read(&eval_out).unwrap();
    assert_eq!(eval.hippoformer.documents, 3);

    let overlay = tmp.path().join("buffer_8.toml");
    std::fs::write(&overlay, "buffer_size = 8\n").unwrap();
    let out = tmp.path().join("ablate");
    let ablate = |extra: &[&str]| {
        let mut args = vec![
            "ablate",
            "--init-from",
            ckpt.to_str().unwrap(),
            "--dataset",
            &dataset,
            "--train-steps",
            "0",
            "--seeds",
            "1",
            "--seq-len",
            "16",
            "--eval-docs",
            "3",
            "--eval-doc-tokens",
            "60",
            "--resamples",
            "200",
            "--output-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&s, &args)
    };
    // First at the checkpoint's own config: `full` must score what `eval` scored.
    let (code, err) = ablate(&["--variants", "random_salience"]);
    assert_eq!(code, 0, "{err}");
    let full = read_run(&out, "full");
    assert_eq!(full.steps, 0);
    assert_eq!(full.tokens, eval.hippoformer.tokens);
    assert_eq!(full.tokens, 3 * 59, "three test documents of 60 tokens");
    assert!(
        (full.mean_nll - eval.hippoformer.mean_nll).abs() < 1e-5,
        "ablate's full {} vs eval --checkpoint {}",
        full.mean_nll,
        eval.hippoformer.mean_nll
    );
    // Trained LoRA factors were loaded: not the base's (= an untrained model's) NLL.
    assert!(
        (full.mean_nll - eval.base.mean_nll).abs() > 1e-4,
        "{} vs base {}",
        full.mean_nll,
        eval.base.mean_nll
    );
    let random = read_run(&out, "random_salience");
    assert!(random.config.to_toml().contains("salience = \"random\""));
    assert_eq!(
        random.config.buffer_size, 16,
        "the checkpoint's buffer size"
    );
    let results: AblationResults =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.train_steps, 0);
    assert_eq!(results.eval_doc_tokens, Some(60));
    assert_eq!(results.init_from.as_deref(), ckpt.to_str());
    assert_eq!(results.variants.len(), 2);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("first 60 tokens of each"), "{md}");

    // With an overlay every variant gets it, on top of the checkpoint's config.
    std::fs::remove_dir_all(&out).unwrap();
    let (code, err) = ablate(&[
        "--variants",
        "no_salience",
        "--overlay",
        overlay.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (full8, none8) = (read_run(&out, "full"), read_run(&out, "no_salience"));
    assert_eq!(full8.config.buffer_size, 8);
    assert_eq!(none8.config.buffer_size, 8);
    assert!(none8.config.to_toml().contains("salience = \"off\""));
    assert_eq!(
        none8.config.lora_r, 4,
        "the checkpoint's other fields are kept"
    );

    // Bad input exits 2 with a message naming it.
    let fresh = tmp.path().join("fresh");
    for (args, needle) in [
        (
            vec![
                "ablate",
                "--train-steps",
                "0",
                "--output-dir",
                fresh.to_str().unwrap(),
            ],
            "--init-from",
        ),
        (
            vec![
                "ablate",
                "--init-from",
                ckpt.to_str().unwrap(),
                "--overlay",
                "/nonexistent/overlay.toml",
                "--output-dir",
                fresh.to_str().unwrap(),
            ],
            "overlay",
        ),
        (
            vec![
                "ablate",
                "--init-from",
                ckpt.to_str().unwrap(),
                "--eval-doc-tokens",
                "1",
                "--output-dir",
                fresh.to_str().unwrap(),
            ],
            "--eval-doc-tokens",
        ),
    ] {
        let (code, err) = run(&s, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
