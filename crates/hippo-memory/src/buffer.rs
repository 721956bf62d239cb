//! The priority buffer module: batched write, multi-round replay, ageing and statistics.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorData, activation};
use serde::Serialize;

use crate::config::{MemoryError, Scoring};
use crate::state::{MemoryState, NO_NEXT_TOKEN};

/// Logit given to entries excluded from a replay round before the softmax; their weight is then
/// set to exactly 0 after it (so a fully excluded row gives zeros, not NaN).
const EXCLUDED_LOGIT: f32 = -1.0e30;

/// Priority replay buffer: the projections applied when reading, plus the configuration constants.
///
/// See the crate documentation for the exact write and replay rules.
#[derive(Module, Debug)]
pub struct PriorityBuffer {
    /// Key projection `W_k` (`D → D`), applied to stored states at replay.
    pub key_proj: Linear,
    /// Value projection `W_v` (`D → D`), applied to stored states at replay.
    pub value_proj: Linear,
    /// Query projection `W_q` (`D → D`).
    pub query_proj: Linear,
    /// Consolidation projection `W_c` (`D → D`, no bias) on the replayed memory.
    pub consolidation_proj: Linear,
    /// State width `D`.
    pub dim: usize,
    /// Slots per stream `M`.
    pub capacity: usize,
    /// Decay `d`.
    pub decay_rate: f64,
    /// Replay rounds `R`.
    pub max_replay_rounds: usize,
    /// Threshold `θ` for writing and for replay eligibility.
    pub priority_threshold: f64,
    /// Replay softmax temperature `τ`.
    pub temperature: f64,
    /// How queries are compared with keys.
    #[module(skip)]
    pub scoring: Scoring,
    /// Recent positions protected from eviction (0: none); see
    /// [`PriorityBufferConfig::protect_recent`](crate::PriorityBufferConfig::protect_recent).
    pub protect_recent: usize,
    /// `ln θ`, the learned log score scale (`θ` multiplies the similarity).
    pub log_score_scale: Param<Tensor<1>>,
}

/// What one replay retrieved for every query position, before any value is read.
#[derive(Debug, Clone)]
pub struct Retrieval {
    /// Replay weights `a_{t,m} = Σ_r c_r α^r_{t,m}` `[B, T, M]` (0 for excluded entries; they
    /// sum to at most 1 over `m`, to less when a later round found every entry excluded).
    pub weights: Tensor<3>,
    /// The largest similarity (cosine, or `q·k/√D`) over the entries eligible in round 0,
    /// `[B, T]` (0 where none is eligible).
    pub best_similarity: Tensor<2>,
    /// Whether any entry was eligible for position `t` `[B, T]`.
    pub any: Tensor<2, Bool>,
}

impl Retrieval {
    /// The weights renormalised over the entries that carry a next token, `[B, T, M]`: each row
    /// sums to 1 where [`Retrieval::any`] holds and such an entry got weight, and is 0 elsewhere.
    /// These are the weights of the next-token distribution `p_mem(w) = Σ_m ŵ_{t,m}·1[y_m = w]`.
    pub fn next_token_weights(&self, state: &MemoryState) -> Tensor<3> {
        let [b, _, m] = self.weights.dims();
        let known = state
            .next_tokens
            .clone()
            .greater_equal_elem(0)
            .float()
            .reshape([b, 1, m]);
        let w = self.weights.clone().mul(known);
        let total = w.clone().sum_dim(2); // [B, T, 1]
        let empty = total.clone().lower_equal_elem(0.0);
        w.div(total.mask_fill(empty.clone(), 1.0))
            .mask_fill(empty.expand(self.weights.dims()), 0.0)
    }
}

