//! Replay during sleep: a per-stream priority buffer that keeps the most important hidden states
//! and replays them, strongest first and fading over rounds, as the hippocampus replays tagged
//! experience to the cortex.
//!
//! # State
//!
//! One buffer per stream (batch row), held as plain tensors in a [`MemoryState`] that the caller
//! passes in and gets back; nothing is hidden in the module.
//!
//! * `states [B, M, D]`: raw hidden states, stored detached (no projection applied at write).
//! * `priorities P [B, M]`: the importance a state had when written.
//! * `ages a [B, M]`: number of [`PriorityBuffer::age`] calls since the write.
//! * `valid [B, M]`: occupied slots. `accepted_writes [B]`: running count of accepted tokens.
//! * `next_tokens [B, M]`: the token that followed each stored state in its document (written by
//!   [`PriorityBuffer::write_with_next`]; [`NO_NEXT_TOKEN`] in empty slots and for plain writes).
//!
//! With decay `d ∈ (0, 1)` (`decay_rate`) the **effective priority** of an entry is
//! `eff = P·d^a`.
//!
//! # Write
//!
//! `write(state, x [B, T, D], importance [B, T], mask [B, T])`, per row, without a per-token loop:
//!
//! 1. Candidates are tokens with `mask ∧ importance > θ` (`θ = priority_threshold`); a candidate's
//!    priority is its importance (age 0).
//! 2. The pool is the row's `M` slots (key `eff`, `−∞` if empty) followed by its `T` tokens
//!    (key `importance`, `−∞` if not a candidate). The row keeps the `M` largest finite keys;
//!    ties go to the earlier pool position (existing entries before newcomers, earlier tokens
//!    before later ones). This is exactly what the sequential rule produces — "fill empty slots
//!    first; once full, a newcomer evicts the entry of lowest effective priority only if its own
//!    priority is strictly higher" — because that rule always holds the top-`M` of what it has
//!    seen.
//!    With `protect_recent = W > 0`, the pool is ranked by (protected, key) instead: an entry
//!    or token that will lie fewer than `W` positions before the next segment (position after
//!    the write `> −W`; a sliding-window layer of width `W` can read exactly those) outranks
//!    every other, and the rule above holds within each group.
//! 3. Selected existing entries stay in their slots. The `j`-th selected newcomer (token order)
//!    goes to the `j`-th freed slot (slot order), freed = empty or evicted.
//!
//! Implemented with one sort per row (for the `M`-th largest key), cumulative sums (ties and
//! slot ranks), `argwhere`s (row-major positions of filled slots and accepted tokens, which pair
//! up one to one) and one `select` + `select_assign` that moves only the accepted rows:
//! `O(B·(M+T)·log(M+T) + N·D)` for `N` accepted tokens. When every token is accepted (a filling
//! buffer) the tokens are the rows in order and the `select` is skipped. `argwhere` has a
//! data-dependent shape, so a write synchronises with the device once. The `select_assign`
//! updates the state in place when the caller does not hold another reference to it. The cost
//! is thus the sort plus two copies of the accepted rows (Burn has no single "copy rows `i` of
//! `x` into rows `j` of `y`" operation); `benches/buffer.rs` measures both against the write.
//! A token is *accepted* when it is stored after the write; a newcomer displaced by a later,
//! stronger newcomer of the same write is not accepted.
//!
//! # Replay
//!
//! `replay(q [B, T, D], state) → memory [B, T, D]`, every query position on its own (never pooled),
//! with `R = max_replay_rounds`, `τ = temperature`, `W_q, W_k, W_v, W_c` the query, key, value and
//! consolidation projections (`W_q, W_k, W_v` affine, `W_c` linear):
//!
//! ```text
//! s_{t,m}   = θ · sim(W_q q_t, W_k x_m)              θ = exp(ln θ), learned
//!             sim = cos (Scoring::Cosine: W_q = W_k = I at init) or u·v/√D (Scoring::ScaledDot)
//! w⁰_{t,m}  = 0                                     working age, per row and per query position
//! eff^r     = P_m · d^(a_m + w^r_{t,m})
//! ℓ^r_{t,m} = (s_{t,m} + ln eff^r) / τ              priority term: ln eff (attention ∝ e^{s/τ}·eff^{1/τ})
//! α^r_{t,·} = softmax_m(ℓ^r_{t,·}) over entries with eff^r > θ; excluded entries get exactly 0
//!             (if every entry is excluded, α^r_{t,·} = 0)
//! w^{r+1}   = w^r + α^r                             retrieved entries age by their retrieval strength
//! c_r       = d^r / Σ_{r'<R} d^{r'}                 round weights, normalised to sum to 1
//! a_{t,m}   = Σ_r c_r α^r_{t,m}                     the replay weights (PriorityBuffer::retrieve)
//! memory_t  = W_c Σ_m a_{t,m} · (W_v x_m)             (PriorityBuffer::read over any values)
//! p_mem,t(w) = Σ_m â_{t,m}·1[y_m = w]                 â = a renormalised over entries with a next token
//! ```
//!
//! [`next_token_distribution`] is `p_mem` as a dense `[B, T, V]` tensor (rows sum to 1 where an
//! entry was eligible, 0 elsewhere); [`next_token_mass`] gives `p_mem(y_m)` at each entry and marks
//! the first entry of each distinct token, for a sparse mixture over the vocabulary.
//!
//! `W_c` has no bias, so an empty buffer replays exact zeros. Working ages live only inside one
//! call; `replay` never modifies the state. Since the rounds combine linearly, the value product
//! is taken once on the combined weights (same result as `R` separate products). Under autodiff
//! the backward keeps `O(R)` tensors of shape `[B, T, M]`.
//!
//! # Invariants
//!
//! * Causal: `memory_t` depends only on `q_t` and the state (which holds only past segments).
//! * Row independence: every operation is per row; row `b` never reads or writes row `b' ≠ b`.
//! * Padding (`mask = false`) is never written; an empty buffer replays zeros, never NaN.
//! * [`PriorityBuffer::age`] is called once per written segment, never on read-only calls.
//!
//! # Example
//!
//! Writing to a full buffer, evicting, and replaying it, on random states on the CPU:
//!
//! ```
//! use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
//! use hippo_memory::PriorityBufferConfig;
//!
//! let device = Device::flex();
//! // Width D = 8, M = 4 slots per stream, decay 0.9; importance must exceed 1 to be written.
//! let buffer = PriorityBufferConfig::new(8)
//!     .with_capacity(4)
//!     .with_decay_rate(0.9)
//!     .with_priority_threshold(1.0)
//!     .try_init(&device)?;
//! let state = buffer.empty_state(1, &device); // one stream
//!
//! // A segment of six tokens: four are important enough, and they fill the four slots.
//! let states = Tensor::<3>::random([1, 6, 8], Distribution::Normal(0.0, 1.0), &device);
//! let importance = [0.5f32, 2.0, 3.0, 0.9, 4.0, 1.5];
//! let importance = Tensor::<2>::from_data(TensorData::new(importance.to_vec(), [1, 6]), &device);
//! let mask = Tensor::<2, Bool>::full([1, 6], true, &device);
//! let (state, outcome) = buffer.write(state, states, importance, mask)?;
//! let accepted: Vec<bool> = outcome.accepted.to_data().iter::<bool>().collect();
//! assert_eq!(accepted, [false, true, true, false, true, true]);
//! let state = buffer.age(state); // once per written segment: effective priorities × 0.9
//!
//! // Full: a stronger newcomer evicts the entry of lowest effective priority (1.5 · 0.9, slot 3).
//! let newcomer = Tensor::<3>::random([1, 1, 8], Distribution::Normal(0.0, 1.0), &device);
//! let strong = Tensor::<2>::full([1, 1], 5.0, &device);
//! let real = Tensor::<2, Bool>::full([1, 1], true, &device);
//! let (state, outcome) = buffer.write(state, newcomer, strong, real)?;
//! let evicted: Vec<bool> = outcome.evicted.to_data().iter::<bool>().collect();
//! assert_eq!(evicted, [false, false, false, true]);
//! assert_eq!(buffer.stats(&state).entries, 4);
//!
//! // Replay: one read per query position, [B, T, D] → [B, T, D]; the state is not modified.
//! let queries = Tensor::<3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &device);
//! assert_eq!(buffer.replay(queries.clone(), &state)?.dims(), [1, 3, 8]);
//! // The replay weights [B, T, M] of every position sum to at most 1.
//! let weights = buffer.retrieve(queries.clone(), &state)?.weights;
//! assert_eq!(weights.dims(), [1, 3, 4]);
//! for total in weights.sum_dim(2).to_data().iter::<f32>() {
//!     assert!(total > 0.0 && total <= 1.0 + 1e-5);
//! }
//! // An empty buffer replays exact zeros.
//! let nothing = buffer.replay(queries, &buffer.empty_state(1, &device))?;
//! assert!(nothing.to_data().iter::<f32>().all(|x| x == 0.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffer;
mod config;
mod soft_top_k;
mod state;

pub use buffer::{
    MemoryStats, PriorityBuffer, Retrieval, WriteOutcome, next_token_distribution, next_token_mass,
    target_mass,
};
pub use config::{MemoryError, PriorityBufferConfig, Scoring};
pub use soft_top_k::soft_top_k;
pub use state::{MemoryState, NO_NEXT_TOKEN};
