//! Next tokens stored with the entries, cosine retrieval at the identity, and the next-token
//! distribution of a retrieval.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};
use hippo_memory::{
    MemoryState, NO_NEXT_TOKEN, PriorityBufferConfig, Scoring, next_token_distribution,
    next_token_mass, target_mass,
};

fn device() -> Device {
    Device::flex()
}

fn ints(v: Vec<i64>, shape: [usize; 2]) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v, shape), &device())
}

fn floats(v: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), &device())
}

fn cosine(m: usize, d: usize) -> hippo_memory::PriorityBuffer {
    PriorityBufferConfig::new(d)
        .with_capacity(m)
        .with_max_replay_rounds(3)
        .with_scoring(Scoring::Cosine)
        .with_score_scale(20.0)
        .init(&device())
}

#[test]
fn next_tokens_travel_with_their_states_through_write_reset_split_and_join() {
    let buf = cosine(3, 4);
    let x = Tensor::<3>::random([2, 4, 4], Distribution::Normal(0.0, 1.0), &device());
    // Row 0: tokens 0 and 2 are candidates; row 1: all four, the buffer keeps the top 3.
    let imp = floats(vec![3.0, 0.5, 2.0, 0.5, 2.0, 4.0, 3.0, 5.0], [2, 4]);
    let mask = Tensor::<2, Bool>::full([2, 4], true, &device());
    let next = ints(vec![10, 11, 12, 13, 20, 21, 22, 23], [2, 4]);
    let (state, out) = buf
        .write_with_next(buf.empty_state(2, &device()), x, next, imp, mask)
        .unwrap();
    let got: Vec<i64> = state.next_tokens.to_data().iter::<i64>().collect();
    // Row 0 fills slots 0, 1 in token order; row 1 keeps tokens 1, 2, 3 (priority 4, 3, 5).
    assert_eq!(got, vec![10, 12, NO_NEXT_TOKEN, 21, 22, 23]);
    assert_eq!(
        out.n_accepted.to_data().iter::<i64>().collect::<Vec<_>>(),
        vec![2, 3]
    );
    // A later, stronger token evicts the weakest entry and brings its own next token.
    let x2 = Tensor::<3>::random([2, 1, 4], Distribution::Normal(0.0, 1.0), &device());
    let (state, _) = buf
        .write_with_next(
            state,
            x2,
            ints(vec![30, 40], [2, 1]),
            floats(vec![1.5, 4.5], [2, 1]),
            Tensor::<2, Bool>::full([2, 1], true, &device()),
        )
        .unwrap();
    let got: Vec<i64> = state.next_tokens.to_data().iter::<i64>().collect();
    assert_eq!(got, vec![10, 12, 30, 21, 40, 23]);
    // A plain write stores no next token.
    let (plain, _) = buf
        .write(
            buf.empty_state(1, &device()),
            Tensor::<3>::ones([1, 1, 4], &device()),
            floats(vec![2.0], [1, 1]),
            Tensor::<2, Bool>::full([1, 1], true, &device()),
        )
        .unwrap();
    assert_eq!(
        plain
            .next_tokens
            .to_data()
            .iter::<i64>()
            .collect::<Vec<_>>(),
        vec![NO_NEXT_TOKEN; 3]
    );
    // Split and join keep them; a reset clears its row only.
    let parts = [state.rows(0..1, &device()), state.rows(1..2, &device())];
    let joined = MemoryState::cat(&parts, &device());
    assert_eq!(
        joined
            .next_tokens
            .to_data()
            .iter::<i64>()
            .collect::<Vec<_>>(),
        got
    );
    let reset = joined.reset_row_indices(&[0]).unwrap();
    assert_eq!(
        reset
            .next_tokens
            .to_data()
            .iter::<i64>()
            .collect::<Vec<_>>(),
        vec![NO_NEXT_TOKEN, NO_NEXT_TOKEN, NO_NEXT_TOKEN, 21, 40, 23]
    );
}

