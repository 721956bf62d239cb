//! Checkpoint integrity: every file's sha256 is in `meta.json`; a file damaged after the write
//! (bytes flipped mid-file, length unchanged), a missing file or a damaged `meta.json` is
//! refused by name, and a format-1 checkpoint (no hashes) still loads.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::{HippoFormer, HippoFormerConfig, integrity};

use common::{base, device, small};

fn base_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3")
}

fn saved(dir: &Path) -> checkpoint::CheckpointMeta {
    let m = HippoFormer::new(base(), small(HippoFormerConfig::default()), &device()).unwrap();
    checkpoint::save(&m, dir, 7, &BaseRef::of(&base_dir()).unwrap()).unwrap()
}

fn load(dir: &Path) -> hippo_model::Result<()> {
    checkpoint::load(base(), &base_dir(), dir, &device()).map(|_| ())
}

/// Overwrites `n` bytes in the middle of `path` with their complement (length unchanged).
fn flip_mid(path: &Path, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    let start = len / 2 - n.min(len / 2) / 2;
    for b in &mut bytes[start..(start + n).min(len)] {
        *b = !*b;
    }
    std::fs::write(path, &bytes).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len() as usize, len);
}

#[test]
fn meta_records_every_file_and_a_clean_checkpoint_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = saved(tmp.path());
    assert_eq!(meta.format, checkpoint::FORMAT_VERSION);
    let names: Vec<&str> = meta.files.keys().map(String::as_str).collect();
    assert_eq!(names, [checkpoint::CONFIG_FILE, checkpoint::MODEL_FILE]);
    for (name, hash) in &meta.files {
        assert_eq!(
            &integrity::sha256_file(&tmp.path().join(name)).unwrap(),
            hash
        );
    }
    // meta.json on disk is what save returned; no temporary is left behind.
    assert_eq!(checkpoint::read_meta(tmp.path()).unwrap(), meta);
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    load(tmp.path()).unwrap();
}

#[test]
fn a_flipped_byte_mid_file_is_refused_naming_the_file() {
    for (file, n) in [(checkpoint::MODEL_FILE, 400), (checkpoint::MODEL_FILE, 1)] {
        let tmp = tempfile::tempdir().unwrap();
        saved(tmp.path());
        flip_mid(&tmp.path().join(file), n);
        let e = load(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains(file) && e.contains("corrupt") && e.contains("sha256"),
            "{file}, {n} bytes: {e}"
        );
        let e = checkpoint::verify(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(file) && e.contains("corrupt"), "{e}");
    }
}

#[test]
fn a_damaged_config_is_refused_before_it_is_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    let p = tmp.path().join(checkpoint::CONFIG_FILE);
    let text = std::fs::read_to_string(&p).unwrap();
    // Still valid TOML, a different model: only the hash can tell.
    let changed = text.replace("buffer_size = 16", "buffer_size = 17");
    assert_ne!(text, changed);
    std::fs::write(&p, changed).unwrap();
    for e in [
        checkpoint::read_config(tmp.path()).unwrap_err().to_string(),
        load(tmp.path()).unwrap_err().to_string(),
    ] {
        assert!(
            e.contains(checkpoint::CONFIG_FILE) && e.contains("corrupt"),
            "{e}"
        );
    }
}

#[test]
fn a_missing_file_or_a_damaged_meta_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    std::fs::remove_file(tmp.path().join(checkpoint::MODEL_FILE)).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains(checkpoint::MODEL_FILE) && e.contains("missing"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    let p = tmp.path().join(checkpoint::META_FILE);
    let text = std::fs::read_to_string(&p).unwrap();
    // A hash changed by one digit.
    let meta = checkpoint::read_meta(tmp.path()).unwrap();
    let h = &meta.files[checkpoint::MODEL_FILE];
    let last = h.chars().last().unwrap();
    let other = if last == '0' { '1' } else { '0' };
    let bad = format!("{}{other}", &h[..h.len() - 1]);
    std::fs::write(&p, text.replace(h.as_str(), &bad)).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains(checkpoint::MODEL_FILE) && e.contains("corrupt"),
        "{e}"
    );
    // A meta.json of format 2 without hashes.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("files");
    std::fs::write(&p, v.to_string()).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("no file hashes"), "{e}");
    // A name that leaves the directory.
    v["files"] = serde_json::json!({"../x": "00"});
    std::fs::write(&p, v.to_string()).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("not in the directory"), "{e}");
}

