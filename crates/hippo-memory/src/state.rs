//! The per-stream buffer state, passed in and out by the caller.

use std::ops::Range;

use burn::tensor::kind::Basic;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::config::{MemoryError, PriorityBufferConfig};

/// One buffer per stream (batch row), as plain tensors.
///
/// Cloning is cheap (tensors are reference counted). Empty slots hold zeros.
#[derive(Debug, Clone)]
pub struct MemoryState {
    /// Stored raw hidden states `[B, M, D]` (detached).
    pub states: Tensor<3>,
    /// Priority `P` at write time `[B, M]` (detached; 0 in empty slots).
    pub priorities: Tensor<2>,
    /// Age in written segments `[B, M]` (0 in empty slots).
    pub ages: Tensor<2>,
    /// Occupied slots `[B, M]`.
    pub valid: Tensor<2, Bool>,
    /// Number of tokens accepted by writes so far, per row `[B]` (rejected writes not counted).
    pub accepted_writes: Tensor<1, Int>,
    /// The token that followed each stored state in its document, `x_{i+1}` `[B, M]`
    /// ([`NO_NEXT_TOKEN`] in empty slots and for entries written without one).
    pub next_tokens: Tensor<2, Int>,
    /// Each entry's position relative to the first position of the next segment to be read
    /// `[B, M]`: `−1` for the last token of the segment written last, `−T − 1` for the last of
    /// the one before (T tokens long), and so on (0 in empty slots). Writes keep it current.
    pub positions: Tensor<2>,
    /// A payload stored with each entry `[B, M, P]` (detached; zeros in empty slots), such as
    /// the base model's attention keys and values of the token; `None` until a write gives one.
    pub payload: Option<Tensor<3>>,
}

/// The `next_tokens` value of an entry whose next token is unknown (and of empty slots).
pub const NO_NEXT_TOKEN: i64 = -1;

impl MemoryState {
    /// An empty state for `batch` streams of `config.capacity` slots of width `config.dim`.
    pub fn empty(batch: usize, config: &PriorityBufferConfig, device: &Device) -> Self {
        Self::with_shape(batch, config.capacity, config.dim, device)
    }

    /// An empty state with explicit `[batch, capacity, dim]`.
    pub fn with_shape(batch: usize, capacity: usize, dim: usize, device: &Device) -> Self {
        Self {
            states: Tensor::zeros([batch, capacity, dim], device),
            priorities: Tensor::zeros([batch, capacity], device),
            ages: Tensor::zeros([batch, capacity], device),
            valid: Tensor::<2, Bool>::full([batch, capacity], false, device),
            accepted_writes: Tensor::zeros([batch], device),
            next_tokens: Tensor::full([batch, capacity], NO_NEXT_TOKEN, device),
            positions: Tensor::zeros([batch, capacity], device),
            payload: None,
        }
    }

    /// Number of streams `B`.
    pub fn batch_size(&self) -> usize {
        self.states.dims()[0]
    }

    /// Slots per stream `M`.
    pub fn capacity(&self) -> usize {
        self.states.dims()[1]
    }

    /// State width `D`.
    pub fn dim(&self) -> usize {
        self.states.dims()[2]
    }

    /// Empties the streams whose flag in `rows` (`[B]`) is `true`, e.g. at a document boundary;
    /// other rows are returned unchanged.
    pub fn reset_rows(self, rows: Tensor<1, Bool>) -> Result<Self, MemoryError> {
        let [b, m, d] = self.states.dims();
        if rows.dims() != [b] {
            return Err(MemoryError::Shape {
                what: "MemoryState::reset_rows rows",
                expected: vec![b],
                got: rows.dims().to_vec(),
            });
        }
        let rows2 = rows.clone().reshape([b, 1]).expand([b, m]);
        let rows3 = rows.clone().reshape([b, 1, 1]).expand([b, m, d]);
        Ok(Self {
            states: self.states.mask_fill(rows3, 0.0),
            priorities: self.priorities.mask_fill(rows2.clone(), 0.0),
            ages: self.ages.mask_fill(rows2.clone(), 0.0),
            valid: self.valid.bool_and(rows2.clone().bool_not()),
            accepted_writes: self.accepted_writes.mask_fill(rows.clone(), 0),
            next_tokens: self.next_tokens.mask_fill(rows2.clone(), NO_NEXT_TOKEN),
            positions: self.positions.mask_fill(rows2, 0.0),
            payload: self.payload.map(|p| {
                let w = p.dims()[2];
                p.mask_fill(rows.reshape([b, 1, 1]).expand([b, m, w]), 0.0)
            }),
        })
    }

