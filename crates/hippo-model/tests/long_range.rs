//! "Memory works": a synthetic long-range recall task on which a briefly trained HippoFormer beats
//! the base model and the memory-off ablation.
//!
//! # The task
//!
//! Each stream is three segments of `T = 8` tokens, and the model reads one segment at a time,
//! so the base model's context is one segment. Segment 1 states a fact `KEY k VAL v` at a random
//! place among filler tokens; segment 2 is filler; segment 3 is filler ending in `ASK k`, and
//! the target at that last position is `v`. Keys, values and fillers are disjoint parts of the
//! vocabulary, and `k`, `v` are drawn independently per stream, so nothing in segment 3 says
//! anything about `v`: every model without memory can do no better than a uniform guess among
//! the `N_VALUES = 8` values, i.e. NLL ≥ ln 8 ≈ 2.079 and accuracy ≈ 1/8. Only the priority
//! buffer, written with segments 1 and 2 and read in segment 3, can carry `v` across the
//! 12+ tokens between the fact and the question.
//!
//! # The models (same data, same steps, same optimizer)
//!
//! * **base**: the tiny random Gemma as it is (the HippoFormer at init, by the identity rule).
//! * **base, trained**: the whole Gemma fine-tuned on the answer loss: the best memoryless model
//!   this budget gives (it learns the answer is one of the values, nothing more).
//! * **memory off**: the HippoFormer with `memory = false` (frozen base, trained drift and gate).
//! * **HippoFormer**: frozen base, trained salience gate, drift calibrator, memory projections
//!   and output fusion, memory carried per stream across the three segments.
//!
//! # Choices, and why
//!
//! * The base Gemma is `GemmaConfig::tiny` with a 64-token vocabulary and its embedding scaled
//!   by 6 (see [`base`]): `RandomWeights` draws embeddings of norm ≈ 0.33 in a 32-wide model, so
//!   the tied head's logits are almost flat and the final hidden states of a random 2-layer
//!   model say little about which token they sit on, so memory has little to retrieve. Measured
//!   with this test at seed 0, HippoFormer answer NLL / accuracy: embedding ×1: 2.68 / 0.09
//!   (no recall), ×3: 1.86 / 0.41, ×6: 0.27 / 0.93. A trained LM's hidden states do identify
//!   their tokens, so the scaled embedding is the closer stand-in.
//! * The base is frozen in the HippoFormer and the memory-off ablation (the default setting,
//!   without LoRA). Fine-tuning the base on the answer loss alone collapses its final hidden
//!   states onto the value prior at every position, stored ones included, so memory then holds
//!   nothing useful; the "base, trained" model shows what that fine-tuning buys without memory.
//! * `priority_threshold = 0.5 < importance_range.lo = 1`: every real token is written, whatever
//!   the (untrained) gate says, and an entry's effective priority `P·0.9^age ≥ 0.81` stays above
//!   the threshold over the two agings between segment 1 and segment 3.
//! * `buffer_size = 2T` holds both earlier segments. Two replay rounds, dropout 0.
//! * The loss is the LM term of [`HippoFormer::loss`] (the answer position only): the gate's
//!   other terms train nothing the memory reads, because stored priorities are detached.
//! * AdamW, lr 5e-3, no weight decay, ε = 1e-8 as in the trainer (ε = 1e-5 gave the same
//!   result here), 400 steps of 16 fresh streams for every trained model.
//!
//! Seeds: the base weights, module initialisation (`HippoFormer::new` seeds Burn's RNG right
//! before building the modules; this file holds a single test, so no other test shares the
//! process-wide RNG) and the data streams are all fixed. `HIPPO_LONG_RANGE_SEED=<n>` shifts
//! every seed, to check by hand that the margins hold beyond the default seed.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_gemma::{Gemma, GemmaConfig, GemmaFamily};
use hippo_model::{FusionSpace, HippoFormer, HippoFormerConfig, MemoryScoring, MemoryValue};

/// Segment length: the base model's whole context.
const T: usize = 8;
const VOCAB: usize = 64;
const KEY: i64 = 3;
const VAL: i64 = 4;
const ASK: i64 = 5;
const KEYS: i64 = 8;
const N_KEYS: i64 = 8;
const VALUES: i64 = 16;
const N_VALUES: i64 = 8;
/// Fillers are ids `FILLER..VOCAB`.
const FILLER: i64 = 24;
/// Streams per optimizer step.
const ROWS: usize = 16;
/// Optimizer steps of every trained model.
const STEPS: usize = 400;
const LR: f64 = 5e-3;
/// Held-out streams.
const EVAL_ROWS: usize = 256;
const EMBED_SCALE: f64 = 6.0;

