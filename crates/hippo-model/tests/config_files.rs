//! The TOML files in `configs/` parse, and `configs/default.toml` is exactly the built-in default.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;

use hippo_model::HippoFormerConfig;

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn default_toml_is_the_builtin_default() {
    let cfg = HippoFormerConfig::from_toml_file(&configs_dir().join("default.toml")).unwrap();
    assert_eq!(cfg, HippoFormerConfig::default());
}

#[test]
fn every_shipped_config_parses_and_differs_from_the_default() {
    let dir = configs_dir().join("ablations");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let cfg = HippoFormerConfig::from_toml_file(&p).unwrap();
        assert_ne!(
            cfg,
            HippoFormerConfig::default(),
            "{} changes nothing",
            p.display()
        );
        n += 1;
    }
    assert!(n >= 6);
}

#[test]
fn the_reference_config_is_the_reference_memory() {
    use hippo_model::{FusionSpace, MemoryScoring, MemoryValue};
    let cfg = HippoFormerConfig::from_toml_file(&configs_dir().join("reference.toml")).unwrap();
    assert_eq!(cfg.memory_value, MemoryValue::Hidden);
    assert_eq!(cfg.fusion_space, FusionSpace::Hidden);
    assert_eq!(cfg.memory_scoring, MemoryScoring::ScaledDot);
    assert_eq!(cfg.memory_score_scale, 1.0);
    assert_eq!(cfg.decay_rate, 0.9);
    assert_eq!(cfg.usefulness_weight, 0.0);
    assert_eq!(cfg.memory_protect_recent, 0);
    // Everything else is the default.
    let back = HippoFormerConfig {
        memory_value: MemoryValue::NextToken,
        fusion_space: FusionSpace::Probability,
        memory_scoring: MemoryScoring::Cosine,
        memory_score_scale: 40.0,
        decay_rate: 0.98,
        usefulness_weight: 1.0,
        memory_protect_recent: 512,
        ..cfg
    };
    assert_eq!(back, HippoFormerConfig::default());
}

#[test]
fn hidden_values_need_a_hidden_path() {
    let err = HippoFormerConfig::from_toml_str(
        "memory_value = \"hidden\"\nfusion_space = \"probability\"\n",
        "inline",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("memory_value") && err.contains("inline"),
        "{err}"
    );
    for bad in [
        "memory_score_scale = 0.0",
        "memory_score_scale = -1.0",
        "usefulness_weight = -1.0",
        "fusion_space = \"logits\"",
    ] {
        assert!(
            HippoFormerConfig::from_toml_str(bad, "inline").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn sizes_that_allocate_are_bounded() {
    for bad in [
        "buffer_size = 1000000000000",
        "max_replay_rounds = 100000",
        "lora_r = 1000000",
        "n_anchors = 1000000000",
        "salience_min_duration = 5000",
        "salience_n_heads = 8192",
        "fusion_n_heads = 8192",
    ] {
        let err = HippoFormerConfig::from_toml_str(bad, "inline")
            .expect_err(bad)
            .to_string();
        let field = bad.split(' ').next().unwrap();
        assert!(err.contains(field) && err.contains("limit"), "{bad}: {err}");
    }
    // The limits themselves are accepted.
    let ok = format!(
        "buffer_size = {}\nmax_replay_rounds = {}",
        hippo_model::config::MAX_BUFFER_SIZE,
        hippo_model::config::MAX_SMALL
    );
    HippoFormerConfig::from_toml_str(&ok, "inline").unwrap();
}

#[test]
fn an_overlay_replaces_only_its_keys_and_is_checked() {
    let full = HippoFormerConfig {
        buffer_size: 300,
        decay_rate: 0.95,
        ..HippoFormerConfig::default()
    };
    let v = full
        .with_overlay("decay_rate = 0.8\n", "decay_0.8.toml")
        .unwrap();
    assert_eq!(v.decay_rate, 0.8);
    // Keys the overlay does not set keep the full config's values, not the defaults.
    assert_eq!(v.buffer_size, 300);
    assert_eq!(
        HippoFormerConfig {
            decay_rate: 0.8,
            ..full.clone()
        },
        v
    );
    // An unknown key, a bad value and bad TOML are errors naming the overlay.
    for bad in ["decay_rat = 0.8\n", "decay_rate = 1.5\n", "decay_rate = \n"] {
        let e = full.with_overlay(bad, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{bad:?}: {e}");
    }
}
