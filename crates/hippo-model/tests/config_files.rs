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
