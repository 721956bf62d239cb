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
    pub fn forward_direct(&self, h: Tensor<3>, m: Tensor<3>, present: Tensor<1>) -> Tensor<3> {
        h + m.mul(self.opening(present))
    }
}
