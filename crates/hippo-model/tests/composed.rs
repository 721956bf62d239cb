//! The composed model on a tiny Gemma 3 (transformers fixture): identity at init for every
//! configuration, the causality audit for every configuration (and its failure on the
//! reference's pooled query), per-stream independence, config validation.
#![allow(missing_docs, clippy::unwrap_used)]

use hippo_model::audit::{audit, open_for_audit};
use hippo_model::{HippoFormer, HippoFormerConfig, QueryMode};

mod common;

use common::{base, configs, device, max_abs_diff, small, stream, tensors, to_vec};

#[test]
fn fresh_modules_give_the_base_logits_exactly_over_a_stream() {
    let base = base();
    let rows = stream(2, 24, 0);
    for (name, cfg) in configs() {
        let model = HippoFormer::new(base.clone(), cfg, &device()).unwrap();
        let mut state = model.empty_state(2, &device());
        for seg in 0..3 {
            let (ids, valid) = tensors(&rows, seg * 8, seg * 8 + 8);
            let want = to_vec(base.forward(ids.clone(), None).logits);
            let (out, next) = model.step(ids, valid, state).unwrap();
            state = next;
            let got = to_vec(out.logits());
            let diff = max_abs_diff(&got, &want);
            assert!(diff <= 1e-6, "{name}, segment {seg}: |Δlogit| = {diff}");
        }
        // Memory was written (except with memory off), so identity is not vacuous.
        let entries = model.memory.stats(&state).entries;
        if model.config.memory {
            assert!(entries > 0, "{name}: nothing was written");
        } else {
            assert_eq!(entries, 0, "{name}: memory off wrote");
        }
    }
}

#[test]
fn causality_audit_passes_for_every_config() {
    common::assert_causal_for_every(configs());
}

#[test]
fn causality_audit_catches_the_pooled_query() {
    let rows = stream(2, 30, 2);
    let (cids, cvalid) = tensors(&rows, 0, 10);
    let cfg = small(HippoFormerConfig {
        query_mode: QueryMode::SequenceMean,
        ..HippoFormerConfig::default()
    });
    assert!(cfg.is_leaky());
    let model = HippoFormer::new(base(), cfg, &device()).unwrap();
    let h = model.base.hidden_states(cids, None);
    let model = open_for_audit(model, (h, cvalid)).unwrap();
    // Cut inside the second segment: its own later tokens leak into the pooled query.
    let r = audit(&model, &rows, 10, 13, &device()).unwrap();
    assert!(
        !r.passed && r.max_abs_diff_past > 0.0,
        "the leak went unnoticed: {r:?}"
    );
}

#[test]
fn streams_are_independent() {
    let cfg = small(HippoFormerConfig::default());
    let model = HippoFormer::new(base(), cfg, &device()).unwrap();
    let (cids, cvalid) = tensors(&stream(2, 10, 3), 0, 10);
    let h = model.base.hidden_states(cids, None);
    let model = open_for_audit(model, (h, cvalid)).unwrap();
    let a = stream(2, 30, 4);
    let mut b = a.clone();
    for x in b[1].iter_mut().skip(1) {
        *x = (*x * 3 + 1) % 250 + 3;
    }
    let run = |rows: &Vec<Vec<u32>>| {
        let mut state = model.empty_state(2, &device());
        let mut row0 = Vec::new();
        for seg in 0..3 {
            let (ids, valid) = tensors(rows, seg * 10, seg * 10 + 10);
            let (out, next) = model.step(ids, valid, state).unwrap();
            state = next;
            let l = to_vec(out.logits());
            row0.extend_from_slice(&l[..l.len() / 2]);
        }
        (row0, to_vec(state.states.clone().slice_dim(0, 0..1)))
    };
    let (la, sa) = run(&a);
    let (lb, sb) = run(&b);
    assert_eq!(la, lb, "row 1 changed row 0's logits");
    assert_eq!(sa, sb, "row 1 changed row 0's memory");
}

