//! Behaviour of the base model beyond matching transformers: KV-cache decoding, LoRA, the GGUF
//! loader on a tiny file written here, and clear errors on bad input.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use common::*;
use hippo_gemma::lora::{self, LoraSettings};
use hippo_gemma::model::hf_tensor_specs;
use hippo_gemma::{Gemma, GemmaError, GemmaFamily, SafetensorsWeights, WeightSource, load};

/// Decoding with the cache, first a prefill chunk then one token at a time, gives the logits of
/// the full forward at every position — also past the sliding window (4 here, 24 tokens).
fn check_cache(dir: &str, prefill: usize) {
    let model = tiny(dir);
    let ids = reference_ids(dir);
    let v = model.config().vocab_size;
    let full = logits_of(&model, &ids);
    let mut cache = model.new_cache();
    let mut got = Vec::new();
    let mut pos = 0;
    while pos < ids.len() {
        let step = if pos == 0 { prefill } else { 1 };
        let chunk = ids[pos..(pos + step).min(ids.len())].to_vec();
        let x = model
            .ids_tensor(std::slice::from_ref(&chunk), &device())
            .unwrap();
        got.extend(to_vec(model.forward(x, Some(&mut cache)).logits));
        pos += chunk.len();
    }
    assert_eq!(cache.seq_len(), ids.len());
    assert_eq!(got.len(), ids.len() * v);
    let diff = max_abs_diff(&got, &full);
    assert!(diff <= 1e-4, "{dir}: cached vs full max |Δlogit| = {diff}");
    // Sliding layers keep only their window.
    let window = model.config().sliding_window.unwrap_or(usize::MAX);
    for (i, t) in model.config().layer_types.iter().enumerate() {
        let len = cache.layer(i).len();
        match t {
            hippo_gemma::LayerType::Sliding => assert_eq!(len, window.min(ids.len())),
            hippo_gemma::LayerType::Full => assert_eq!(len, ids.len()),
        }
    }
}

#[test]
fn kv_cache_matches_full_forward_past_the_sliding_window() {
    check_cache("tiny-gemma3", 5);
    check_cache("tiny-gemma2", 3);
    check_cache("tiny-gemma1", 1);
}

#[test]
fn lora_starts_at_identity_trains_only_adapters_and_merges_exactly() {
    let base = tiny("tiny-gemma3");
    let ids = reference_ids("tiny-gemma3");
    let before = logits_of(&base, &ids);
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
    };
    let adapted = lora::apply(base.clone(), &settings).unwrap();
    assert_eq!(
        logits_of(&adapted, &ids),
        before,
        "B = 0 at init: logits unchanged"
    );

    // One SGD step on the autodiff device.
    let ad = device().autodiff();
    let on_ad = load(fixtures().join("tiny-gemma3").to_str().unwrap(), &ad)
        .unwrap()
        .model;
    let model = lora::apply(on_ad, &settings).unwrap();
    let x = model.ids_tensor(std::slice::from_ref(&ids), &ad).unwrap();
    let loss = model.forward(x, None).logits.powi_scalar(2).mean();
    let grads = loss.backward();
    let layer = &model.layers[0].self_attn;
    assert!(
        layer.q_proj.weight.grad(&grads).is_none(),
        "frozen q_proj base got a gradient"
    );
    assert!(
        layer.k_proj.weight.grad(&grads).is_none(),
        "k_proj (not a target) got a gradient"
    );
    assert!(
        model.embed_tokens.grad(&grads).is_none(),
        "the tied embedding got a gradient"
    );
    let adapter = layer
        .q_proj
        .weight
        .adapter()
        .expect("q_proj carries an adapter");
    let gb = adapter.b.grad(&grads).expect("LoRA B receives a gradient");
    assert!(to_vec(gb.abs().sum()).first().copied().unwrap() > 0.0);
    assert!(
        layer.k_proj.weight.adapter().is_none(),
        "k_proj is not a target"
    );
    let grads = GradientsParams::from_grads(grads, &model);
    let mut optim = SgdConfig::new().init();
    let model = optim.step(1.0, model, grads).valid();

    let trained = logits_of(&model, &ids);
    assert!(
        max_abs_diff(&trained, &before) > 1e-4,
        "the step changed nothing"
    );
    let merged = lora::merged(&model);
    assert!(merged.layers[0].self_attn.q_proj.weight.adapter().is_none());
    let diff = max_abs_diff(&logits_of(&merged, &ids), &trained);
    assert!(diff <= 1e-5, "merged vs unmerged: {diff}");
    assert!(
        max_abs_diff(&logits_of(&lora::merged(&model), &ids), &trained) <= 1e-5,
        "merging is repeatable: the input stays unmerged"
    );

    // Adapters alone round-trip through a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("adapters.safetensors");
    lora::save_adapters(&model, &file).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 64 * 1024, "only adapters are saved ({size} bytes)");
    let fresh = lora::apply(base, &settings).unwrap();
    let (restored, n) = lora::load_adapters(fresh, &file).unwrap();
    assert_eq!(
        n,
        2 * 2 * model.config().num_layers,
        "A and B of q and v in every layer"
    );
    assert_eq!(logits_of(&restored, &ids), trained);
}

