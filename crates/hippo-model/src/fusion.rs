//! Output fusion: blends what each position retrieved from memory into its hidden state.
//!
//! `a_t = MHA(q = h_t, k = v = m_{≤t})` (causal: position t attends only to the retrievals of
//! positions ≤ t), `g_t = σ(W₂·GELU(W₁·[h_t; m_t]))`, and
//! `out_t = h_t + tanh(α) · present_b · g_t ⊙ LN(a_t)` with `α = 0` at init, so a fresh fusion is
//! exactly the identity (the "gate closed" condition) while `∂out/∂α ≠ 0`, so training opens it.
//! `present_b` is 1 when stream b's buffer had anything to replay, so an empty memory never
//! contributes a bias term.
//!
//! With `fusion = false` (an ablation) the attention and gate MLP are bypassed:
//! `out_t = h_t + tanh(α) · present_b · m_t`.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

/// The fusion module.
#[derive(Module, Debug)]
pub struct OutputFusion {
    /// Attention query projection (PyTorch `cross_attn.in_proj` rows 0..D).
    pub q_proj: Linear,
    /// Attention key projection (rows D..2D).
    pub k_proj: Linear,
    /// Attention value projection (rows 2D..3D).
    pub v_proj: Linear,
    /// Attention output projection (`cross_attn.out_proj`).
    pub out_proj: Linear,
    /// Gate MLP first layer `2D → D` (`gate.0`).
    pub gate_in: Linear,
    /// Gate MLP second layer `D → D` (`gate.2`).
    pub gate_out: Linear,
    /// Norm of the attention output (`norm`).
    pub norm: LayerNorm,
    /// Opening of the fusion, `tanh(α)`; 0 at init.
    pub alpha: Param<Tensor<1>>,
    /// Dropout on the fused term (training only).
    pub dropout: Dropout,
    /// Attention heads.
    pub n_heads: usize,
}

impl OutputFusion {
    /// A fresh fusion of width `dim` (exactly the identity until `α` moves).
    pub fn new(dim: usize, n_heads: usize, dropout: f64, device: &Device) -> Self {
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        Self {
            q_proj: lin(dim, dim),
            k_proj: lin(dim, dim),
            v_proj: lin(dim, dim),
            out_proj: lin(dim, dim),
            gate_in: lin(2 * dim, dim),
            gate_out: lin(dim, dim),
            norm: LayerNormConfig::new(dim).init(device),
            alpha: Param::from_tensor(Tensor::zeros([1], device)),
            dropout: DropoutConfig::new(dropout).init(),
            n_heads,
        }
    }

    fn opening(&self, present: Tensor<1>) -> Tensor<3> {
        let b = present.dims()[0];
        self.alpha
            .val()
            .tanh()
            .reshape([1, 1, 1])
            .mul(present.reshape([b, 1, 1]))
    }

    /// Full fusion. `h`, `m`: `[B, T, D]`; `present`: `[B]` (1.0 where the stream had memory).
    ///
    /// # Shapes
    ///
    /// * `h`: `[B, T, D]`, the hidden states; `m`: `[B, T, D]`, what each position retrieved
    /// * `present`: `[B]`, 1.0 where the stream's buffer had anything to replay, else 0.0
    /// * causal attention over `m` with `n_heads` heads of `D / n_heads` (`n_heads` divides `D`)
    /// * output: `[B, T, D]`
    pub fn forward(&self, h: Tensor<3>, m: Tensor<3>, present: Tensor<1>) -> Tensor<3> {
        let [b, t, d] = h.dims();
        let nh = self.n_heads;
        let hd = d / nh;
        let heads = |x: Tensor<3>| x.reshape([b, t, nh, hd]).swap_dims(1, 2);
        let q = heads(self.q_proj.forward(h.clone()));
        let k = heads(self.k_proj.forward(m.clone()));
        let v = heads(self.v_proj.forward(m.clone()));
        let a = attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            },
        )
        .swap_dims(1, 2)
        .reshape([b, t, d]);
        let a = self.out_proj.forward(a);
        let g = sigmoid(self.gate_out.forward(gelu(
            self.gate_in.forward(Tensor::cat(vec![h.clone(), m], 2)),
        )));
        let fused = self.dropout.forward(g.mul(self.norm.forward(a)));
        h + fused.mul(self.opening(present))
    }

    /// The fusion-off ablation: retrieved memory added through the scalar opening only.
    ///
    /// # Shapes
    ///
    /// * `h`, `m`: `[B, T, D]`; `present`: `[B]` (as in [`forward`](Self::forward))
    /// * output: `[B, T, D]`
    pub fn forward_direct(&self, h: Tensor<3>, m: Tensor<3>, present: Tensor<1>) -> Tensor<3> {
        h + m.mul(self.opening(present))
    }
}