#[test]
fn cosine_retrieval_works_at_init_and_scales_with_theta() {
    let (m, d) = (6, 8);
    let buf = cosine(m, d);
    // The query and key projections start at the identity.
    let eye = Tensor::<2>::eye(d, &device()).into_data();
    assert_eq!(buf.query_proj.weight.val().into_data(), eye);
    assert_eq!(buf.key_proj.weight.val().into_data(), eye);
    let x = Tensor::<3>::random([1, m, d], Distribution::Normal(0.0, 1.0), &device());
    let (state, _) = buf
        .write_with_next(
            buf.empty_state(1, &device()),
            x.clone(),
            ints((0..m as i64).collect(), [1, m]),
            floats(vec![2.0; m], [1, m]),
            Tensor::<2, Bool>::full([1, m], true, &device()),
        )
        .unwrap();
    // Query = a scaled copy of stored state 4: cosine 1 with it, so it gets the most weight
    // and the next-token distribution peaks on its token.
    let q = x.clone().slice_dim(1, 4..5).mul_scalar(3.0);
    let r = buf.retrieve(q.clone(), &state).unwrap();
    let w: Vec<f32> = r.weights.clone().into_data().iter::<f32>().collect();
    let best = (0..m).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
    assert_eq!(best, 4, "{w:?}");
    let sim: f32 = r
        .best_similarity
        .clone()
        .into_data()
        .iter::<f32>()
        .next()
        .unwrap();
    assert!((sim - 1.0).abs() < 1e-5, "{sim}");
    let p = next_token_distribution(&r, &state, 10);
    let p: Vec<f32> = p.into_data().iter::<f32>().collect();
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!((0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap(), 4);
    // A smaller θ spreads the weight (θ = 20 already puts nearly all of it on the match).
    let soft = PriorityBufferConfig::new(d)
        .with_capacity(m)
        .with_max_replay_rounds(3)
        .with_scoring(Scoring::Cosine)
        .with_score_scale(1.0)
        .init(&device());
    let w1: Vec<f32> = soft
        .retrieve(q, &state)
        .unwrap()
        .weights
        .into_data()
        .iter::<f32>()
        .collect();
    assert!(w1[4] < w[4] && w[4] > 0.9, "{} vs {}", w1[4], w[4]);
}

#[test]
fn next_token_mass_sums_weights_per_token_and_marks_first_entries() {
    let buf = cosine(4, 4);
    let x = Tensor::<3>::random([1, 4, 4], Distribution::Normal(0.0, 1.0), &device());
    // Tokens 7, 9, 7, 5: entries 0 and 2 share a token.
    let (state, _) = buf
        .write_with_next(
            buf.empty_state(1, &device()),
            x,
            ints(vec![7, 9, 7, 5], [1, 4]),
            floats(vec![2.0; 4], [1, 4]),
            Tensor::<2, Bool>::full([1, 4], true, &device()),
        )
        .unwrap();
    let q = Tensor::<3>::random([1, 3, 4], Distribution::Normal(0.0, 1.0), &device());
    let r = buf.retrieve(q, &state).unwrap();
    let w = r.next_token_weights(&state);
    let (mass, first) = next_token_mass(w.clone(), &state.next_tokens);
    let w: Vec<f32> = w.into_data().iter::<f32>().collect();
    let mass: Vec<f32> = mass.into_data().iter::<f32>().collect();
    for t in 0..3 {
        let row = &w[t * 4..t * 4 + 4];
        let want = [row[0] + row[2], row[1], row[0] + row[2], row[3]];
        for m in 0..4 {
            assert!((mass[t * 4 + m] - want[m]).abs() < 1e-6, "t {t} m {m}");
        }
    }
    assert_eq!(
        first.into_data().iter::<bool>().collect::<Vec<_>>(),
        vec![true, true, false, true]
    );
    // p_mem at chosen targets = the dense distribution gathered there (a token not stored and a
    // negative target get 0).
    let targets = ints(vec![7, 5, 3], [1, 3]);
    let pm: Vec<f32> = target_mass(r.next_token_weights(&state), &state.next_tokens, targets)
        .into_data()
        .iter::<f32>()
        .collect();
    let dense: Vec<f32> = next_token_distribution(&r, &state, 10)
        .into_data()
        .iter::<f32>()
        .collect();
    let want = [dense[7], dense[10 + 5], dense[20 + 3]];
    for (a, b) in pm.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{pm:?} vs {want:?}");
    }
    assert!(pm[0] > 0.0 && pm[2] == 0.0, "{pm:?}");
    let neg: Vec<f32> = target_mass(
        r.next_token_weights(&state),
        &state.next_tokens,
        ints(vec![-1, 9, -1], [1, 3]),
    )
    .into_data()
    .iter::<f32>()
    .collect();
    assert_eq!(neg[0], 0.0);
    assert_eq!(neg[2], 0.0);
    assert!((neg[1] - dense[10 + 9]).abs() < 1e-6);
    // An empty buffer: no weight, a zero distribution.
    let empty = buf.empty_state(1, &device());
    let q = Tensor::<3>::ones([1, 2, 4], &device());
    let r = buf.retrieve(q, &empty).unwrap();
    assert!(!r.any.clone().into_data().iter::<bool>().any(|a| a));
    let p: Vec<f32> = next_token_distribution(&r, &empty, 10)
        .into_data()
        .iter::<f32>()
        .collect();
    assert!(p.iter().all(|x| *x == 0.0));
}
