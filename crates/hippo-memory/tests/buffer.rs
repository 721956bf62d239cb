//! Behavioural tests of the priority buffer against a plain f64 scalar reference, plus causality,
//! row independence, gradients, ageing, statistics, validation and `soft_top_k`.

use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use hippo_memory::{MemoryError, MemoryState, PriorityBuffer, PriorityBufferConfig, soft_top_k};

fn device() -> Device {
    Device::flex()
}

/// Deterministic uniform numbers in [0, 1) for the reference scenarios.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn host<const D: usize>(x: &Tensor<D>) -> Vec<f64> {
    x.to_data().iter::<f64>().collect()
}

fn host_bool<const D: usize>(x: &Tensor<D, Bool>) -> Vec<bool> {
    x.to_data().iter::<bool>().collect()
}

fn tensor2(values: &[f64], shape: [usize; 2], device: &Device) -> Tensor<2> {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn tensor3(values: &[f64], shape: [usize; 3], device: &Device) -> Tensor<3> {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn mask2(values: &[bool], shape: [usize; 2], device: &Device) -> Tensor<2, Bool> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

// ---------------------------------------------------------------------------------------------
// Scalar reference (plain loops, f64).
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    state: Vec<f64>,
    priority: f64,
    age: f64,
    token: usize,
}

/// One stream's buffer, written token by token with the sequential rule.
#[derive(Clone, Debug)]
struct RefBuffer {
    slots: Vec<Option<Entry>>,
    decay: f64,
    threshold: f64,
}

impl RefBuffer {
    fn new(capacity: usize, decay: f64, threshold: f64) -> Self {
        Self {
            slots: vec![None; capacity],
            decay,
            threshold,
        }
    }

    fn eff(&self, e: &Entry) -> f64 {
        e.priority * self.decay.powf(e.age)
    }

    /// Returns, per token, whether it is stored after the whole segment.
    fn write(&mut self, states: &[Vec<f64>], importance: &[f64], mask: &[bool]) -> Vec<bool> {
        let marker = usize::MAX / 2; // tokens of this segment get ids marker + t
        for t in 0..importance.len() {
            if !mask[t] || importance[t] <= self.threshold {
                continue;
            }
            let entry = Entry {
                state: states[t].clone(),
                priority: importance[t],
                age: 0.0,
                token: marker + t,
            };
            if let Some(slot) = self.slots.iter().position(Option::is_none) {
                self.slots[slot] = Some(entry);
                continue;
            }
            // Lowest effective priority; among ties the later slot is evicted.
            let mut victim = 0;
            let mut lowest = f64::INFINITY;
            for (i, s) in self.slots.iter().enumerate() {
                let e = self.eff(s.as_ref().expect("full"));
                if e <= lowest {
                    lowest = e;
                    victim = i;
                }
            }
            if importance[t] > lowest {
                self.slots[victim] = Some(entry);
            }
        }
        let mut accepted = vec![false; importance.len()];
        for e in self.slots.iter_mut().flatten() {
            if e.token >= marker {
                accepted[e.token - marker] = true;
                e.token = 0;
            }
        }
        accepted
    }

    fn age(&mut self) {
        for e in self.slots.iter_mut().flatten() {
            e.age += 1.0;
        }
    }

    /// Entries sorted by priority (the batched buffer may place them in other slots).
    fn sorted(&self) -> Vec<(f64, f64, Vec<f64>)> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .map(|e| (e.priority, e.age, e.state.clone()))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

/// Occupied slots of row `r` of a batched state, sorted by priority.
fn batched_sorted(state: &MemoryState, r: usize) -> Vec<(f64, f64, Vec<f64>)> {
    let [_, m, d] = state.states.dims();
    let valid = host_bool(&state.valid);
    let pri = host(&state.priorities);
    let ages = host(&state.ages);
    let states = host(&state.states);
    let mut v: Vec<_> = (0..m)
        .filter(|s| valid[r * m + s])
        .map(|s| {
            let i = r * m + s;
            (pri[i], ages[i], states[i * d..(i + 1) * d].to_vec())
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn assert_same_entries(a: &[(f64, f64, Vec<f64>)], b: &[(f64, f64, Vec<f64>)], ctx: &str) {
    assert_eq!(a.len(), b.len(), "{ctx}: entry count {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x.0 - y.0).abs() < 1e-5,
            "{ctx}: priority {} vs {}",
            x.0,
            y.0
        );
        assert_eq!(x.1, y.1, "{ctx}: age");
        for (p, q) in x.2.iter().zip(&y.2) {
            assert!((p - q).abs() < 1e-6, "{ctx}: state");
        }
    }
}

fn small_buffer(capacity: usize, dim: usize, rounds: usize) -> PriorityBuffer {
    PriorityBufferConfig::new(dim)
        .with_capacity(capacity)
        .with_max_replay_rounds(rounds)
        .init(&device())
}

// ---------------------------------------------------------------------------------------------
// Write semantics.
// ---------------------------------------------------------------------------------------------

#[test]
fn write_matches_scalar_reference_over_many_segments() {
    let device = device();
    let (b, t, m, d) = (3, 5, 4, 3);
    let buffer = small_buffer(m, d, 1);
    let mut state = buffer.empty_state(b, &device);
    let mut refs = vec![RefBuffer::new(m, 0.9, 1.0); b];
    let mut rng = Lcg(7);
    let mut total_accepted = 0u64;
    for segment in 0..8 {
        let importance: Vec<f64> = (0..b * t).map(|_| 5.0 * rng.next()).collect();
        let states: Vec<f64> = (0..b * t * d).map(|_| rng.next() - 0.5).collect();
        let mask: Vec<bool> = (0..b * t).map(|_| rng.next() > 0.2).collect();
        let (next, outcome) = buffer
            .write(
                state,
                tensor3(&states, [b, t, d], &device),
                tensor2(&importance, [b, t], &device),
                mask2(&mask, [b, t], &device),
            )
            .expect("write");
        let accepted = host_bool(&outcome.accepted);
        for (r, reference) in refs.iter_mut().enumerate() {
            let rows: Vec<Vec<f64>> = (0..t)
                .map(|i| states[(r * t + i) * d..(r * t + i + 1) * d].to_vec())
                .collect();
            let expected = reference.write(
                &rows,
                &importance[r * t..(r + 1) * t],
                &mask[r * t..(r + 1) * t],
            );
            assert_eq!(
                &accepted[r * t..(r + 1) * t],
                &expected[..],
                "segment {segment} row {r}"
            );
            total_accepted += expected.iter().filter(|a| **a).count() as u64;
            assert_same_entries(
                &batched_sorted(&next, r),
                &reference.sorted(),
                &format!("segment {segment} row {r}"),
            );
        }
        let evicted = host_bool(&outcome.evicted).iter().filter(|e| **e).count();
        let filled = host_bool(&outcome.filled).iter().filter(|e| **e).count();
        let n_acc: i64 = outcome.n_accepted.to_data().iter::<i64>().sum();
        assert!(evicted <= filled && filled as i64 == n_acc);
        state = buffer.age(next);
        refs.iter_mut().for_each(RefBuffer::age);
    }
    assert_eq!(buffer.stats(&state).accepted_writes, total_accepted);
}

/// Writes in which every token of every row is accepted (the buffer is filling): each token goes
/// to its row's next empty slot, in token order, exactly as the sequential rule places it, also
/// when the rows' empty slots sit at different positions.
#[test]
fn writes_accepting_every_token_fill_empty_slots_in_token_order() {
    let device = device();
    // Row 1 receives 3 + 3 + 3 tokens: exactly its capacity.
    let (b, t, m, d) = (2, 3, 9, 2);
    let buffer = small_buffer(m, d, 1);
    let mut state = buffer.empty_state(b, &device);
    let mut refs = vec![RefBuffer::new(m, 0.9, 1.0); b];
    let mut rng = Lcg(11);
    for segment in 0..3 {
        let importance: Vec<f64> = (0..b * t).map(|_| 1.5 + 3.0 * rng.next()).collect();
        let states: Vec<f64> = (0..b * t * d).map(|_| rng.next() - 0.5).collect();
        let mask = vec![true; b * t];
        let (next, outcome) = buffer
            .write(
                state,
                tensor3(&states, [b, t, d], &device),
                tensor2(&importance, [b, t], &device),
                mask2(&mask, [b, t], &device),
            )
            .expect("write");
        assert!(
            host_bool(&outcome.accepted).iter().all(|a| *a),
            "segment {segment}"
        );
        let valid = host_bool(&next.valid);
        let pri = host(&next.priorities);
        let stored = host(&next.states);
        for (r, reference) in refs.iter_mut().enumerate() {
            let rows: Vec<Vec<f64>> = (0..t)
                .map(|i| states[(r * t + i) * d..(r * t + i + 1) * d].to_vec())
                .collect();
            let accepted = reference.write(
                &rows,
                &importance[r * t..(r + 1) * t],
                &mask[r * t..(r + 1) * t],
            );
            assert!(accepted.iter().all(|a| *a), "segment {segment} row {r}");
            // Slot by slot, not only as a set.
            for (slot, entry) in reference.slots.iter().enumerate() {
                let i = r * m + slot;
                assert_eq!(
                    valid[i],
                    entry.is_some(),
                    "segment {segment} row {r} slot {slot}"
                );
                if let Some(e) = entry {
                    assert!(
                        (pri[i] - e.priority).abs() < 1e-5,
                        "segment {segment} row {r}"
                    );
                    for (p, q) in stored[i * d..(i + 1) * d].iter().zip(&e.state) {
                        assert!(
                            (p - q).abs() < 1e-6,
                            "segment {segment} row {r} slot {slot}"
                        );
                    }
                }
            }
        }
        state = buffer.age(next);
        refs.iter_mut().for_each(RefBuffer::age);
        if segment == 0 {
            // Empty row 0 only: the rows' empty slots now start at different positions.
            state = state.reset_row_indices(&[0]).expect("reset");
            refs[0] = RefBuffer::new(m, 0.9, 1.0);
        }
    }
}

#[test]
fn eviction_order_decay_and_rejection_by_hand() {
    let device = device();
    let buffer = small_buffer(2, 1, 1);
    let state = buffer.empty_state(1, &device);
    let write = |state, imp: &[f64], mask: &[bool]| {
        let t = imp.len();
        let xs: Vec<f64> = (0..t).map(|i| i as f64 + 10.0 * imp[i]).collect();
        buffer
            .write(
                state,
                tensor3(&xs, [1, t, 1], &device),
                tensor2(imp, [1, t], &device),
                mask2(mask, [1, t], &device),
            )
            .expect("write")
    };
    // Below-threshold (0.5, 1.0) and padded (4.0) tokens are never written; empty slots fill.
    let (state, out) = write(
        state,
        &[0.5, 3.0, 1.0, 4.0, 2.0],
        &[true, true, true, false, true],
    );
    assert_eq!(
        host_bool(&out.accepted),
        vec![false, true, false, false, true]
    );
    let mut entries: Vec<f64> = host(&state.priorities);
    entries.sort_by(f64::total_cmp);
    assert_eq!(entries, vec![2.0, 3.0]);
    // Two segments later: eff = 3·0.81 = 2.43 and 2·0.81 = 1.62.
    let state = buffer.age(buffer.age(state));
    let stats = buffer.stats(&state);
    assert!((stats.min_effective_priority - 1.62).abs() < 1e-5);
    assert!((stats.max_effective_priority - 2.43).abs() < 1e-5);
    // 1.6 < 1.62 is rejected; 1.7 evicts the 1.62 entry, then 2.0 evicts 1.7 (same write).
    let (state, out) = write(state, &[1.6, 1.7, 2.0], &[true, true, true]);
    assert_eq!(host_bool(&out.accepted), vec![false, false, true]);
    assert_eq!(host_bool(&out.evicted).iter().filter(|e| **e).count(), 1);
    let mut entries: Vec<(f64, f64)> = host(&state.priorities)
        .into_iter()
        .zip(host(&state.ages))
        .collect();
    entries.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(entries, vec![(2.0, 0.0), (3.0, 2.0)]);
    // The stored state is the raw input of token 2 (10·2.0 + 2).
    let xs = host(&state.states);
    assert!(xs.contains(&22.0) && xs.contains(&31.0), "{xs:?}");
    assert_eq!(buffer.stats(&state).accepted_writes, 3);
}

#[test]
fn padding_is_never_written() {
    let device = device();
    let buffer = small_buffer(8, 4, 1);
    let state = buffer.empty_state(2, &device);
    let states = Tensor::<3>::random([2, 6, 4], Distribution::Default, &device);
    let importance = Tensor::<2>::full([2, 6], 4.0, &device);
    let mask = Tensor::<2, Bool>::full([2, 6], false, &device);
    let (state, out) = buffer
        .write(state, states, importance, mask)
        .expect("write");
    assert!(host_bool(&out.accepted).iter().all(|a| !a));
    assert_eq!(buffer.stats(&state).entries, 0);
}

// ---------------------------------------------------------------------------------------------
// Replay semantics.
// ---------------------------------------------------------------------------------------------

/// `y = x·W + b` for a Burn `Linear` (weight `[d_in, d_out]`), on the host.
fn linear_ref(layer: &burn::nn::Linear, x: &[f64], d: usize) -> Vec<f64> {
    let w = host(&layer.weight.val());
    let bias = layer.bias.as_ref().map(|b| host(&b.val()));
    let rows = x.len() / d;
    let mut y = vec![0.0; rows * d];
    for r in 0..rows {
        for j in 0..d {
            let mut acc = bias.as_ref().map_or(0.0, |b| b[j]);
            for i in 0..d {
                acc += x[r * d + i] * w[i * d + j];
            }
            y[r * d + j] = acc;
        }
    }
    y
}

/// Reference replay for one row; returns the output and how many (position, entry) pairs were
/// eligible in round 0 but excluded in a later round because their working age grew.
fn replay_ref(
    buffer: &PriorityBuffer,
    queries: &[f64],
    state: &MemoryState,
    row: usize,
) -> (Vec<f64>, usize) {
    let [_, m, d] = state.states.dims();
    let t = queries.len() / d;
    let (decay, theta, tau) = (
        buffer.decay_rate,
        buffer.priority_threshold,
        buffer.temperature,
    );
    let valid = host_bool(&state.valid)[row * m..(row + 1) * m].to_vec();
    let pri = host(&state.priorities)[row * m..(row + 1) * m].to_vec();
    let ages = host(&state.ages)[row * m..(row + 1) * m].to_vec();
    let xs = host(&state.states)[row * m * d..(row + 1) * m * d].to_vec();
    let q = linear_ref(&buffer.query_proj, queries, d);
    let k = linear_ref(&buffer.key_proj, &xs, d);
    let v = linear_ref(&buffer.value_proj, &xs, d);
    let rounds = buffer.max_replay_rounds;
    let norm: f64 = (0..rounds).map(|r| decay.powi(r as i32)).sum();
    let mut out = vec![0.0; t * d];
    let mut late_exclusions = 0;
    for p in 0..t {
        let mut working = vec![0.0; m];
        let mut mixed = vec![0.0; m];
        let mut eligible0 = vec![false; m];
        for r in 0..rounds {
            let mut logits = vec![f64::NEG_INFINITY; m];
            for s in 0..m {
                let eff = pri[s] * decay.powf(ages[s] + working[s]);
                if !valid[s] || eff <= theta {
                    if r > 0 && eligible0[s] {
                        late_exclusions += 1;
                    }
                    continue;
                }
                if r == 0 {
                    eligible0[s] = true;
                }
                let dot: f64 = (0..d).map(|j| q[p * d + j] * k[s * d + j]).sum();
                logits[s] = (dot / (d as f64).sqrt() + eff.ln()) / tau;
            }
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue; // every entry excluded: this round contributes zeros
            }
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            for s in 0..m {
                let a = (logits[s] - max).exp() / z;
                mixed[s] += decay.powi(r as i32) / norm * a;
                working[s] += a;
            }
        }
        let mut read = vec![0.0; d];
        for s in 0..m {
            for j in 0..d {
                read[j] += mixed[s] * v[s * d + j];
            }
        }
        let o = linear_ref(&buffer.consolidation_proj, &read, d);
        out[p * d..(p + 1) * d].copy_from_slice(&o);
    }
    (out, late_exclusions)
}

/// A state of `b` rows of 6 entries: three written one segment ago (effective priorities 2.0,
/// 3.2, 1.28 at decay 0.8) and three just above the threshold θ = 1 (1.02, 1.05, 1.3), which a
/// little working age pushes below it.
fn filled_state(buffer: &PriorityBuffer, b: usize, device: &Device) -> MemoryState {
    let d = buffer.dim;
    let mut rng = Lcg(11);
    let t = 4;
    let mut state = buffer.empty_state(b, device);
    for segment in [[2.5, 4.0, 1.6, 0.5], [1.02, 1.05, 1.3, 0.7]] {
        let importance: Vec<f64> = (0..b * t)
            .map(|i| segment[i % t] + 0.001 * (i / t) as f64)
            .collect();
        let states: Vec<f64> = (0..b * t * d).map(|_| 2.0 * rng.next() - 1.0).collect();
        let mask = vec![true; b * t];
        let (next, _) = buffer
            .write(
                state,
                tensor3(&states, [b, t, d], device),
                tensor2(&importance, [b, t], device),
                mask2(&mask, [b, t], device),
            )
            .expect("write");
        state = if segment[0] > 2.0 {
            buffer.age(next)
        } else {
            next
        };
    }
    state
}

/// Replaces the (randomly initialised) projections with fixed weights drawn from `Lcg(seed)`, so
/// a scenario does not depend on Burn's process-wide RNG (shared by tests running in parallel).
fn fixed_projections(mut buffer: PriorityBuffer, seed: u64, device: &Device) -> PriorityBuffer {
    let mut rng = Lcg(seed);
    let mut fixed = |layer: &mut burn::nn::Linear| {
        let [i, o] = layer.weight.val().dims();
        let w: Vec<f32> = (0..i * o)
            .map(|_| (2.0 * rng.next() - 1.0) as f32)
            .collect();
        layer.weight =
            burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(w, [i, o]), device));
        if let Some(b) = &layer.bias {
            let n = b.val().dims()[0];
            let v: Vec<f32> = (0..n).map(|_| (0.2 * rng.next() - 0.1) as f32).collect();
            layer.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [n]),
                device,
            )));
        }
    };
    fixed(&mut buffer.key_proj);
    fixed(&mut buffer.value_proj);
    fixed(&mut buffer.query_proj);
    fixed(&mut buffer.consolidation_proj);
    buffer
}