/// `p_mem` of each entry's own next token, `[B, T, M]`: `Σ_{m'} ŵ_{t,m'}·1[y_{m'} = y_m]`, with
/// `ŵ` = [`Retrieval::next_token_weights`] (0 for entries without a next token) and `y` the
/// state's [`MemoryState::next_tokens`] `[B, M]`, and `[B, M]` marking the first entry (in slot
/// order) of each distinct next token of a row, so that a sum over entries can visit each token
/// once.
pub fn next_token_mass(
    weights: Tensor<3>,
    next_tokens: &Tensor<2, Int>,
) -> (Tensor<3>, Tensor<2, Bool>) {
    let [b, m] = next_tokens.dims();
    let y = next_tokens.clone();
    let known = y.clone().greater_equal_elem(0);
    let same = y
        .clone()
        .reshape([b, m, 1])
        .expand([b, m, m])
        .equal(y.reshape([b, 1, m]).expand([b, m, m]))
        .bool_and(known.clone().reshape([b, m, 1]).expand([b, m, m]))
        .bool_and(known.clone().reshape([b, 1, m]).expand([b, m, m]));
    // mass[t, m] = Σ_{m'} w[t, m'] · same[m', m]   (same is symmetric)
    let mass = weights.matmul(same.clone().float());
    // An earlier entry with the same token: strictly lower triangle of `same` (row m, col m' < m).
    let earlier = same
        .int()
        .mul(
            Tensor::<2, Int>::ones([m, m], &next_tokens.device())
                .tril(-1)
                .reshape([1, m, m]),
        )
        .sum_dim(2)
        .reshape([b, m])
        .greater_elem(0);
    (mass, known.bool_and(earlier.bool_not()))
}

/// `p_mem(y_t)` `[B, T]` at one token per position: `Σ_m ŵ_{t,m}·1[y_m = target_t]`, with `ŵ`
/// `[B, T, M]` = [`Retrieval::next_token_weights`], `next_tokens` `[B, M]` the stored next tokens
/// and `targets` `[B, T]` (a negative target, like an empty slot's [`NO_NEXT_TOKEN`], gets 0).
/// What scoring a mixture needs, without the `[B, T, V]` distribution.
pub fn target_mass(
    weights: Tensor<3>,
    next_tokens: &Tensor<2, Int>,
    targets: Tensor<2, Int>,
) -> Tensor<2> {
    let [b, t, m] = weights.dims();
    let hit = next_tokens
        .clone()
        .reshape([b, 1, m])
        .expand([b, t, m])
        .equal(targets.clone().reshape([b, t, 1]).expand([b, t, m]))
        .bool_and(
            targets
                .greater_equal_elem(0)
                .reshape([b, t, 1])
                .expand([b, t, m]),
        );
    weights.mul(hit.float()).sum_dim(2).reshape([b, t])
}

/// The dense next-token distribution `p_mem` `[B, T, V]` of a retrieval: for every position,
/// the renormalised replay weights ([`Retrieval::next_token_weights`]) summed per stored next
/// token. Rows sum to 1 where an entry with a next token was eligible and are 0 elsewhere.
/// (HippoFormer's mixture works on the sparse form, [`next_token_mass`]; this is the definition,
/// for users and tests.)
pub fn next_token_distribution(
    retrieval: &Retrieval,
    state: &MemoryState,
    vocab: usize,
) -> Tensor<3> {
    let [b, t, m] = retrieval.weights.dims();
    let w = retrieval.next_token_weights(state);
    let idx = state
        .next_tokens
        .clone()
        .clamp_min(0)
        .reshape([b, 1, m])
        .expand([b, t, m]);
    Tensor::<3>::zeros([b, t, vocab], &w.device()).scatter(2, idx, w, IndexingUpdateOp::Add)
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// Tokens stored by this write `[B, T]`.
    pub accepted: Tensor<2, Bool>,
    /// Slots that received a newcomer `[B, M]`.
    pub filled: Tensor<2, Bool>,
    /// Slots whose previous (valid) entry was evicted `[B, M]`.
    pub evicted: Tensor<2, Bool>,
    /// Number of tokens stored per row `[B]`.
    pub n_accepted: Tensor<1, Int>,
}

/// Summary of a buffer state (over all rows; reads the tensors back to the host).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryStats {
    /// Occupied slots over all rows.
    pub entries: usize,
    /// Total slots `B·M`.
    pub slots: usize,
    /// `entries / slots`.
    pub utilisation: f64,
    /// Mean effective priority `P·d^age` over occupied slots (0 if none).
    pub mean_effective_priority: f64,
    /// Minimum effective priority over occupied slots (0 if none).
    pub min_effective_priority: f64,
    /// Maximum effective priority over occupied slots (0 if none).
    pub max_effective_priority: f64,
    /// Mean age over occupied slots (0 if none).
    pub mean_age: f64,
    /// Tokens accepted by writes so far, over all rows (rejected writes are not counted).
    pub accepted_writes: u64,
}