    /// The same state cut from the autodiff graph (the float tensors detached; the others carry
    /// no graph). Training carries memory across steps without backpropagating into earlier
    /// segments.
    pub fn detach(self) -> Self {
        Self {
            states: self.states.detach(),
            priorities: self.priorities.detach(),
            ages: self.ages.detach(),
            positions: self.positions.detach(),
            payload: self.payload.map(Tensor::detach),
            ..self
        }
    }

    /// Empties the streams listed in `rows` (indices into the batch).
    pub fn reset_row_indices(self, rows: &[usize]) -> Result<Self, MemoryError> {
        let b = self.batch_size();
        let mut flags = vec![false; b];
        for &r in rows {
            let slot = flags.get_mut(r).ok_or(MemoryError::Shape {
                what: "MemoryState::reset_row_indices row index out of range",
                expected: vec![b],
                got: vec![r],
            })?;
            *slot = true;
        }
        let device = self.states.device();
        let rows = Tensor::<1, Bool>::from_data(burn::tensor::TensorData::new(flags, [b]), &device);
        self.reset_rows(rows)
    }

    /// The streams `rows` (a range of batch rows) as a state of their own, on `device`.
    pub fn rows(&self, rows: Range<usize>, device: &Device) -> Self {
        fn take<const D: usize, K: Basic>(
            t: &Tensor<D, K>,
            rows: &Range<usize>,
            device: &Device,
        ) -> Tensor<D, K> {
            t.clone().slice_dim(0, rows.clone()).to_device(device)
        }
        Self {
            states: take(&self.states, &rows, device),
            priorities: take(&self.priorities, &rows, device),
            ages: take(&self.ages, &rows, device),
            valid: take(&self.valid, &rows, device),
            accepted_writes: take(&self.accepted_writes, &rows, device),
            next_tokens: take(&self.next_tokens, &rows, device),
            positions: take(&self.positions, &rows, device),
            payload: self.payload.as_ref().map(|p| take(p, &rows, device)),
        }
    }

    /// The streams of `parts`, in order, joined into one state on `device` (the inverse of
    /// splitting a state with [`MemoryState::rows`]).
    pub fn cat(parts: &[Self], device: &Device) -> Self {
        fn join<const D: usize, K: Basic>(
            parts: &[MemoryState],
            field: impl Fn(&MemoryState) -> &Tensor<D, K>,
            device: &Device,
        ) -> Tensor<D, K> {
            Tensor::cat(
                parts
                    .iter()
                    .map(|p| field(p).clone().to_device(device))
                    .collect(),
                0,
            )
        }
        Self {
            states: join(parts, |p| &p.states, device),
            priorities: join(parts, |p| &p.priorities, device),
            ages: join(parts, |p| &p.ages, device),
            valid: join(parts, |p| &p.valid, device),
            accepted_writes: join(parts, |p| &p.accepted_writes, device),
            next_tokens: join(parts, |p| &p.next_tokens, device),
            positions: join(parts, |p| &p.positions, device),
            payload: Self::join_payloads(parts, device),
        }
    }

    /// The parts' payloads joined by row; a part without one contributes zeros (all `None`:
    /// `None`).
    fn join_payloads(parts: &[Self], device: &Device) -> Option<Tensor<3>> {
        let width = parts
            .iter()
            .find_map(|p| p.payload.as_ref().map(|t| t.dims()[2]))?;
        Some(Tensor::cat(
            parts
                .iter()
                .map(|p| match &p.payload {
                    Some(t) => t.clone().to_device(device),
                    None => Tensor::zeros([p.batch_size(), p.capacity(), width], device),
                })
                .collect(),
            0,
        ))
    }

    /// Effective priorities `P·d^age` `[B, M]`, 0 in empty slots.
    pub fn effective_priorities(&self, decay_rate: f64) -> Tensor<2> {
        (self.ages.clone().mul_scalar(decay_rate.ln()).exp() * self.priorities.clone())
            .mask_fill(self.valid.clone().bool_not(), 0.0)
    }
}