#[test]
fn replay_matches_scalar_reference_over_two_and_three_rounds() {
    let device = device();
    let (b, t, m, d) = (2, 5, 6, 4);
    for rounds in [1, 2, 3] {
        let buffer = PriorityBufferConfig::new(d)
            .with_capacity(m)
            .with_max_replay_rounds(rounds)
            .with_decay_rate(0.8)
            .with_temperature(0.5)
            .init(&device);
        let buffer = fixed_projections(buffer, 17, &device);
        let state = filled_state(&buffer, b, &device);
        let mut rng = Lcg(3 + rounds as u64);
        let queries: Vec<f64> = (0..b * t * d).map(|_| 6.0 * rng.next() - 3.0).collect();
        let out = buffer
            .replay(tensor3(&queries, [b, t, d], &device), &state)
            .expect("replay");
        let got = host(&out);
        let mut late = 0;
        for r in 0..b {
            let (expected, l) =
                replay_ref(&buffer, &queries[r * t * d..(r + 1) * t * d], &state, r);
            late += l;
            for (i, e) in expected.iter().enumerate() {
                let g = got[r * t * d + i];
                assert!(
                    (g - e).abs() < 1e-4 * (1.0 + e.abs()),
                    "R={rounds} row {r} [{i}]: {g} vs {e}"
                );
            }
        }
        if rounds > 1 {
            assert!(
                late > 0,
                "scenario should exclude entries whose working age grew"
            );
        }
    }
}