fn shape_err(what: &'static str, expected: &[usize], got: &[usize]) -> MemoryError {
    MemoryError::Shape {
        what,
        expected: expected.to_vec(),
        got: got.to_vec(),
    }
}

impl PriorityBuffer {
    /// An empty state for `batch` streams, on `device`.
    pub fn empty_state(&self, batch: usize, device: &burn::tensor::Device) -> MemoryState {
        MemoryState::with_shape(batch, self.capacity, self.dim, device)
    }

    fn check_state(
        &self,
        state: &MemoryState,
        what: &'static str,
    ) -> Result<[usize; 3], MemoryError> {
        let [b, m, d] = state.states.dims();
        if m != self.capacity || d != self.dim {
            return Err(shape_err(what, &[b, self.capacity, self.dim], &[b, m, d]));
        }
        for (got, name) in [
            (state.priorities.dims(), "priorities"),
            (state.ages.dims(), "ages"),
            (state.valid.dims(), "valid"),
        ] {
            if got != [b, m] {
                tracing::debug!(field = name, "memory state field has the wrong shape");
                return Err(shape_err(what, &[b, m], &got));
            }
        }
        if state.accepted_writes.dims() != [b] {
            return Err(shape_err(what, &[b], &state.accepted_writes.dims()));
        }
        Ok([b, m, d])
    }

    /// Writes the candidate tokens of a segment into each stream's buffer.
    ///
    /// Candidates are tokens with `mask ∧ importance > priority_threshold`; empty slots fill first,
    /// then a newcomer evicts the entry of lowest effective priority `P·d^age` only if its priority
    /// is strictly higher (ties keep the earlier item). States and priorities are stored detached.
    /// Ages are not advanced: call [`age`](Self::age) once per written segment.
    ///
    /// # Shapes
    ///
    /// * `states`: `[B, T, D]`, `importance`: `[B, T]`, `mask`: `[B, T]` (`true` = real token)
    /// * returns the new state and a [`WriteOutcome`] (`accepted: [B, T]`)
    pub fn write(
        &self,
        state: MemoryState,
        states: Tensor<3>,
        importance: Tensor<2>,
        mask: Tensor<2, Bool>,
    ) -> Result<(MemoryState, WriteOutcome), MemoryError> {
        let [b, t] = importance.dims();
        let next = Tensor::<2, Int>::full([b, t], NO_NEXT_TOKEN, &importance.device());
        self.write_with_next(state, states, next, importance, mask)
    }

    /// [`write`](Self::write) that also stores, with each accepted state, the token that followed
    /// it in its document (`next_tokens [B, T]`, [`NO_NEXT_TOKEN`] where unknown). The caller
    /// passes only next tokens it has already read: writing a segment after reading it, the next
    /// token of position `t` is the input at `t + 1` of the same segment.
    pub fn write_with_next(
        &self,
        state: MemoryState,
        states: Tensor<3>,
        next_tokens: Tensor<2, Int>,
        importance: Tensor<2>,
        mask: Tensor<2, Bool>,
    ) -> Result<(MemoryState, WriteOutcome), MemoryError> {
        self.write_entries(state, states, next_tokens, None, importance, mask)
    }

