//! The probability-space fusion: what memory stores (the next token of each written position),
//! p_mem is a distribution where memory has eligible entries and zero where it has none, the
//! sparse mixture equals its dense definition and is normalised, the λ gate's gradient at init.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use hippo_memory::{NO_NEXT_TOKEN, next_token_distribution};
use hippo_model::{FusionSpace, HippoFormer, HippoFormerConfig};

mod common;

use common::{base, device, small, stream, tensors, to_vec};

fn model(space: FusionSpace, opening: f32) -> HippoFormer {
    let cfg = small(HippoFormerConfig {
        buffer_size: 32,
        fusion_space: space,
        ..HippoFormerConfig::default()
    });
    let mut m = HippoFormer::new(base(), cfg, &device()).unwrap();
    m.mix.opening = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![opening], [1]),
        &device(),
    ));
    m
}

#[test]
fn commit_stores_the_token_that_followed_each_written_position() {
    let m = model(FusionSpace::Probability, 0.0);
    let rows = stream(2, 10, 3);
    let (ids, valid) = tensors(&rows, 0, 10);
    let state = m.empty_state(2, &device());
    let out = m.forward(ids, valid, &state).unwrap();
    let (state, _) = m.commit(state, &out).unwrap();
    let stored = to_vec(state.states.clone());
    let next: Vec<i64> = state.next_tokens.to_data().iter::<i64>().collect();
    let valid: Vec<bool> = state.valid.to_data().iter::<bool>().collect();
    let hidden = to_vec(out.hidden.clone());
    let d = m.base.config().hidden_size;
    let cap = m.config.buffer_size;
    let mut written = 0;
    for r in 0..2 {
        for slot in 0..cap {
            let i = r * cap + slot;
            if !valid[i] {
                assert_eq!(next[i], NO_NEXT_TOKEN);
                continue;
            }
            // Find the position whose state this is; its next token must be stored with it.
            let row = &stored[i * d..(i + 1) * d];
            let t = (0..10)
                .find(|&t| &hidden[(r * 10 + t) * d..(r * 10 + t + 1) * d] == row)
                .unwrap();
            assert!(
                (1..9).contains(&t),
                "position {t}: BOS and the last position are never written"
            );
            assert_eq!(next[i], i64::from(rows[r][t + 1]));
            written += 1;
        }
    }
    // Positions 1..=8 of both rows (the untrained gate's importance is above the threshold).
    assert_eq!(written, 16);
}

#[test]
fn the_sparse_mixture_is_its_dense_definition_and_normalised() {
    let m = model(FusionSpace::Both, 0.7);
    let rows = stream(2, 30, 5);
    let mut state = m.empty_state(2, &device());
    for seg in 0..3 {
        let (ids, valid) = tensors(&rows, seg * 10, seg * 10 + 10);
        let out = m.forward(ids, valid, &state).unwrap();
        let retrieval = m.memory.retrieve(out.hidden.clone(), &state).unwrap();
        let v = m.base.config().vocab_size;
        let p_mem = next_token_distribution(&retrieval, &state, v);
        let sums = to_vec(p_mem.clone().sum_dim(2));
        let any: Vec<bool> = retrieval.any.clone().into_data().iter::<bool>().collect();
        for (s, a) in sums.iter().zip(&any) {
            let want = if *a { 1.0 } else { 0.0 };
            assert!(
                (s - want).abs() < 1e-5,
                "segment {seg}: Σ p_mem = {s}, any = {a}"
            );
        }
        assert_eq!(any.iter().any(|a| *a), seg > 0, "segment {seg}");
        let lambda = out.mixture.as_ref().unwrap().lambda.clone();
        let lam = to_vec(lambda.clone());
        assert!(lam.iter().all(|l| (0.0..1.0).contains(l)));
        if seg > 0 {
            assert!(lam.iter().any(|l| *l > 0.1), "{lam:?}");
        }
        let [b, t, _] = out.logits().dims();
        let dense = softmax(out.lm_logits.clone(), 2)
            .mul(lambda.clone().neg().add_scalar(1.0).reshape([b, t, 1]))
            .add(p_mem.mul(lambda.reshape([b, t, 1])));
        let got = softmax(out.logits().clone(), 2);
        let diff = to_vec(got.sub(dense.clone()))
            .iter()
            .fold(0.0f32, |a, x| a.max(x.abs()));
        assert!(diff < 1e-5, "segment {seg}: |Δp| = {diff}");
        // The closed-form target log-probabilities are ln of the dense mixture at the targets.
        let targets = ids_next(&rows, seg * 10, seg * 10 + 10);
        let lp = to_vec(HippoFormer::target_log_probs(&out, targets.clone()));
        let want = to_vec(
            dense
                .clone()
                .gather(2, targets.clone().reshape([b, t, 1]))
                .log()
                .reshape([b, t]),
        );
        for (a, w) in lp.iter().zip(&want) {
            assert!((a - w).abs() < 1e-4, "segment {seg}: ln p {a} vs {w}");
        }
        // And the memory-off twin's are those of the LM head alone.
        let off = to_vec(m.memory_off_target_log_probs(&out, targets.clone()));
        let want = to_vec(
            burn::tensor::activation::log_softmax(out.lm_logits.clone(), 2)
                .gather(2, targets.reshape([b, t, 1]))
                .reshape([b, t]),
        );
        for (a, w) in off.iter().zip(&want) {
            assert!(
                (a - w).abs() < 1e-4,
                "segment {seg}: memory off ln p {a} vs {w}"
            );
        }
        state = m.commit(state, &out).unwrap().0;
    }
}

