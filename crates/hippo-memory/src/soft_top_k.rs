//! A differentiable relaxation of top-k selection.

use burn::tensor::{Tensor, activation};

use crate::config::MemoryError;

/// Bisection steps for the threshold; each halves the bracket, so 60 reach f32 resolution.
const BISECTION_STEPS: usize = 60;

/// Soft top-k along the last dimension: weights `σ((s_i − λ)/τ) ∈ (0, 1)` with the threshold `λ`
/// (one per leading index) chosen so that `Σ_i σ((s_i − λ)/τ) = k`.
///
/// * The weights sum to `k` (up to f32 rounding); as `τ → 0` they approach the hard top-k mask.
/// * Order is preserved: `s_i > s_j ⇒ w_i > w_j` (one shared `λ`, `σ` strictly increasing).
/// * `λ` is found by bisection on detached scores and is treated as a constant in the backward
///   pass, so `∂w_i/∂s_i = σ'(·)/τ` and no gradient flows across elements.
/// * `k = 0` gives zeros, `k = n` gives ones.
///
/// Works on any rank `D ≥ 1`; each slice along the last dimension is independent.
pub fn soft_top_k<const D: usize>(
    scores: Tensor<D>,
    k: usize,
    temperature: f64,
) -> Result<Tensor<D>, MemoryError> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(MemoryError::Temperature(temperature));
    }
    let dims = scores.dims();
    let n = dims[D - 1];
    if k > n {
        return Err(MemoryError::TopKTooLarge { k, n });
    }
    if k == 0 {
        return Ok(scores.zeros_like());
    }
    if k == n {
        return Ok(scores.ones_like());
    }
    // Bracket: at lo every weight exceeds σ(margin), so the sum exceeds k; at hi it is below k.
    let margin = temperature * (30.0 + (n as f64).ln());
    let detached = scores.clone().detach();
    let mut lo = detached.clone().min_dim(D - 1).sub_scalar(margin);
    let mut hi = detached.clone().max_dim(D - 1).add_scalar(margin);
    for _ in 0..BISECTION_STEPS {
        let mid = (lo.clone() + hi.clone()).mul_scalar(0.5);
        let total = activation::sigmoid(
            (detached.clone() - mid.clone().expand(dims)).mul_scalar(1.0 / temperature),
        )
        .sum_dim(D - 1);
        // Sum above k: the threshold must rise.
        let too_low = total.greater_elem(k as f64);
        lo = lo.mask_where(too_low.clone(), mid.clone());
        hi = mid.mask_where(too_low, hi);
    }
    let lambda = (lo + hi).mul_scalar(0.5).expand(dims);
    Ok(activation::sigmoid(
        (scores - lambda).mul_scalar(1.0 / temperature),
    ))
}