    /// [`write_with_next`](Self::write_with_next) that also stores a `payload` `[B, T, P]` with
    /// each accepted token (e.g. the base model's attention keys and values of the token); a
    /// state that holds payloads needs one at every write. Every entry's
    /// [`positions`](MemoryState::positions) moves `T` back, the accepted tokens taking
    /// `t − T` for position `t`, so positions count from the next segment.
    pub fn write_entries(
        &self,
        state: MemoryState,
        states: Tensor<3>,
        next_tokens: Tensor<2, Int>,
        payload: Option<Tensor<3>>,
        importance: Tensor<2>,
        mask: Tensor<2, Bool>,
    ) -> Result<(MemoryState, WriteOutcome), MemoryError> {
        let [b, m, d] = self.check_state(&state, "PriorityBuffer::write state")?;
        let [bs, t, ds] = states.dims();
        if bs != b || ds != d {
            return Err(shape_err(
                "PriorityBuffer::write states",
                &[b, t, d],
                &[bs, t, ds],
            ));
        }
        if importance.dims() != [b, t] {
            return Err(shape_err(
                "PriorityBuffer::write importance",
                &[b, t],
                &importance.dims(),
            ));
        }
        if mask.dims() != [b, t] {
            return Err(shape_err(
                "PriorityBuffer::write mask",
                &[b, t],
                &mask.dims(),
            ));
        }
        if next_tokens.dims() != [b, t] {
            return Err(shape_err(
                "PriorityBuffer::write next_tokens",
                &[b, t],
                &next_tokens.dims(),
            ));
        }
        let payload = match (payload, &state.payload) {
            (Some(p), held) => {
                let [pb, pt, pw] = p.dims();
                let held_w = held.as_ref().map(|h| h.dims()[2]).unwrap_or(pw);
                if pb != b || pt != t || pw != held_w {
                    return Err(shape_err(
                        "PriorityBuffer::write payload",
                        &[b, t, held_w],
                        &[pb, pt, pw],
                    ));
                }
                Some(p)
            }
            (None, Some(h)) => {
                return Err(shape_err(
                    "PriorityBuffer::write payload (the state holds payloads)",
                    &[b, t, h.dims()[2]],
                    &[],
                ));
            }
            (None, None) => None,
        };
        tracing::trace!(
            batch = b,
            tokens = t,
            capacity = m,
            dim = d,
            "priority buffer write"
        );
        let device = states.device();
        if t == 0 {
            let outcome = WriteOutcome {
                accepted: Tensor::<2, Bool>::full([b, 0], false, &device),
                filled: Tensor::<2, Bool>::full([b, m], false, &device),
                evicted: Tensor::<2, Bool>::full([b, m], false, &device),
                n_accepted: Tensor::zeros([b], &device),
            };
            return Ok((state, outcome));
        }
        let states = states.detach();
        let importance = importance.detach();
        let n = m + t;

        // Pool keys: existing entries' effective priority `P·d^a` (the same f32 values as
        // `MemoryState::effective_priorities`), −∞ for empty slots, then the candidates'
        // importance, −∞ for tokens that are not candidates.
        let eff_old = (state.ages.clone().mul_scalar(self.decay_rate.ln()).exp()
            * state.priorities.clone())
        .mask_fill(state.valid.clone().bool_not(), f32::NEG_INFINITY);
        let candidate = mask.bool_and(importance.clone().greater_elem(self.priority_threshold));
        let cand_key = importance
            .clone()
            .mask_fill(candidate.bool_not(), f32::NEG_INFINITY);
        let pool = Tensor::cat(vec![eff_old, cand_key], 1);
        // Each token's position in the segment, `[B, T]`: where a stored token will sit, and
        // (with protection) whether it is recent.
        let token_pos: Vec<f32> = (0..b).flat_map(|_| (0..t).map(|i| i as f32)).collect();
        let token_pos = Tensor::<2>::from_data(TensorData::new(token_pos, [b, t]), &device);
        // Protection: an entry that will lie fewer than `protect_recent` positions before the
        // next segment (position after the write > −protect_recent, i.e. now > T − protect_recent)
        // keeps its key; every other key k > 0 becomes −1/k < 0, below all protected keys and in
        // the same order among themselves. Keys are positive (importance > θ ≥ 0), and −∞ stays.
        let pool = if self.protect_recent == 0 {
            pool
        } else {
            let edge = t as f32 - self.protect_recent as f32;
            let positions = Tensor::cat(vec![state.positions.clone(), token_pos.clone()], 1);
            let old = positions.lower_equal_elem(edge);
            let finite = pool.clone().is_finite();
            let demoted = pool.clone().clamp_min(f32::MIN_POSITIVE).recip().neg();
            pool.mask_where(old.bool_and(finite), demoted)
        };

        // Keep the M largest finite keys; ties go to the earlier pool position. `kth` is the M-th
        // largest key of each row; every key above it is kept, and the first `need` keys equal to
        // it (none if it is −∞: empty slots and rejected tokens are never kept).
        let kth = pool.clone().sort_descending(1).slice([0..b, m - 1..m]); // [B, 1]
        let kth_finite = kth.clone().is_finite().expand([b, n]);
        let kth = kth.expand([b, n]);
        let above = pool.clone().greater(kth.clone());
        let need = above
            .clone()
            .int()
            .sum_dim(1)
            .neg()
            .add_scalar(m as i64)
            .expand([b, n]);
        let tie = pool.equal(kth).bool_and(kth_finite);
        let tie_rank = tie.clone().int().cumsum(1); // 1-based among ties
        let selected = above.bool_or(tie.bool_and(tie_rank.lower_equal(need)));

        let keep_old = selected.clone().slice([0..b, 0..m]);
        let accepted = selected.slice([0..b, m..n]);
        let freed = keep_old.clone().bool_not();
        let evicted = freed.clone().bool_and(state.valid.clone());

        // The j-th accepted token (token order) goes to the j-th freed slot (slot order).
        let n_accepted = accepted.clone().int().sum_dim(1); // [B, 1]
        let freed_rank = freed.clone().int().cumsum(1); // 1-based among freed slots
        let filled = freed.bool_and(freed_rank.lower_equal(n_accepted.clone().expand([b, m])));
        // Row-major positions of the filled slots and of the accepted tokens. Both lists are
        // grouped by row, ascending within a row, with equal counts per row, so they pair up
        // exactly as the rule above says. Only these rows are moved.
        let slots = filled.clone().reshape([b * m]).argwhere();
        let [moved, _] = slots.dims();
        // Payloads and positions follow the same slots; a first payload starts from zeros.
        let held_payload = payload.as_ref().map(|p| {
            let w = p.dims()[2];
            state
                .payload
                .clone()
                .unwrap_or_else(|| Tensor::zeros([b, m, w], &device))
        });
        let (positions_out, payload_out) = if moved == 0 {
            (state.positions.clone(), held_payload)
        } else {
            let slots = slots.clone().reshape([moved]);
            let all = moved == b * t;
            let tokens = (!all).then(|| {
                accepted
                    .clone()
                    .reshape([b * t])
                    .argwhere()
                    .reshape([moved])
            });
            let pick = |x: Tensor<2>| match &tokens {
                None => x,
                Some(i) => x.select(0, i.clone()),
            };
            let positions = state
                .positions
                .clone()
                .reshape([b * m])
                .select_assign(
                    0,
                    slots.clone(),
                    pick(token_pos.reshape([b * t, 1])).reshape([moved]),
                    IndexingUpdateOp::Assign,
                )
                .reshape([b, m]);
            let payload = held_payload.zip(payload.clone()).map(|(held, new)| {
                let w = new.dims()[2];
                held.reshape([b * m, w])
                    .select_assign(
                        0,
                        slots.clone(),
                        pick(new.detach().reshape([b * t, w])),
                        IndexingUpdateOp::Assign,
                    )
                    .reshape([b, m, w])
            });
            (positions, payload)
        };
        let valid_out = keep_old.clone().bool_or(filled.clone());
        let positions_out = positions_out
            .sub_scalar(t as f32)
            .mask_fill(valid_out.clone().bool_not(), 0.0);
        let (states_out, priorities_out, next_out) = if moved == 0 {
            (state.states, state.priorities, state.next_tokens)
        } else {
            let slots = slots.reshape([moved]);
            let (rows, priority, next) = if moved == b * t {
                // Every token is accepted (e.g. while the buffer fills): the tokens are the rows
                // in order, so no gather is needed.
                (
                    states.reshape([b * t, d]),
                    importance.reshape([b * t]),
                    next_tokens.reshape([b * t]),
                )
            } else {
                let tokens = accepted
                    .clone()
                    .reshape([b * t])
                    .argwhere()
                    .reshape([moved]);
                (
                    states.reshape([b * t, d]).select(0, tokens.clone()),
                    importance.reshape([b * t]).select(0, tokens.clone()),
                    next_tokens.reshape([b * t]).select(0, tokens),
                )
            };
            (
                state
                    .states
                    .reshape([b * m, d])
                    .select_assign(0, slots.clone(), rows, IndexingUpdateOp::Assign)
                    .reshape([b, m, d]),
                state
                    .priorities
                    .reshape([b * m])
                    .select_assign(0, slots.clone(), priority, IndexingUpdateOp::Assign)
                    .reshape([b, m]),
                state
                    .next_tokens
                    .reshape([b * m])
                    .select_assign(0, slots, next, IndexingUpdateOp::Assign)
                    .reshape([b, m]),
            )
        };

        let n_accepted = n_accepted.reshape([b]);
        let new_state = MemoryState {
            states: states_out,
            priorities: priorities_out,
            ages: state.ages.mask_fill(filled.clone(), 0.0),
            valid: valid_out,
            accepted_writes: state.accepted_writes + n_accepted.clone(),
            next_tokens: next_out,
            positions: positions_out,
            payload: payload_out,
        };
        let outcome = WriteOutcome {
            accepted,
            filled,
            evicted,
            n_accepted,
        };
        Ok((new_state, outcome))
    }