/// SplitMix64, for the data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n as u64) as i64
    }
}

/// A batch of streams: the ids of each of the three segments (row-major `[rows, T]`) and each
/// stream's answer.
struct Batch {
    segments: [Vec<i64>; 3],
    answers: Vec<i64>,
    rows: usize,
}

fn batch(rng: &mut Rng, rows: usize) -> Batch {
    let mut segments: [Vec<i64>; 3] = Default::default();
    let mut answers = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut seg: [Vec<i64>; 3] = std::array::from_fn(|_| {
            (0..T)
                .map(|_| FILLER + rng.below(VOCAB as i64 - FILLER))
                .collect()
        });
        let (k, v) = (KEYS + rng.below(N_KEYS), VALUES + rng.below(N_VALUES));
        let at = rng.below((T - 3) as i64) as usize;
        seg[0][at..at + 4].copy_from_slice(&[KEY, k, VAL, v]);
        seg[2][T - 2..].copy_from_slice(&[ASK, k]);
        answers.push(v);
        for (all, s) in segments.iter_mut().zip(seg) {
            all.extend(s);
        }
    }
    Batch {
        segments,
        answers,
        rows,
    }
}

impl Batch {
    fn segment(&self, s: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let shape = [self.rows, T];
        (
            Tensor::from_data(TensorData::new(self.segments[s].clone(), shape), device),
            Tensor::from_data(TensorData::new(vec![true; self.rows * T], shape), device),
        )
    }

    /// Targets of segment 3: the answer at the last position, −100 elsewhere.
    fn targets(&self, device: &Device) -> Tensor<2, Int> {
        let mut t = vec![-100i64; self.rows * T];
        for (r, a) in self.answers.iter().enumerate() {
            t[r * T + T - 1] = *a;
        }
        Tensor::from_data(TensorData::new(t, [self.rows, T]), device)
    }
}