/// Probability-space fusion: the mixture weight `λ_t` of the memory's next-token distribution.
///
/// `λ_t = o · σ(w·[ĥ_t; s_t; H_t] + b) · any_t`, where `ĥ_t = h_t / rms(h_t)` is the normalised
/// hidden state, `s_t` the best similarity of the retrieval, `H_t` the entropy of its weights over
/// `ln M`, and `any_t` whether any entry was eligible. `w = 0`, `b = 0` at init, so the gate reads
/// ½ until trained; the opening `o` is a learned scalar clamped to `[0, 1)` and 0 at init, so a
/// fresh mixture is exactly the identity while `∂λ/∂o ≠ 0` (the clamp keeps the gradient at
/// `o = 0`). `cargo xtask calibrate` sets `o` (and the retrieval's score scale) without backprop.
///
/// With `gated = false` (the `fusion = false` ablation) the gate is bypassed: `λ_t = o · ½ · any_t`.
#[derive(Module, Debug)]
pub struct ProbabilityMix {
    /// The per-position gate `D + 2 → 1` (zero at init).
    pub gate: Linear,
    /// The opening `o` (clamped to `[0, 1)` when used); 0 at init.
    pub opening: Param<Tensor<1>>,
}

/// The largest opening used: `λ < 1` keeps the base distribution's share positive.
pub const MAX_OPENING: f32 = 0.999;

impl ProbabilityMix {
    /// A closed mixture over hidden states of width `dim`.
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            gate: LinearConfig::new(dim + 2, 1)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init(device),
            opening: Param::from_tensor(Tensor::zeros([1], device)),
        }
    }

    /// The opening `o ∈ [0, MAX_OPENING]` `[1]`.
    pub fn opening(&self) -> Tensor<1> {
        let o = self.opening.val();
        // mask_fill passes the gradient where the value is kept: at o = 0 it flows.
        let o = o.clone().mask_fill(o.clone().lower_elem(0.0), 0.0);
        o.clone()
            .mask_fill(o.greater_elem(MAX_OPENING), MAX_OPENING)
    }

    /// `λ_t` `[B, T]`. `h`: `[B, T, D]`; `best_similarity`, `entropy` (already over `ln M`):
    /// `[B, T]`; `any`: `[B, T]` as 0/1.
    pub fn lambda(
        &self,
        h: Tensor<3>,
        best_similarity: Tensor<2>,
        entropy: Tensor<2>,
        any: Tensor<2>,
        gated: bool,
    ) -> Tensor<2> {
        let [b, t, _] = h.dims();
        let o = self.opening().reshape([1, 1]);
        let g = if gated {
            let rms = h.clone().powi_scalar(2).mean_dim(2).add_scalar(1e-6).sqrt();
            let x = Tensor::cat(
                vec![
                    h.div(rms),
                    best_similarity.reshape([b, t, 1]),
                    entropy.reshape([b, t, 1]),
                ],
                2,
            );
            sigmoid(self.gate.forward(x)).reshape([b, t])
        } else {
            Tensor::full([b, t], 0.5, &any.device())
        };
        g.mul(o).mul(any)
    }
}
