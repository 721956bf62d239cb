//! Mixed precision ("autocast") for the base model's matrix multiplications.
//!
//! PyTorch-AMP semantics, spelled out per op rather than by a global context:
//!
//! - With [`Precision::Bf16`] every **matmul** of the base runs in bfloat16: the seven
//!   projections (`q/k/v/o`, `gate/up/down`; input and weight cast, output cast back), the
//!   attention core (`q`, `k`, `v` cast after q/k-norm and RoPE; its output goes straight into the
//!   bf16 `o_proj`), and the tied LM head.
//! - Everything else computes in **f32**: the residual stream (the embedding rows are cast to
//!   f32 on lookup), RMSNorm, RoPE, GELU, the logit soft-cap, and whatever a caller builds on
//!   the hidden states (HippoFormer's modules, the loss). Every trainable parameter — the masters
//!   the optimizer updates, LoRA factors included — and so the optimizer state stay f32: Burn's
//!   LoRA composes `W + ΔW` at the factors' dtype (f32), then the composed weight is cast. Casts
//!   are differentiable (the gradient is cast back), so gradients reach the f32 factors.
//! - Weights that are frozen and read only by matmuls (the embedding, the projections' base
//!   weights) are *stored* in bf16: every use would round them to bf16 anyway, and it halves
//!   their memory (Gemma-3-270M: 268 M such values, 1.07 GB in f32, 0.54 GB in bf16). Norm
//!   gains stay f32. The embedding lookup therefore reads bf16-rounded rows, as a bf16 model in
//!   PyTorch does.
//! - The KV cache holds keys and values in the matmul dtype (bf16 halves its memory); a cache
//!   belongs to the precision it was filled with.
//!
//! bf16 keeps f32's exponent range (no overflow where f32 has none, so no loss scaling is
//! needed) with 8 significant bits: a relative rounding error of 2⁻⁸ ≈ 0.4 % per cast.
//! f16 is not offered: its range (±65504) is too small for Gemma's activations without loss
//! scaling and range checks, which this crate does not have.
//!
//! A device whose backend cannot do bf16 arithmetic (Burn's `ndarray`, `wgpu` without
//! shader bf16) is rejected by [`Precision::check_device`] — never silently run in f32. On CUDA
//! the same code runs its bf16 matmuls on tensor cores; on the CPU (`flex`), bf16 matmuls are
//! computed through f32 and rounded, so they are slower there, not faster.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{GemmaError, Result};

/// The dtype of the base model's matrix multiplications (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Matmuls in bfloat16, everything else in f32.
    Bf16,
}

impl Precision {
    /// Every precision, in the order the CLI lists them.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The name used in TOML and on the command line (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The dtype matmuls are cast to, or `None` when they run in f32 as stored (no cast at all).
    pub fn matmul_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
        }
    }

    /// Checks that `device`'s backend can compute in this precision; the error names the
    /// device. f32 is always accepted.
    pub fn check_device(self, device: &Device) -> Result<()> {
        match self.matmul_dtype() {
            None => Ok(()),
            Some(dtype) => self.check_support(device.supports_dtype(dtype), device),
        }
    }

    fn check_support(self, supported: bool, device: &Device) -> Result<()> {
        if supported {
            return Ok(());
        }
        Err(GemmaError::Config {
            origin: format!("precision = \"{self}\""),
            message: format!(
                "the device {device:?} has no {self} arithmetic (Burn's ndarray backend and \
                 wgpu/vulkan without shader bf16 have none); use precision = \"f32\" there, or \
                 the cpu (flex) or cuda device"
            ),
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown precision `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        let e = "fp16".parse::<Precision>().unwrap_err();
        assert!(e.contains("fp16") && e.contains("f32, bf16"), "{e}");
        assert!("BF16".parse::<Precision>().is_err());
        assert_eq!(Precision::default(), Precision::F32);
    }

    #[test]
    fn flex_supports_bf16_and_an_unsupported_device_is_named() {
        let device = Device::flex();
        assert!(Precision::Bf16.check_device(&device).is_ok());
        assert!(Precision::F32.check_device(&device).is_ok());
        // The rejection branch (this build has no backend without bf16 to ask).
        let e = Precision::Bf16
            .check_support(false, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bf16") && e.contains(&format!("{device:?}")),
            "{e}"
        );
    }
}
