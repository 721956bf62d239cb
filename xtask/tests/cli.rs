//! The command line as a user meets it: scoring a tiny checkpoint, exit codes, the audit.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{root, xtask};

#[test]
fn score_json_matches_the_transformers_reference() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/tiny-gemma2/reference.json")).unwrap(),
    )
    .unwrap();
    let ids = r["input_ids"][0].to_string();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("ids.json");
    std::fs::write(&f, &ids).unwrap();
    let (code, out, err) = xtask(&[
        "score",
        "--model",
        "tests/fixtures/tiny-gemma2",
        "--ids-file",
        f.to_str().unwrap(),
        "--context",
        "64",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["input_ids"].to_string(), ids);
    let got: Vec<f64> = v["nll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = r["nll"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }
}

#[test]
fn bad_input_exits_with_code_2_and_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("ids.txt");
    std::fs::write(&f, "2 17 9999").unwrap();
    let (code, _, err) = xtask(&[
        "score",
        "--model",
        "tests/fixtures/tiny-gemma1",
        "--ids-file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("9999") && err.contains("out of range"),
        "{err}"
    );
    let (code, _, err) = xtask(&[
        "score",
        "--model",
        "/no/such/model",
        "--ids-file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/model"), "{err}");
    std::fs::write(&f, "2 x 3").unwrap();
    let (code, _, err) = xtask(&[
        "score",
        "--model",
        "tests/fixtures/tiny-gemma1",
        "--ids-file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = xtask(&["score", "--no-such-flag"]);
    assert_eq!(code, 2);
    let (code, _, err) = xtask(&["audit-causality", "--config", "configs/no-such.toml"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn audit_passes_for_the_default_and_fails_for_the_pooled_query() {
    let (code, out, err) = xtask(&[
        "audit-causality",
        "--model",
        "tests/fixtures/tiny-gemma3",
        "--all-ablations",
        "--seg",
        "8",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The config and its 11 ablations.
    assert_eq!(out.matches("PASS").count(), 12, "{out}");
    let (code, out, _) = xtask(&[
        "audit-causality",
        "--model",
        "tests/fixtures/tiny-gemma3",
        "--config",
        "configs/ablations/leaky_sequence_mean.toml",
        "--seg",
        "8",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL"), "{out}");
}
