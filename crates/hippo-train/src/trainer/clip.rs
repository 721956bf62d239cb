//! Global-norm gradient clipping over every trainable parameter.
//!
//! Burn's `GradientClippingConfig::Norm` clips each parameter's gradient by its *own* norm;
//! PyTorch's `clip_grad_norm_` (what the reference trains with) scales *all* gradients by one
//! factor `min(1, c / ‖g‖)` with `‖g‖` the norm of all gradients concatenated. This module does
//! the latter: one visitor pass sums squares, a second scales.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SumSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SumSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `module`'s parameters (0 when there are none).
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SumSquares { grads, total: None };
    module.visit(&mut v);
    v.total
        .map(|t| f64::from(t.into_scalar::<f32>()).sqrt())
        .unwrap_or(0.0)
}

/// Multiplies every gradient by `scale` (e.g. `1 / micro-batches`), then clips the result to
/// global norm `max_norm` (`None` or ≤ 0: no clipping). Returns the gradients and the global
/// norm *before* clipping (after `scale`).
pub fn scale_and_clip<M: Module>(
    module: &M,
    mut grads: GradientsParams,
    scale: f64,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let norm = global_norm(module, &grads) * scale.abs();
    let clip = match max_norm {
        Some(c) if c > 0.0 && norm.is_finite() && norm > c => c / (norm + 1e-6),
        _ => 1.0,
    };
    let factor = scale * clip;
    if factor != 1.0 {
        let mut v = Scale {
            grads: &mut grads,
            factor,
        };
        module.visit(&mut v);
    }
    (grads, norm)
}