    /// The score scale `θ = exp(ln θ)` `[1]`.
    pub fn score_scale(&self) -> Tensor<1> {
        self.log_score_scale.val().exp()
    }

    /// Replays the buffer for every query position: `[B, T, D] → [B, T, D]`.
    ///
    /// Exactly the rule of the crate documentation: `R` rounds of priority-weighted attention
    /// (`logit = (θ·sim(q, k) + ln eff)/τ`, entries with `eff ≤ θ_p` excluded), working ages
    /// growing by the retrieval weights within the call, rounds combined with weights
    /// `d^r / Σ d^r'`, then the value and consolidation projections. The state is not modified.
    /// An empty buffer gives zeros. Equal to [`read`](Self::read) of
    /// [`retrieve`](Self::retrieve) over the stored states.
    ///
    /// # Shapes
    ///
    /// * `queries`: `[B, T, D]`, `state`: `[B, M, D]` → `[B, T, D]`
    pub fn replay(
        &self,
        queries: Tensor<3>,
        state: &MemoryState,
    ) -> Result<Tensor<3>, MemoryError> {
        let retrieval = self.retrieve(queries, state)?;
        Ok(self.read(&retrieval, state.states.clone()))
    }

    /// The value read for a retrieval: `W_c Σ_m a_{t,m}·(W_v v_m)` `[B, T, D]`, for values
    /// `v [B, M, D]` (the stored states, or anything else stored per slot, e.g. the embeddings
    /// of the stored next tokens).
    pub fn read(&self, retrieval: &Retrieval, values: Tensor<3>) -> Tensor<3> {
        let v = self.value_proj.forward(values);
        self.consolidation_proj
            .forward(retrieval.weights.clone().matmul(v))
    }

