//! `--precision` and the config's `precision` as a user meets them: an unknown value exits with
//! code 2 and names the valid ones, before any model is loaded.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::xtask;

#[test]
fn an_unknown_precision_exits_with_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    let model = "tests/fixtures/tiny-gemma3";
    let (code, _, err) = xtask(&[
        "train",
        "--model",
        model,
        "--precision",
        "fp16",
        "--output-dir",
        out,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--precision") && err.contains("`fp16`") && err.contains("f32, bf16"),
        "{err}"
    );

    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "precision = \"half\"\n").unwrap();
    for cmd in ["train", "eval"] {
        let (code, _, err) = xtask(&[
            cmd,
            "--model",
            model,
            "--config",
            cfg.to_str().unwrap(),
            if cmd == "train" {
                "--output-dir"
            } else {
                "--output"
            },
            out,
        ]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("precision") && err.contains("half"),
            "{cmd}: {err}"
        );
    }
}