#[test]
fn empty_buffer_replays_zeros() {
    let device = device();
    let buffer = small_buffer(16, 8, 3);
    let state = buffer.empty_state(2, &device);
    let out = buffer
        .replay(
            Tensor::random([2, 5, 8], Distribution::Default, &device),
            &state,
        )
        .expect("replay");
    assert!(host(&out).iter().all(|x| *x == 0.0));
}

#[test]
fn replay_is_causal_with_padding_and_batch() {
    let device = device();
    let (b, t, d) = (2, 7, 8);
    let buffer = small_buffer(5, d, 4);
    let state = buffer.empty_state(b, &device);
    let xs = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device);
    let imp = Tensor::<2>::random([b, t], Distribution::Uniform(0.5, 5.0), &device);
    let mut flags = vec![true; b * t];
    flags[t - 1] = false;
    flags[t] = false;
    let (state, _) = buffer
        .write(state, xs, imp, mask2(&flags, [b, t], &device))
        .expect("write");
    let queries = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device);
    let base = host(&buffer.replay(queries.clone(), &state).expect("replay"));
    for cut in 0..t - 1 {
        let noise = Tensor::random([b, t - cut - 1, d], Distribution::Normal(0.0, 3.0), &device);
        let changed = queries
            .clone()
            .slice_assign([0..b, cut + 1..t, 0..d], noise);
        let out = host(&buffer.replay(changed, &state).expect("replay"));
        for r in 0..b {
            for p in 0..=cut {
                for j in 0..d {
                    let i = (r * t + p) * d + j;
                    assert_eq!(
                        base[i].to_bits(),
                        out[i].to_bits(),
                        "row {r} pos {p} cut {cut}"
                    );
                }
            }
        }
    }
}