/// The next token of every position of `rows[from..to]` (the last position's is the token
/// after `to`, or 0 past the stream's end).
fn ids_next(rows: &[Vec<u32>], from: usize, to: usize) -> Tensor<2, burn::tensor::Int> {
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| (from..to).map(move |i| r.get(i + 1).copied().unwrap_or(0) as i64))
        .collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), to - from]), &device())
}

#[test]
fn memory_off_logits_reuse_the_base_pass_and_equal_memory_off() {
    for space in [
        FusionSpace::Probability,
        FusionSpace::Hidden,
        FusionSpace::Both,
    ] {
        let mut m = model(space, 0.7);
        m.fusion.alpha = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.9f32], [1]),
            &device(),
        ));
        let off = HippoFormer {
            config: HippoFormerConfig {
                memory: false,
                ..m.config.clone()
            },
            ..m.clone()
        };
        let rows = stream(2, 20, 6);
        let mut state = m.empty_state(2, &device());
        for seg in 0..2 {
            let (ids, valid) = tensors(&rows, seg * 10, seg * 10 + 10);
            let out = m.forward(ids.clone(), valid.clone(), &state).unwrap();
            let twin = to_vec(m.memory_off_logits(&out));
            let want = to_vec(
                off.forward(ids, valid, &off.empty_state(2, &device()))
                    .unwrap()
                    .logits(),
            );
            assert_eq!(twin, want, "{space:?}, segment {seg}");
            if seg > 0 {
                assert_ne!(
                    to_vec(out.logits().clone()),
                    want,
                    "{space:?}: memory changed nothing"
                );
            }
            state = m.commit(state, &out).unwrap().0;
        }
    }
}

#[test]
fn the_closed_mixture_has_a_gradient_on_its_opening() {
    let dev = device().autodiff();
    let cfg = small(HippoFormerConfig {
        buffer_size: 32,
        use_lora: false,
        ..HippoFormerConfig::default()
    });
    let m = HippoFormer::new(base().to_device(&dev), cfg, &dev).unwrap();
    let rows = stream(2, 20, 7);
    let mut state = m.empty_state(2, &dev);
    let (ids, valid) = tensors(&rows, 0, 10);
    let out = m
        .forward(ids.to_device(&dev), valid.to_device(&dev), &state)
        .unwrap();
    state = m.commit(state, &out).unwrap().0;
    let (ids, valid) = tensors(&rows, 10, 20);
    let out = m
        .forward(ids.clone().to_device(&dev), valid.to_device(&dev), &state)
        .unwrap();
    // Closed: exactly the LM head's logits.
    assert_eq!(to_vec(out.logits().clone()), to_vec(out.lm_logits.clone()));
    let targets = Tensor::cat(
        vec![
            ids.clone().slice_dim(1, 1..10),
            Tensor::full([2, 1], -100, &device()),
        ],
        1,
    );
    let terms = m.loss(&out, targets.to_device(&dev));
    let grads = terms.total.backward();
    let g = m.mix.opening.grad(&grads).unwrap();
    let g = g.into_data().iter::<f32>().next().unwrap();
    assert!(g.is_finite() && g != 0.0, "∂loss/∂opening = {g}");
}