    /// The replay weights of every query position over the slots (see [`Retrieval`]); the
    /// multi-round rule of the crate documentation without the value read.
    ///
    /// # Shapes
    ///
    /// * `queries`: `[B, T, D]`, `state`: `[B, M, D]` → weights `[B, T, M]`
    pub fn retrieve(
        &self,
        queries: Tensor<3>,
        state: &MemoryState,
    ) -> Result<Retrieval, MemoryError> {
        let [b, m, d] = self.check_state(state, "PriorityBuffer::replay state")?;
        let [bq, t, dq] = queries.dims();
        if bq != b || dq != d {
            return Err(shape_err(
                "PriorityBuffer::replay queries",
                &[b, t, d],
                &[bq, t, dq],
            ));
        }
        tracing::trace!(
            batch = b,
            tokens = t,
            capacity = m,
            dim = d,
            "priority buffer replay"
        );
        let device = queries.device();
        if t == 0 {
            return Ok(Retrieval {
                weights: Tensor::zeros([b, 0, m], &device),
                best_similarity: Tensor::zeros([b, 0], &device),
                any: Tensor::<2, Bool>::full([b, 0], false, &device),
            });
        }
        let inv_temp = 1.0 / self.temperature;
        let ln_decay = self.decay_rate.ln();
        let ln_threshold_scaled = self.priority_threshold.ln() * inv_temp; // −∞ when θ = 0

        let q = self.query_proj.forward(queries);
        let k = self.key_proj.forward(state.states.clone());
        // The similarity of every query with every key, [B, T, M].
        let similarity = match self.scoring {
            Scoring::ScaledDot => q.matmul(k.swap_dims(1, 2)).div_scalar((d as f64).sqrt()),
            Scoring::Cosine => {
                let unit = |x: Tensor<3>| {
                    // Clamp before the root: √ has an infinite slope at 0 (empty slots hold zeros).
                    let n = x.clone().powi_scalar(2).sum_dim(2).clamp_min(1e-12).sqrt();
                    x.div(n)
                };
                unit(q).matmul(unit(k).swap_dims(1, 2))
            }
        };
        let scores = similarity
            .clone()
            .mul(self.score_scale().reshape([1, 1, 1]))
            .mul_scalar(inv_temp);
        // (ln P + a·ln d)/τ, −∞ for empty slots, [B, 1, M].
        let base = (state.priorities.clone().clamp_min(0.0).log()
            + state.ages.clone().mul_scalar(ln_decay))
        .mask_fill(state.valid.clone().bool_not(), f32::NEG_INFINITY)
        .mul_scalar(inv_temp)
        .reshape([b, 1, m]);
        let eligible0 = base
            .clone()
            .greater_elem(ln_threshold_scaled)
            .expand([b, t, m]);
        let best_similarity = similarity
            .mask_fill(eligible0.clone().bool_not(), f32::NEG_INFINITY)
            .max_dim(2)
            .reshape([b, t]);
        let any = eligible0.int().sum_dim(2).reshape([b, t]).greater_elem(0);
        let best_similarity = best_similarity.mask_fill(any.clone().bool_not(), 0.0);

        let rounds = self.max_replay_rounds;
        let norm: f64 = (0..rounds).map(|r| self.decay_rate.powi(r as i32)).sum();
        let mut working: Option<Tensor<3>> = None;
        let mut mixed: Option<Tensor<3>> = None;
        for r in 0..rounds {
            // Scaled log effective priority (ln P + (a + w)·ln d)/τ, [B, T, M].
            let log_eff = match &working {
                None => base.clone().expand([b, t, m]),
                Some(w) => w.clone().mul_scalar(ln_decay * inv_temp) + base.clone(),
            };
            let excluded = log_eff.clone().lower_equal_elem(ln_threshold_scaled);
            let logits = (scores.clone() + log_eff).mask_fill(excluded.clone(), EXCLUDED_LOGIT);
            let weights = activation::softmax(logits, 2).mask_fill(excluded, 0.0);
            let c_r = self.decay_rate.powi(r as i32) / norm;
            let contribution = weights.clone().mul_scalar(c_r);
            mixed = Some(match mixed {
                None => contribution,
                Some(acc) => acc + contribution,
            });
            if r + 1 < rounds {
                working = Some(match working {
                    None => weights,
                    Some(w) => w + weights,
                });
            }
        }
        let weights = match mixed {
            Some(mixed) => mixed,
            None => Tensor::zeros([b, t, m], &device),
        };
        Ok(Retrieval {
            weights,
            best_similarity,
            any,
        })
    }