#[test]
fn rows_are_independent_in_write_state_and_replay() {
    let device = device();
    let (b, t, d) = (2, 6, 4);
    let buffer = small_buffer(3, d, 3);
    let xs = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device);
    let imp = Tensor::<2>::random([b, t], Distribution::Uniform(0.0, 5.0), &device);
    let mask = Tensor::<2, Bool>::full([b, t], true, &device);
    let queries = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device);
    let run = |xs: Tensor<3>, imp: Tensor<2>, mask: Tensor<2, Bool>, q: Tensor<3>| {
        let state = buffer.empty_state(b, &device);
        let (state, out) = buffer
            .write(state, xs.clone(), imp.clone(), mask.clone())
            .expect("w");
        let state = buffer.age(state);
        let (state, out2) = buffer
            .write(state, xs.mul_scalar(-1.0), imp.mul_scalar(0.9), mask)
            .expect("w");
        let mem = buffer.replay(q, &state).expect("replay");
        (state, out, out2, mem)
    };
    let (s0, o0, p0, m0) = run(xs.clone(), imp.clone(), mask.clone(), queries.clone());
    let (s1, o1, p1, m1) = run(
        xs.slice_assign(
            [1..2, 0..t, 0..d],
            Tensor::random([1, t, d], Distribution::Normal(0.0, 5.0), &device),
        ),
        imp.slice_assign(
            [1..2, 0..t],
            Tensor::random([1, t], Distribution::Uniform(0.0, 5.0), &device),
        ),
        mask.slice_assign(
            [1..2, 0..2],
            Tensor::<2, Bool>::full([1, 2], false, &device),
        ),
        queries.slice_assign(
            [1..2, 0..t, 0..d],
            Tensor::random([1, t, d], Distribution::Default, &device),
        ),
    );
    let row0 =
        |x: Vec<f64>, per_row: usize| x[..per_row].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let (m, dd) = (buffer.capacity, d);
    assert_eq!(
        row0(host(&s0.states), m * dd),
        row0(host(&s1.states), m * dd)
    );
    assert_eq!(row0(host(&s0.priorities), m), row0(host(&s1.priorities), m));
    assert_eq!(row0(host(&s0.ages), m), row0(host(&s1.ages), m));
    assert_eq!(host_bool(&s0.valid)[..m], host_bool(&s1.valid)[..m]);
    assert_eq!(host_bool(&o0.accepted)[..t], host_bool(&o1.accepted)[..t]);
    assert_eq!(host_bool(&p0.accepted)[..t], host_bool(&p1.accepted)[..t]);
    assert_eq!(row0(host(&m0), t * d), row0(host(&m1), t * d));
    let acc = |s: &MemoryState| s.accepted_writes.to_data().iter::<i64>().next();
    assert_eq!(acc(&s0), acc(&s1));
}