#[test]
fn lora_settings_are_validated() {
    let bad = LoraSettings {
        rank: 4,
        alpha: 8.0,
        targets: vec!["embed_tokens".into()],
    };
    let e = lora::apply(tiny("tiny-gemma1"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("embed_tokens"), "{e}");
    let zero = LoraSettings {
        rank: 0,
        ..LoraSettings::default()
    };
    assert!(zero.validate().is_err());
}

/// Writes `src`'s tensors as an F32 GGUF in llama.cpp's layout (norms with the +1 folded in).
fn write_gguf(model_dir: &Path, out: &Path) {
    use rlx_gguf::{GgmlType, GgufWriter, MetaValue, quantize::quantize};
    let cfg = hippo_gemma::GemmaConfig::from_hf_file(&model_dir.join("config.json")).unwrap();
    assert_eq!(cfg.family, GemmaFamily::Gemma3);
    let src = SafetensorsWeights::open_dir(model_dir).unwrap();
    let mut w = GgufWriter::new();
    w.set_arch("gemma3");
    let u = |v: usize| MetaValue::U32(v as u32);
    w.set_meta("gemma3.embedding_length", u(cfg.hidden_size));
    w.set_meta("gemma3.block_count", u(cfg.num_layers));
    w.set_meta("gemma3.feed_forward_length", u(cfg.intermediate_size));
    w.set_meta("gemma3.attention.head_count", u(cfg.num_heads));
    w.set_meta("gemma3.attention.head_count_kv", u(cfg.num_kv_heads));
    w.set_meta("gemma3.attention.key_length", u(cfg.head_dim));
    w.set_meta(
        "gemma3.attention.sliding_window",
        u(cfg.sliding_window.unwrap()),
    );
    w.set_meta(
        "gemma3.rope.freq_base",
        MetaValue::F32(cfg.rope_global.theta as f32),
    );
    w.set_meta(
        "gemma3.attention.layer_norm_rms_epsilon",
        MetaValue::F32(cfg.rms_norm_eps as f32),
    );
    for (name, shape) in hf_tensor_specs(&cfg) {
        let t = src.get(&name).unwrap().unwrap();
        let data: Vec<f32> = if shape.len() == 1 {
            t.data.iter().map(|x| x + 1.0).collect()
        } else {
            t.data
        };
        let g = hippo_gemma::weights::gguf_name(&name, &cfg).unwrap();
        let mut ne = shape.clone();
        ne.reverse();
        w.add_tensor_bytes(
            g,
            ne,
            GgmlType::F32,
            quantize(&data, GgmlType::F32).unwrap(),
        )
        .unwrap();
    }
    w.write_to_path(out).unwrap();
}

#[test]
fn gguf_loader_maps_names_shapes_and_norms() {
    // GGUF does not store the layer pattern or the local RoPE base (llama.cpp fixes them at 6
    // and 10⁴), so the reference is the same safetensors weights built with the GGUF-derived
    // config: equal logits prove the name mapping, the shape reversal and the norm offsets.
    let dir = fixtures().join("tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.gguf");
    write_gguf(&dir, &file);
    let from_gguf =
        hippo_gemma::load_from(&hippo_gemma::ModelLocation::Gguf(file.clone()), &device()).unwrap();
    let cfg = from_gguf.config().clone();
    // Same weights via safetensors, built with the GGUF-derived config (pattern 6, θ_local 10⁴).
    let st = SafetensorsWeights::open_dir(&dir).unwrap();
    cfg.validate("test").unwrap();
    let from_st = Gemma::from_weights(&cfg, &st, &device()).unwrap();
    let ids = reference_ids("tiny-gemma3");
    let diff = max_abs_diff(&logits_of(&from_gguf, &ids), &logits_of(&from_st, &ids));
    assert!(diff <= 1e-5, "GGUF vs safetensors: {diff}");
    assert_eq!(from_gguf.config().vocab_size, 256);

    // A truncated GGUF is an error naming the file.
    let bytes = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = hippo_gemma::load(cut.to_str().unwrap(), &device()).unwrap_err();
    assert!(e.to_string().contains("cut.gguf"), "{e}");
    // Garbage is too.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let e = hippo_gemma::load(junk.to_str().unwrap(), &device()).unwrap_err();
    assert!(matches!(e, GemmaError::CorruptWeights { .. }), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites tiny-gemma1's safetensors with `edit` applied to its tensor list.
fn rewrite(dir: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let src = SafetensorsWeights::open_dir(dir).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .names()
        .into_iter()
        .map(|n| {
            let t = src.get(&n).unwrap().unwrap();
            (n, t.shape, t.data)
        })
        .collect();
    drop(src);
    edit(&mut tensors);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, d.iter().flat_map(|x| x.to_le_bytes()).collect(), s))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-gemma1");

    // Truncated safetensors.
    let d = tmp.path().join("truncated");
    copy_dir(&src, &d);
    let f = d.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = load(d.to_str().unwrap(), &device()).unwrap_err();
    assert!(
        matches!(e, GemmaError::CorruptWeights { .. })
            && e.to_string().contains("model.safetensors"),
        "{e}"
    );

    // Missing tensor.
    let d = tmp.path().join("missing");
    copy_dir(&src, &d);
    rewrite(&d, |t| {
        t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight")
    });
    let e = load(d.to_str().unwrap(), &device()).unwrap_err();
    assert!(
        matches!(&e, GemmaError::MissingTensor { name, .. } if name == "model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );

    // Wrong shape.
    let d = tmp.path().join("shape");
    copy_dir(&src, &d);
    rewrite(&d, |t| {
        for (n, s, data) in t.iter_mut() {
            if n == "model.layers.0.self_attn.o_proj.weight" {
                let cols = s[1];
                s[1] = cols - 1;
                data.truncate(s[0] * s[1]);
            }
        }
    });
    let e = load(d.to_str().unwrap(), &device()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, GemmaError::ShapeMismatch { .. })
            && msg.contains("o_proj")
            && msg.contains("expected"),
        "{msg}"
    );

    // Unknown architecture.
    let d = tmp.path().join("arch");
    copy_dir(&src, &d);
    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("\"gemma\"", "\"mistral\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let e = load(d.to_str().unwrap(), &device()).unwrap_err();
    assert!(
        matches!(e, GemmaError::UnknownArchitecture { .. }) && e.to_string().contains("mistral"),
        "{e}"
    );

    // Nothing there at all.
    let e = load("/nonexistent/model", &device()).unwrap_err();
    assert!(e.to_string().contains("cargo xtask assets"), "{e}");
}

#[test]
fn out_of_vocabulary_ids_are_rejected() {
    let model = tiny("tiny-gemma1");
    let e = model.ids_tensor(&[vec![2, 5, 256]], &device()).unwrap_err();
    assert!(
        matches!(
            e,
            GemmaError::TokenOutOfRange {
                id: 256,
                position: 2,
                vocab_size: 256
            }
        ),
        "{e}"
    );
    let e = hippo_gemma::score::score_ids(&model, &[2, 300], 8, 4, &device()).unwrap_err();
    assert!(matches!(e, GemmaError::TokenOutOfRange { .. }), "{e}");
}

#[test]
fn rolling_window_scoring_agrees_with_one_window_on_short_text() {
    let model = tiny("tiny-gemma2");
    let ids = reference_ids("tiny-gemma2");
    let one = hippo_gemma::score::score_ids(&model, &ids, 64, 63, &device()).unwrap();
    let rolled = hippo_gemma::score::score_ids(&model, &ids, 8, 4, &device()).unwrap();
    assert_eq!(rolled.nll.len(), one.nll.len());
    // The first window is identical; later targets see less context, so they differ.
    for i in 0..7 {
        assert!((rolled.nll[i] - one.nll[i]).abs() < 1e-5, "target {i}");
    }
    assert!(
        rolled
            .nll
            .iter()
            .zip(&one.nll)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

#[test]
fn repo_ids_resolve_from_the_hugging_face_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--acme--tiny-gemma");
    let snap = repo.join("snapshots/0123abc");
    copy_dir(&fixtures().join("tiny-gemma1"), &snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abc").unwrap();
    let loc =
        hippo_gemma::load::resolve_in("acme/tiny-gemma", Some(tmp.path().to_path_buf())).unwrap();
    assert_eq!(loc, hippo_gemma::ModelLocation::HfDir(snap.clone()));
    let model = hippo_gemma::load_from(&loc, &device()).unwrap();
    assert_eq!(model.config().family, GemmaFamily::Gemma1);
    let e =
        hippo_gemma::load::resolve_in("acme/other", Some(tmp.path().to_path_buf())).unwrap_err();
    assert!(
        e.to_string().contains(tmp.path().to_str().unwrap()),
        "names where it looked: {e}"
    );
}

/// A memory of the keys and values a first chunk produced, at their positions relative to the
/// second chunk, with bias 0: reading the second chunk with it gives the hidden states of the
/// whole sequence (past the sliding window of 4, which must hide entries four or more back),
/// also when the second chunk is read in two steps with the KV cache. A memory whose every
/// bias is −∞ changes nothing.
#[test]
fn attention_memory_of_earlier_tokens_is_attention_over_the_whole_sequence() {
    use burn::tensor::{Tensor, TensorData};
    use hippo_gemma::LayerMemory;
    for dir in ["tiny-gemma3", "tiny-gemma2", "tiny-gemma1"] {
        let model = tiny(dir);
        let ids = reference_ids(dir);
        let (n, split) = (ids.len(), 10);
        let dev = device();
        let x = |r: std::ops::Range<usize>| {
            model
                .ids_tensor(&[ids[r].to_vec()], &dev)
                .expect("valid ids")
        };
        let full = model.hidden_states(x(0..n), None);
        let d = full.dims()[2];
        let want = to_vec(full.slice_dim(1, split..n));
        let (_, read) = model.hidden_states_with_memory(x(0..split), None, &[]);
        let positions: Vec<f32> = (0..split).map(|i| i as f32 - split as f32).collect();
        let memory = |bias: f32| -> Vec<Option<LayerMemory>> {
            read.iter()
                .map(|kv| {
                    Some(LayerMemory {
                        keys: kv.keys.clone(),
                        values: kv.values.clone(),
                        positions: Tensor::from_data(
                            TensorData::new(positions.clone(), [1, split]),
                            &dev,
                        ),
                        bias: Tensor::full([1, split], bias, &dev),
                    })
                })
                .collect()
        };
        let open = memory(0.0);
        let (got, _) = model.hidden_states_with_memory(x(split..n), None, &open);
        let diff = max_abs_diff(&to_vec(got), &want);
        assert!(diff <= 1e-4, "{dir}: memory read vs whole sequence: {diff}");

        let mut cache = model.new_cache();
        let (a, _) = model.hidden_states_with_memory(x(split..split + 5), Some(&mut cache), &open);
        let (b, _) = model.hidden_states_with_memory(x(split + 5..n), Some(&mut cache), &open);
        let stepped = to_vec(Tensor::cat(vec![a, b], 1));
        assert_eq!(stepped.len(), (n - split) * d);
        let diff = max_abs_diff(&stepped, &want);
        assert!(
            diff <= 1e-4,
            "{dir}: cached memory read vs whole sequence: {diff}"
        );

        let alone = to_vec(model.hidden_states(x(split..n), None));
        let (closed, _) =
            model.hidden_states_with_memory(x(split..n), None, &memory(f32::NEG_INFINITY));
        let diff = max_abs_diff(&to_vec(closed), &alone);
        assert!(
            diff <= 1e-5,
            "{dir}: a memory of −∞ bias changed the states: {diff}"
        );
        // And an open memory does change them (the test above is not vacuous).
        assert!(
            max_abs_diff(&alone, &want) > 1e-3,
            "{dir}: the prefix does not matter"
        );
    }
}