#[test]
fn config_files_are_strict() {
    let ok =
        HippoFormerConfig::from_toml_str("buffer_size = 512\ndecay_rate = 0.95\n", "t").unwrap();
    assert_eq!((ok.buffer_size, ok.decay_rate), (512, 0.95));
    let round = HippoFormerConfig::from_toml_str(&ok.to_toml(), "round").unwrap();
    assert_eq!(round, ok);
    for (text, needle) in [
        ("bufer_size = 512", "bufer_size"),
        ("decay_rate = 1.0", "decay_rate"),
        ("buffer_size = 0", "buffer_size"),
        ("importance_range = [3.0, 1.0]", "importance_range"),
        ("lora_dropout = 0.05", "lora_dropout"),
        ("lora_targets = [\"embed_tokens\"]", "embed_tokens"),
        ("query_mode = \"pooled\"", "query_mode"),
        ("priority_threshold = 5.0", "priority_threshold"),
    ] {
        let e = HippoFormerConfig::from_toml_str(text, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "`{text}` → {e}");
    }
    let e = HippoFormer::new(
        base(),
        HippoFormerConfig {
            fusion_n_heads: 7,
            ..small(HippoFormerConfig::default())
        },
        &device(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fusion_n_heads"), "{e}");
}

/// The attention path: after one committed segment, with every layer open (`g = 1`), the base
/// reads the next segment attending to exactly the stored keys and values of the written
/// positions (1..T−1: not BOS, not the last) at their positions before the segment, with score
/// bias `ln 1 = 0`; the hippo_gemma computation of that memory gives the same hidden states.
/// Closed (`g = 0`, the init) it is the base; `global` stores the global layers only.
#[test]
fn the_attention_path_reads_stored_keys_and_values_at_their_positions() {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    use hippo_gemma::LayerMemory;
    use hippo_model::{MemoryAttention, SalienceMode};
    let base = base();
    let t = 8;
    let rows = stream(2, 2 * t, 3);
    for mode in [MemoryAttention::All, MemoryAttention::Global] {
        let cfg = small(HippoFormerConfig {
            memory_attention: mode,
            salience: SalienceMode::Off,
            ..HippoFormerConfig::default()
        });
        let mut model = HippoFormer::new(base.clone(), cfg, &device()).unwrap();
        let layers = hippo_model::model::attention_layers(&model.base, mode);
        let n_layers = model.base.config().num_layers;
        let global = model
            .base
            .config()
            .layer_types
            .iter()
            .filter(|t| **t == hippo_gemma::LayerType::Full)
            .count();
        assert!(
            global > 0 && global < n_layers,
            "the fixture mixes layer types"
        );
        let want = if mode == MemoryAttention::All {
            n_layers
        } else {
            global
        };
        assert_eq!(layers.len(), want);
        let (ids1, valid1) = tensors(&rows, 0, t);
        let (ids2, valid2) = tensors(&rows, t, 2 * t);
        let state = model.empty_state(2, &device());
        let (_, state) = model.step(ids1.clone(), valid1, state).unwrap();
        let kvh = model.base.config().num_kv_heads;
        let hd = model.base.config().head_dim;
        let payload = state.payload.clone().expect("the path stores a payload");
        assert_eq!(payload.dims()[2], layers.len() * 2 * kvh * hd);
        // Closed at init: the base's own states.
        let closed = model.forward(ids2.clone(), valid2.clone(), &state).unwrap();
        let alone = to_vec(base.hidden_states(ids2.clone(), None));
        assert_eq!(to_vec(closed.base_hidden.clone()), alone);

        model.attention_weight = Param::from_tensor(Tensor::ones([n_layers], &device()));
        let open = model.forward(ids2.clone(), valid2, &state).unwrap();
        let (_, read) = base.hidden_states_with_memory(ids1, None, &[]);
        let written = 1..t - 1;
        let n = written.len();
        let positions: Vec<f32> = (0..2)
            .flat_map(|_| written.clone().map(|i| i as f32 - t as f32))
            .collect();
        let memory: Vec<Option<LayerMemory>> = (0..n_layers)
            .map(|l| {
                layers.contains(&l).then(|| LayerMemory {
                    keys: read[l].keys.clone().slice_dim(2, written.clone()),
                    values: read[l].values.clone().slice_dim(2, written.clone()),
                    positions: Tensor::from_data(
                        TensorData::new(positions.clone(), [2, n]),
                        &device(),
                    ),
                    bias: Tensor::zeros([2, n], &device()),
                })
            })
            .collect();
        let (want, _) = base.hidden_states_with_memory(ids2.clone(), None, &memory);
        let want = to_vec(want);
        let got = to_vec(open.base_hidden.clone());
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= 1e-5,
            "{mode:?}: attention path vs hand-built memory: {diff}"
        );
        let moved = max_abs_diff(&got, &alone);
        assert!(
            moved > 1e-3,
            "{mode:?}: the open path changed nothing ({moved})"
        );
        // Memory off is the base without memory's keys and values too (fresh modules: the base).
        assert!(open.attention_read && !closed.attention_read);
        let off = to_vec(model.memory_off_logits(&open));
        let base_logits = to_vec(base.forward(ids2.clone(), None).logits);
        let diff = max_abs_diff(&off, &base_logits);
        assert!(
            diff <= 1e-5,
            "{mode:?}: memory-off logits vs the base: {diff}"
        );
    }
}

/// Streams that hold different numbers of readable entries are read in one batch (the shorter
/// rows padded with unreadable slots) exactly as each is read alone; a stream whose memory was
/// reset reads the base's states. Two written segments put entries both inside and outside the
/// fixture's 4-token sliding window.
#[test]
fn streams_with_different_memories_read_the_attention_path_as_they_would_alone() {
    use hippo_model::{MemoryAttention, SalienceMode};
    let base = base();
    let t = 8;
    let rows = stream(2, 3 * t, 5);
    let cfg = small(HippoFormerConfig {
        memory_attention: MemoryAttention::All,
        salience: SalienceMode::Off,
        ..HippoFormerConfig::default()
    });
    let model = HippoFormer::new(base.clone(), cfg, &device())
        .unwrap()
        .with_attention_weight(1.0);
    let mut state = model.empty_state(2, &device());
    for seg in 0..2 {
        let (ids, valid) = tensors(&rows, seg * t, (seg + 1) * t);
        let (_, next) = model.step(ids, valid, state).unwrap();
        state = next;
    }
    // Stream 1 starts a new document: its memory is empty.
    let state = state.reset_row_indices(&[1]).unwrap();
    let (ids, valid) = tensors(&rows, 2 * t, 3 * t);
    let both = to_vec(
        model
            .forward(ids.clone(), valid.clone(), &state)
            .unwrap()
            .base_hidden,
    );
    let half = both.len() / 2;
    let alone0 = model
        .forward(
            ids.clone().slice_dim(0, 0..1),
            valid.clone().slice_dim(0, 0..1),
            &state.rows(0..1, &device()),
        )
        .unwrap();
    assert!(alone0.attention_read, "stream 0 read its memory");
    let want0 = to_vec(alone0.base_hidden);
    let want1 = to_vec(base.hidden_states(ids.clone().slice_dim(0, 1..2), None));
    let d0 = max_abs_diff(&both[..half], &want0);
    let d1 = max_abs_diff(&both[half..], &want1);
    assert!(d0 <= 1e-5, "stream 0 in the batch vs alone: {d0}");
    assert!(d1 <= 1e-5, "the reset stream vs the base: {d1}");
    assert!(
        max_abs_diff(
            &want0,
            &to_vec(base.hidden_states(ids.slice_dim(0, 0..1), None))
        ) > 1e-3,
        "stream 0's memory changed its states"
    );
}

/// A segment with no committed entries has no payload to read, and a write without a payload
/// into a state that holds them is refused.
#[test]
fn the_attention_path_needs_a_payload_at_every_commit() {
    use hippo_model::MemoryAttention;
    let cfg = small(HippoFormerConfig {
        memory_attention: MemoryAttention::All,
        ..HippoFormerConfig::default()
    });
    let model = HippoFormer::new(base(), cfg, &device()).unwrap();
    let rows = stream(1, 16, 1);
    let (ids, valid) = tensors(&rows, 0, 8);
    let state = model.empty_state(1, &device());
    let mut out = model.forward(ids, valid, &state).unwrap();
    assert!(out.attention_payload.is_some());
    out.attention_payload = None;
    let err = model.commit(state, &out).unwrap_err().to_string();
    assert!(err.contains("keys and values"), "{err}");
}

/// `salience = "surprise"`: each stored entry's priority is `lo + (hi − lo)·(1 − p(x_{t+1}))`,
/// `p` the segment's own softmax at the token the entry stores, computed here by hand from the
/// logits.
#[test]
fn surprise_salience_stores_each_entry_with_its_surprise_by_hand() {
    use burn::tensor::activation::log_softmax;
    use hippo_model::SalienceMode;
    let cfg = HippoFormerConfig {
        salience: SalienceMode::Surprise,
        ..small(HippoFormerConfig::default())
    };
    let [lo, hi] = cfg.importance_range;
    let model = HippoFormer::new(base(), cfg, &device()).unwrap();
    let rows = stream(1, 12, 3);
    let (ids, valid) = tensors(&rows, 0, 12);
    let (out, state) = model
        .step(ids, valid, model.empty_state(1, &device()))
        .unwrap();
    let logp = to_vec(log_softmax(out.logits(), 2));
    let v = logp.len() / 12;
    let pos = to_vec(state.positions.clone());
    let pri = to_vec(state.priorities.clone());
    let held: Vec<bool> = state
        .valid
        .clone()
        .into_data()
        .convert::<bool>()
        .try_into_vec::<bool>()
        .unwrap();
    let mut seen = Vec::new();
    for (slot, &h) in held.iter().enumerate() {
        if !h {
            continue;
        }
        // Positions count back from the next segment: the token at t sits at t − 12.
        let t = (pos[slot] + 12.0).round() as usize;
        let next = rows[0][t + 1] as usize;
        let p = logp[t * v + next].exp() as f64;
        let want = lo + (hi - lo) * (1.0 - p);
        assert!(
            (pri[slot] as f64 - want).abs() < 1e-4,
            "slot {slot} (t = {t}): priority {} vs 1 − p by hand {want}",
            pri[slot]
        );
        seen.push(t);
    }
    seen.sort_unstable();
    // Every position with a next token in the segment, except the BOS input, was written.
    assert_eq!(seen, (1..11).collect::<Vec<_>>());
    let spread = pri
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(p, _)| *p)
        .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p), b.max(p)));
    assert!(
        spread.1 - spread.0 > 1e-3,
        "priorities are all equal: {spread:?}"
    );
}