#[test]
fn gradients_reach_all_projections() {
    let device = device().autodiff();
    let (b, t, d) = (2, 5, 8);
    let buffer = PriorityBufferConfig::new(d)
        .with_capacity(4)
        .with_max_replay_rounds(3)
        .init(&device);
    let state = buffer.empty_state(b, &device);
    let xs = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let imp = Tensor::<2>::random([b, t], Distribution::Uniform(1.5, 5.0), &device);
    let mask = Tensor::<2, Bool>::full([b, t], true, &device);
    let (state, _) = buffer.write(state, xs.clone(), imp, mask).expect("write");
    let queries =
        Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let out = buffer.replay(queries.clone(), &state).expect("replay");
    let grads = out.powi_scalar(2).sum().backward();
    for (layer, name) in [
        (&buffer.key_proj, "key_proj"),
        (&buffer.value_proj, "value_proj"),
        (&buffer.query_proj, "query_proj"),
        (&buffer.consolidation_proj, "consolidation_proj"),
    ] {
        let g = layer
            .weight
            .grad(&grads)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(
            g.abs().sum().into_scalar::<f32>() > 0.0,
            "zero gradient for {name}"
        );
    }
    assert!(queries.grad(&grads).is_some(), "queries get a gradient");
    // States are stored detached: the written hidden states get no gradient through memory.
    assert!(
        xs.grad(&grads)
            .is_none_or(|g| g.abs().sum().into_scalar::<f32>() == 0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Ageing, reset, stats, validation.
// ---------------------------------------------------------------------------------------------

#[test]
fn age_advances_occupied_slots_only_and_replay_leaves_state_untouched() {
    let device = device();
    let buffer = small_buffer(4, 2, 2);
    let state = buffer.empty_state(1, &device);
    let (state, _) = buffer
        .write(
            state,
            tensor3(&[1.0, 2.0, 3.0, 4.0], [1, 2, 2], &device),
            tensor2(&[2.0, 3.0], [1, 2], &device),
            mask2(&[true, true], [1, 2], &device),
        )
        .expect("write");
    let before = (
        host(&state.ages),
        host(&state.priorities),
        host(&state.states),
    );
    let _ = buffer
        .replay(
            Tensor::random([1, 3, 2], Distribution::Default, &device),
            &state,
        )
        .expect("replay");
    assert_eq!(
        before,
        (
            host(&state.ages),
            host(&state.priorities),
            host(&state.states)
        )
    );
    let aged = buffer.age(buffer.age(state));
    let valid = host_bool(&aged.valid);
    for (a, v) in host(&aged.ages).iter().zip(valid) {
        assert_eq!(*a, if v { 2.0 } else { 0.0 });
    }
    assert!((buffer.stats(&aged).mean_age - 2.0).abs() < 1e-12);
}

#[test]
fn reset_rows_clears_only_the_selected_streams() {
    let device = device();
    let buffer = small_buffer(4, 2, 1);
    let state = buffer.empty_state(2, &device);
    let (state, _) = buffer
        .write(
            state,
            Tensor::random([2, 3, 2], Distribution::Default, &device),
            Tensor::full([2, 3], 3.0, &device),
            Tensor::<2, Bool>::full([2, 3], true, &device),
        )
        .expect("write");
    let row1_before = host(&state.states)[8..].to_vec();
    let state = state.reset_row_indices(&[0]).expect("reset");
    let valid = host_bool(&state.valid);
    assert!(valid[..4].iter().all(|v| !v));
    assert_eq!(valid[4..].iter().filter(|v| **v).count(), 3);
    assert_eq!(host(&state.states)[8..], row1_before[..]);
    let counts: Vec<i64> = state.accepted_writes.to_data().iter::<i64>().collect();
    assert_eq!(counts, vec![0, 3]);
    assert!(matches!(
        state.reset_row_indices(&[5]),
        Err(MemoryError::Shape { .. })
    ));
}

#[test]
fn rows_and_cat_split_and_rejoin_a_state_exactly() {
    let device = device();
    let buffer = small_buffer(6, 2, 1);
    let state = filled_state(&buffer, 3, &device);
    let first = state.rows(0..1, &device);
    let rest = state.rows(1..3, &device);
    assert_eq!((first.batch_size(), rest.batch_size()), (1, 2));
    // Row 1 of the state is row 0 of `rest`.
    assert_eq!(host(&rest.states)[..12], host(&state.states)[12..24]);
    let joined = MemoryState::cat(&[first, rest], &device);
    assert_eq!(host(&joined.states), host(&state.states));
    assert_eq!(host(&joined.priorities), host(&state.priorities));
    assert_eq!(host(&joined.ages), host(&state.ages));
    assert_eq!(host_bool(&joined.valid), host_bool(&state.valid));
    let counts = |s: &MemoryState| {
        s.accepted_writes
            .to_data()
            .iter::<i64>()
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&joined), counts(&state));
}

#[test]
fn stats_report_entries_utilisation_and_accepted_writes_only() {
    let device = device();
    let buffer = small_buffer(3, 1, 1);
    let state = buffer.empty_state(2, &device);
    let (state, _) = buffer
        .write(
            state,
            tensor3(
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                [2, 4, 1],
                &device,
            ),
            tensor2(&[4.0, 0.2, 3.0, 2.0, 1.5, 1.6, 0.1, 1.0], [2, 4], &device),
            mask2(&[true; 8], [2, 4], &device),
        )
        .expect("write");
    let stats = buffer.stats(&state);
    // Row 0: 4, 3, 2 (0.2 rejected); row 1: 1.5, 1.6 (0.1 and 1.0 are not above θ = 1).
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.slots, 6);
    assert_eq!(stats.accepted_writes, 5);
    assert!((stats.utilisation - 5.0 / 6.0).abs() < 1e-12);
    assert!((stats.max_effective_priority - 4.0).abs() < 1e-6);
    assert!((stats.min_effective_priority - 1.5).abs() < 1e-6);
    assert!((stats.mean_effective_priority - 12.1 / 5.0).abs() < 1e-5);
    // A full row rejecting low newcomers does not count them.
    let (state, out) = buffer
        .write(
            state,
            tensor3(&[0.0; 4], [2, 2, 1], &device),
            tensor2(&[1.8, 1.9, 1.2, 1.1], [2, 2], &device),
            mask2(&[true; 4], [2, 2], &device),
        )
        .expect("write");
    assert_eq!(host_bool(&out.accepted), vec![false, false, true, false]);
    assert_eq!(buffer.stats(&state).accepted_writes, 6);
}

#[test]
fn config_validation_and_shape_errors() {
    let cfg = |f: fn(PriorityBufferConfig) -> PriorityBufferConfig| {
        f(PriorityBufferConfig::new(8)).validate()
    };
    assert_eq!(
        cfg(|c| c.with_decay_rate(1.0)),
        Err(MemoryError::DecayRate(1.0))
    );
    assert_eq!(
        cfg(|c| c.with_decay_rate(0.0)),
        Err(MemoryError::DecayRate(0.0))
    );
    assert_eq!(
        cfg(|c| c.with_decay_rate(-0.5)),
        Err(MemoryError::DecayRate(-0.5))
    );
    assert_eq!(cfg(|c| c.with_capacity(0)), Err(MemoryError::ZeroCapacity));
    assert_eq!(
        cfg(|c| c.with_max_replay_rounds(0)),
        Err(MemoryError::ZeroRounds)
    );
    assert_eq!(
        cfg(|c| c.with_temperature(0.0)),
        Err(MemoryError::Temperature(0.0))
    );
    assert_eq!(
        cfg(|c| c.with_priority_threshold(-1.0)),
        Err(MemoryError::PriorityThreshold(-1.0))
    );
    assert_eq!(
        PriorityBufferConfig::new(0).validate(),
        Err(MemoryError::ZeroDim)
    );
    assert!(
        MemoryError::DecayRate(1.5)
            .to_string()
            .contains("strictly between 0 and 1")
    );
    assert!(cfg(|c| c).is_ok());

    let device = device();
    let buffer = small_buffer(4, 8, 1);
    let state = buffer.empty_state(2, &device);
    let err = buffer
        .write(
            state.clone(),
            Tensor::zeros([2, 3, 7], &device),
            Tensor::zeros([2, 3], &device),
            Tensor::<2, Bool>::full([2, 3], true, &device),
        )
        .err();
    assert!(matches!(err, Some(MemoryError::Shape { .. })));
    let err = buffer
        .replay(Tensor::zeros([3, 2, 8], &device), &state)
        .err();
    assert!(err.is_some_and(|e| e.to_string().contains("replay queries")));
}

#[test]
fn every_replay_knob_changes_the_output() {
    let device = device();
    let base = PriorityBufferConfig::new(4)
        .with_capacity(6)
        .with_max_replay_rounds(3);
    let reference = base.init(&device);
    let state = filled_state(&reference, 1, &device);
    let queries = Tensor::<3>::random([1, 4, 4], Distribution::Normal(0.0, 2.0), &device);
    let run = |cfg: PriorityBufferConfig| {
        let mut other = cfg.init(&device);
        other.key_proj = reference.key_proj.clone();
        other.value_proj = reference.value_proj.clone();
        other.query_proj = reference.query_proj.clone();
        other.consolidation_proj = reference.consolidation_proj.clone();
        host(&other.replay(queries.clone(), &state).expect("replay"))
    };
    let baseline = run(base.clone());
    for changed in [
        base.clone().with_temperature(0.3),
        base.clone().with_decay_rate(0.5),
        base.clone().with_max_replay_rounds(1),
        base.clone().with_priority_threshold(1.2),
    ] {
        assert_ne!(run(changed), baseline);
    }
}

// ---------------------------------------------------------------------------------------------
// soft_top_k.
// ---------------------------------------------------------------------------------------------

#[test]
fn soft_top_k_sums_to_k_and_preserves_order() {
    let device = device();
    let scores = Tensor::<2>::random([3, 17], Distribution::Normal(0.0, 2.0), &device);
    for (k, temp) in [(1, 0.1), (4, 1.0), (16, 0.5)] {
        let w = soft_top_k(scores.clone(), k, temp).expect("soft_top_k");
        let wv = host(&w);
        let sv = host(&scores);
        for r in 0..3 {
            let row = &wv[r * 17..(r + 1) * 17];
            let sum: f64 = row.iter().sum();
            assert!((sum - k as f64).abs() < 1e-3, "k={k}: sum {sum}");
            for i in 0..17 {
                for j in 0..17 {
                    if sv[r * 17 + i] > sv[r * 17 + j] {
                        assert!(row[i] >= row[j], "order");
                    }
                }
            }
        }
    }
    // Low temperature approaches the hard top-k mask.
    let s = tensor2(&[0.1, 3.0, -1.0, 2.0, 0.5], [1, 5], &device);
    let w = host(&soft_top_k(s.clone(), 2, 0.01).expect("soft_top_k"));
    let hard = [0.0, 1.0, 0.0, 1.0, 0.0];
    assert!(
        w.iter().zip(hard).all(|(a, b)| (a - b).abs() < 1e-3),
        "{w:?}"
    );
    assert_eq!(
        host(&soft_top_k(s.clone(), 0, 1.0).expect("k=0")),
        vec![0.0; 5]
    );
    assert_eq!(
        host(&soft_top_k(s.clone(), 5, 1.0).expect("k=n")),
        vec![1.0; 5]
    );
    assert_eq!(
        soft_top_k(s.clone(), 6, 1.0).err(),
        Some(MemoryError::TopKTooLarge { k: 6, n: 5 })
    );
    assert_eq!(
        soft_top_k(s, 1, 0.0).err(),
        Some(MemoryError::Temperature(0.0))
    );
}

#[test]
fn soft_top_k_is_differentiable() {
    // The threshold λ is a constant of the backward pass, so ∂Σ_i c_i w_i / ∂s_i = c_i·w_i(1 − w_i)/τ:
    // one weight's gradient, no cross terms (a gradient through λ would add −Σ_j c_j w_j(1−w_j)/τ
    // times ∂λ/∂s_i to every entry). Fixed scores and signed coefficients, so signs vary.
    let device = device().autodiff();
    let s = [0.3f32, -1.2, 0.9, 0.05, 2.1, -0.4, 1.4, 0.6, -2.0];
    let c = [1.0f32, -2.0, 0.5, 3.0, -1.0, 2.0, -0.5, 1.5, 0.25];
    let tau = 0.5;
    let scores = Tensor::<1>::from_floats(s, &device).require_grad();
    let w = soft_top_k(scores.clone(), 3, tau).expect("soft_top_k");
    let wv = host(&w.clone().detach());
    let coef = Tensor::<1>::from_floats(c, &device);
    let grads = (w * coef).sum().backward();
    let g = host(&scores.grad(&grads).expect("gradient"));
    for i in 0..s.len() {
        let want = f64::from(c[i]) * wv[i] * (1.0 - wv[i]) / tau;
        assert!((g[i] - want).abs() < 1e-5, "entry {i}: {} vs {want}", g[i]);
    }
    assert!(g.iter().any(|x| *x < 0.0) && g.iter().any(|x| *x > 0.0));
}

/// Positions and payloads follow their entries: each write moves every position back by the
/// segment's length, the accepted tokens take `t − T`, an evicted entry's payload is replaced by
/// the newcomer's, reset clears both, and splitting and rejoining keeps them. A state that
/// holds payloads refuses a write without one.
#[test]
fn positions_and_payloads_follow_their_entries_through_writes_and_eviction() {
    let device = device();
    let buffer = small_buffer(3, 1, 1);
    let state = buffer.empty_state(1, &device);
    let next = |t: usize| {
        Tensor::<2, burn::tensor::Int>::full([1, t], hippo_memory::NO_NEXT_TOKEN, &device)
    };
    let write = |state, imp: &[f64], payload: &[f64]| {
        let t = imp.len();
        buffer
            .write_entries(
                state,
                tensor3(&vec![0.0; t], [1, t, 1], &device),
                next(t),
                Some(tensor3(payload, [1, t, 2], &device)),
                tensor2(imp, [1, t], &device),
                mask2(&vec![true; t], [1, t], &device),
            )
            .expect("write")
    };
    // Segment 1 (T = 4): tokens 1 and 3 kept at positions 1 − 4 and 3 − 4.
    let (state, _) = write(
        state,
        &[0.5, 3.0, 0.5, 2.0],
        &[0.0, 0.0, 1.0, 1.5, 2.0, 2.0, 3.0, 3.5],
    );
    let entries = |s: &MemoryState| {
        let pos = host(&s.positions);
        let pay = host(s.payload.as_ref().expect("payload"));
        let valid = host_bool(&s.valid);
        let mut e: Vec<(f64, f64, f64)> = (0..3)
            .filter(|&i| valid[i])
            .map(|i| (pos[i], pay[2 * i], pay[2 * i + 1]))
            .collect();
        e.sort_by(|a, b| a.0.total_cmp(&b.0));
        e
    };
    assert_eq!(entries(&state), vec![(-3.0, 1.0, 1.5), (-1.0, 3.0, 3.5)]);
    // Empty slots hold position 0 and a zero payload.
    let valid = host_bool(&state.valid);
    let empty = valid.iter().position(|v| !v).expect("an empty slot");
    assert_eq!(host(&state.positions)[empty], 0.0);
    // Segment 2 (T = 2): both tokens accepted; the 2.0 entry (eff 1.96 after ageing) is
    // evicted by the 4.0 token, the empty slot takes the 5.0 one.
    let state = buffer.age(state);
    let (state, out) = write(state, &[4.0, 5.0], &[7.0, 7.5, 8.0, 8.5]);
    assert_eq!(host_bool(&out.evicted).iter().filter(|e| **e).count(), 1);
    assert_eq!(
        entries(&state),
        vec![(-5.0, 1.0, 1.5), (-2.0, 7.0, 7.5), (-1.0, 8.0, 8.5)]
    );
    // Split and rejoin, reset.
    let two = MemoryState::cat(&[state.clone(), state.clone()], &device);
    let back = two.rows(1..2, &device);
    assert_eq!(entries(&back), entries(&state));
    let cleared = two.reset_row_indices(&[0]).expect("reset");
    let p = host(cleared.payload.as_ref().expect("payload"));
    assert!(p[..6].iter().all(|x| *x == 0.0), "{p:?}");
    assert!(host(&cleared.positions)[..3].iter().all(|x| *x == 0.0));
    assert_eq!(entries(&cleared.rows(1..2, &device)), entries(&state));
    // A write without a payload into a state that holds them is refused.
    let err = buffer
        .write_with_next(
            state,
            tensor3(&[0.0], [1, 1, 1], &device),
            next(1),
            tensor2(&[3.0], [1, 1], &device),
            mask2(&[true], [1, 1], &device),
        )
        .expect_err("a write without a payload into a state with payloads");
    assert!(matches!(err, MemoryError::Shape { .. }), "{err:?}");
}

/// `protect_recent`: entries that will lie fewer than that many positions before the next
/// segment outrank every older one, whatever the priorities; among each group the priority rule
/// is unchanged. Checked by hand against the same writes without protection.
#[test]
fn protected_recent_entries_outrank_older_ones_by_hand() {
    let device = device();
    let buffer_with = |protect: usize| {
        PriorityBufferConfig::new(1)
            .with_capacity(3)
            .with_max_replay_rounds(1)
            .with_protect_recent(protect)
            .init(&device)
    };
    let run = |buffer: &PriorityBuffer| {
        let write = |state, imp: &[f64]| {
            let t = imp.len();
            // Each token's state is its importance, to tell entries apart.
            buffer
                .write(
                    state,
                    tensor3(imp, [1, t, 1], &device),
                    tensor2(imp, [1, t], &device),
                    mask2(&vec![true; t], [1, t], &device),
                )
                .expect("write")
                .0
        };
        // Segment 1 (T = 2): two strong entries at positions −2 and −1 after the write.
        let state = write(buffer.empty_state(1, &device), &[5.0, 4.0]);
        // Segment 2 (T = 2): two weak tokens, now at −2 and −1; the strong ones move to −4, −3.
        let state = write(buffer.age(state), &[2.0, 1.5]);
        let mut kept: Vec<(f64, f64)> = host(&state.positions)
            .into_iter()
            .zip(host(&state.states))
            .zip(host_bool(&state.valid))
            .filter(|(_, v)| *v)
            .map(|(e, _)| e)
            .collect();
        kept.sort_by(|a, b| a.0.total_cmp(&b.0));
        kept
    };
    // Priorities alone: 5·0.9 and 4·0.9 outrank 2.0; 1.5 is the one left out.
    assert_eq!(
        run(&buffer_with(0)),
        vec![(-4.0, 5.0), (-3.0, 4.0), (-2.0, 2.0)]
    );
    // A query at position 0 reads an entry at p only if 0 − p < W: protecting W = 2 keeps −1
    // (the 1.5 token, the weakest of all), and the two strongest of the rest fill the slots.
    assert_eq!(
        run(&buffer_with(2)),
        vec![(-4.0, 5.0), (-3.0, 4.0), (-1.0, 1.5)]
    );
    // W = 3 protects −2 and −1: both weak tokens stay, the 5.0 entry takes the last slot.
    assert_eq!(
        run(&buffer_with(3)),
        vec![(-4.0, 5.0), (-2.0, 2.0), (-1.0, 1.5)]
    );
    // W = 4 protects −3 too, so the 4.0 entry beats the stronger 5.0 one at −4.
    assert_eq!(
        run(&buffer_with(4)),
        vec![(-3.0, 4.0), (-2.0, 2.0), (-1.0, 1.5)]
    );
    // Protecting everything ranks by priority again, as without protection.
    assert_eq!(run(&buffer_with(10)), run(&buffer_with(0)));
}