#[test]
fn a_format_1_checkpoint_without_hashes_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    let p = tmp.path().join(checkpoint::META_FILE);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("files");
    v["format"] = serde_json::json!(1);
    std::fs::write(&p, v.to_string()).unwrap();
    load(tmp.path()).unwrap();
    v["format"] = serde_json::json!(checkpoint::FORMAT_VERSION + 1);
    std::fs::write(&p, v.to_string()).unwrap();
    let e = load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("format version 3"), "{e}");
}

#[test]
fn write_atomic_replaces_the_file_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("meta.json");
    integrity::write_atomic(&p, b"first").unwrap();
    integrity::write_atomic(&p, b"second").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second");
    // A target whose directory does not exist: an error naming it, nothing written.
    let bad = tmp.path().join("no-such-dir").join("meta.json");
    let e = integrity::write_atomic(&bad, b"x").unwrap_err().to_string();
    assert!(e.contains("no-such-dir"), "{e}");
}

/// A checkpoint holds the attention path's weights: a calibrated `g` survives save and load.
#[test]
fn the_attention_path_weights_round_trip_through_a_checkpoint() {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    let dir = tempfile::tempdir().unwrap();
    let mut m = HippoFormer::new(base(), small(HippoFormerConfig::default()), &device()).unwrap();
    let n = m.base.config().num_layers;
    let g: Vec<f32> = (0..n).map(|l| 0.5 + l as f32).collect();
    m.attention_weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(g.clone(), [n]),
        &device(),
    ));
    let names: Vec<String> = checkpoint::checkpoint_tensors(&m)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(names.iter().any(|p| p == "attention_weight"), "{names:?}");
    checkpoint::save(&m, dir.path(), 1, &BaseRef::of(&base_dir()).unwrap()).unwrap();
    let (back, _) = checkpoint::load(base(), &base_dir(), dir.path(), &device()).unwrap();
    assert_eq!(attention_weights(&back), g);
}

/// The attention path's per-layer weights `g` of `m`.
fn attention_weights(m: &HippoFormer) -> Vec<f32> {
    m.attention_weight.val().into_data().iter::<f32>().collect()
}

/// A checkpoint's weights load into a variant's model (another buffer size and salience mode:
/// the same trainable tensors), and only there: `load_into` refuses the variant by naming the
/// fields that differ, and a variant with other tensor shapes is refused by `load_weights_into`.
#[test]
fn weights_load_into_a_variant_with_the_same_tensors_only() {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(HippoFormerConfig::default());
    let mut m = HippoFormer::new(base(), cfg.clone(), &device()).unwrap();
    let n = m.base.config().num_layers;
    let g: Vec<f32> = (0..n).map(|l| 0.25 + l as f32).collect();
    m.attention_weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(g.clone(), [n]),
        &device(),
    ));
    let base_ref = BaseRef::of(&base_dir()).unwrap();
    checkpoint::save(&m, dir.path(), 3, &base_ref).unwrap();

    let variant = cfg
        .with_overlay("buffer_size = 8\nsalience = \"random\"\n", "test")
        .unwrap();
    let fresh = || HippoFormer::new(base(), variant.clone(), &device()).unwrap();
    let err = checkpoint::load_into(fresh(), dir.path(), &base_ref)
        .expect_err("load_into needs the checkpoint's own config")
        .to_string();
    assert!(
        err.contains("buffer_size, salience") && err.contains("load_weights_into"),
        "{err}"
    );
    let (back, meta) = checkpoint::load_weights_into(fresh(), dir.path(), &base_ref).unwrap();
    assert_eq!(meta.step, 3);
    assert_eq!(back.config.buffer_size, 8, "the variant's config is kept");
    assert_eq!(
        attention_weights(&back),
        g,
        "the checkpoint's weights are loaded"
    );
    assert_eq!(
        checkpoint::config_differences(&cfg, &variant),
        ["buffer_size", "salience"]
    );

    // Other LoRA rank: other shapes, refused with the tensor named.
    let other = HippoFormer::new(
        base(),
        HippoFormerConfig {
            lora_r: 2,
            ..cfg.clone()
        },
        &device(),
    )
    .unwrap();
    let err = checkpoint::load_weights_into(other, dir.path(), &base_ref)
        .expect_err("other shapes")
        .to_string();
    assert!(err.contains("shape") && err.contains("lora"), "{err}");
}