fn seed() -> u64 {
    std::env::var("HIPPO_LONG_RANGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The tiny random Gemma 3 (2 layers, width 32, 64 tokens), embedding scaled (see module docs).
fn base(device: &Device) -> Gemma {
    let cfg = GemmaConfig {
        vocab_size: VOCAB,
        ..GemmaConfig::tiny(GemmaFamily::Gemma3)
    };
    let mut base = Gemma::random(&cfg, 7 + seed(), device).unwrap();
    base.embed_tokens =
        Param::from_tensor(base.embed_tokens.val().mul_scalar(EMBED_SCALE).detach());
    base
}

fn config(memory: bool) -> HippoFormerConfig {
    HippoFormerConfig {
        freeze_base: true,
        use_lora: false,
        salience_dropout: 0.0,
        fusion_dropout: 0.0,
        buffer_size: 2 * T,
        max_replay_rounds: 2,
        priority_threshold: 0.5,
        n_anchors: 16,
        fusion_n_heads: 4,
        memory,
        seed: seed(),
        // The answer is two tokens after the key (`KEY k VAL v`), so a copy of "what followed
        // the similar state" (the probability path: after `k` came `VAL`) cannot answer it; the
        // hidden-space path with learned projections can. This test trains that path, with the
        // reference's memory (configs/reference.toml); `copy_task.rs` tests the probability path.
        memory_value: MemoryValue::Hidden,
        fusion_space: FusionSpace::Hidden,
        memory_scoring: MemoryScoring::ScaledDot,
        memory_score_scale: 1.0,
        decay_rate: 0.9,
        ..HippoFormerConfig::default()
    }
}

/// Reads segments 1 and 2 (committing each), then segment 3; returns its output.
fn read_stream(model: &HippoFormer, b: &Batch, device: &Device) -> hippo_model::SegmentOutput {
    let mut state = model.empty_state(b.rows, device);
    for s in 0..2 {
        let (ids, valid) = b.segment(s, device);
        let out = model.forward(ids, valid, &state).unwrap();
        state = model.commit(state, &out).unwrap().0;
    }
    let (ids, valid) = b.segment(2, device);
    model.forward(ids, valid, &state).unwrap()
}

/// Trains `cfg` over `base` for [`STEPS`] steps of fresh streams; returns the model for
/// evaluation (no autodiff).
fn train(base: Gemma, cfg: HippoFormerConfig, device: &Device) -> HippoFormer {
    let mut model = HippoFormer::new(base, cfg, device).unwrap();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_epsilon(1e-8)
        .init();
    let mut rng = Rng(1000 + seed());
    for step in 0..STEPS {
        let b = batch(&mut rng, ROWS);
        if step == 0 && model.config.drift {
            let (ids, valid) = b.segment(0, device);
            let h = model.base.hidden_states(ids, None).detach();
            model.drift.calibrate(h, valid).unwrap();
        }
        let out = read_stream(&model, &b, device);
        let lm = model.loss(&out, b.targets(device)).lm;
        let grads = GradientsParams::from_grads(lm.backward(), &model);
        model = optim.step(LR, model, grads);
    }
    model.valid()
}

/// NLL and accuracy at the answer position over held-out streams.
#[derive(Debug, Clone, Copy)]
struct Score {
    nll: f64,
    acc: f64,
}

fn score(logits: Tensor<3>, b: &Batch) -> Score {
    let rows = b.rows;
    let last = logits.slice([0..rows, T - 1..T]).reshape([rows, VOCAB]);
    let answers = Tensor::<2, Int>::from_data(
        TensorData::new(b.answers.clone(), [rows, 1]),
        &last.device(),
    );
    let nll = burn::tensor::activation::log_softmax(last.clone(), 1)
        .gather(1, answers)
        .neg()
        .mean()
        .into_scalar::<f32>() as f64;
    let guess: Vec<i64> = last
        .argmax(1)
        .reshape([rows])
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    let hits = guess.iter().zip(&b.answers).filter(|(g, a)| g == a).count();
    Score {
        nll,
        acc: hits as f64 / rows as f64,
    }
}

fn held_out() -> Batch {
    // Training streams come from seed 1000 + s; these from an unrelated seed, so the
    // (key, value, position) combinations are fresh.
    batch(&mut Rng(0x5EED_E7A1 ^ seed()), EVAL_ROWS)
}

fn evaluate(model: &HippoFormer) -> Score {
    let device = Device::flex();
    let b = held_out();
    score(read_stream(model, &b, &device).logits(), &b)
}

#[test]
fn memory_recalls_a_fact_from_two_segments_back() {
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    let eval_batch = held_out();

    let (ids, _) = eval_batch.segment(2, &plain);
    let untrained = score(base(&plain).forward(ids, None).logits, &eval_batch);
    let trained_base = evaluate(&train(
        base(&ad),
        HippoFormerConfig {
            freeze_base: false,
            memory: false,
            drift: false,
            ..config(false)
        },
        &ad,
    ));
    let memory_off = evaluate(&train(base(&ad), config(false), &ad));
    let hippo = evaluate(&train(base(&ad), config(true), &ad));
    eprintln!(
        "answer NLL / accuracy over {EVAL_ROWS} held-out streams (seed {}): base {:.3} / {:.3}, \
         base trained {:.3} / {:.3}, memory off {:.3} / {:.3}, HippoFormer {:.3} / {:.3}",
        seed(),
        untrained.nll,
        untrained.acc,
        trained_base.nll,
        trained_base.acc,
        memory_off.nll,
        memory_off.acc,
        hippo.nll,
        hippo.acc
    );

    // No memoryless model can beat a uniform guess among the values (v is independent of
    // segment 3): NLL ≥ ln 8 in expectation. Allow 0.1 for the sampling noise of 256 streams;
    // anything lower would mean a leak across segments. Accuracy: 1/8 ± 0.02 (binomial sd);
    // 0.25 is 6 sd above chance.
    let floor = (N_VALUES as f64).ln();
    for (name, s) in [
        ("base", untrained),
        ("base trained", trained_base),
        ("memory off", memory_off),
    ] {
        assert!(
            s.nll > floor - 0.1 && s.acc < 0.25,
            "{name} answers better than chance without memory: {s:?}"
        );
    }
    // The HippoFormer must recall. With HIPPO_LONG_RANGE_SEED = 0..5 (base weights, module
    // init and data all change) its NLL was 0.04–0.94 and its accuracy 0.63–1.00, while every
    // memoryless model stayed ≥ 2.11 / ≤ 0.18. The bars: NLL at least 0.8 nats under ln 8 and
    // under every memoryless model (the worst seed cleared this by 0.34), accuracy over 4×
    // chance (worst seed 0.63).
    let best_memoryless = trained_base.nll.min(memory_off.nll).min(untrained.nll);
    assert!(
        hippo.nll < floor - 0.8 && hippo.nll < best_memoryless - 0.8,
        "HippoFormer did not recall: {hippo:?} (best memoryless NLL {best_memoryless:.3})"
    );
    assert!(
        hippo.acc > 0.5,
        "HippoFormer accuracy {:.3} is not well above chance 0.125",
        hippo.acc
    );
}