    /// Advances the age of every occupied slot by one (empty slots stay at 0).
    ///
    /// Call once per written segment, never on a read-only call.
    pub fn age(&self, state: MemoryState) -> MemoryState {
        let empty = state.valid.clone().bool_not();
        MemoryState {
            ages: state.ages.add_scalar(1.0).mask_fill(empty, 0.0),
            ..state
        }
    }

    /// Summary statistics of `state` (reads it back to the host).
    pub fn stats(&self, state: &MemoryState) -> MemoryStats {
        let valid: Vec<bool> = state.valid.to_data().iter::<bool>().collect();
        let eff: Vec<f64> = state
            .effective_priorities(self.decay_rate)
            .to_data()
            .iter::<f64>()
            .collect();
        let ages: Vec<f64> = state.ages.to_data().iter::<f64>().collect();
        let accepted_writes = state
            .accepted_writes
            .to_data()
            .iter::<i64>()
            .map(|x| x.max(0) as u64)
            .sum();
        let live: Vec<(f64, f64)> = valid
            .iter()
            .zip(eff.iter().zip(&ages))
            .filter(|(v, _)| **v)
            .map(|(_, (e, a))| (*e, *a))
            .collect();
        let entries = live.len();
        let slots = valid.len();
        let (mean_eff, min_eff, max_eff, mean_age) = if entries == 0 {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            let n = entries as f64;
            (
                live.iter().map(|(e, _)| e).sum::<f64>() / n,
                live.iter().map(|(e, _)| *e).fold(f64::INFINITY, f64::min),
                live.iter()
                    .map(|(e, _)| *e)
                    .fold(f64::NEG_INFINITY, f64::max),
                live.iter().map(|(_, a)| a).sum::<f64>() / n,
            )
        };
        MemoryStats {
            entries,
            slots,
            utilisation: if slots == 0 {
                0.0
            } else {
                entries as f64 / slots as f64
            },
            mean_effective_priority: mean_eff,
            min_effective_priority: min_eff,
            max_effective_priority: max_eff,
            mean_age,
            accepted_writes,
        }
    }
}
