//! The Gemma decoder in Burn, top to bottom in architecture order: RMSNorm, RoPE, attention,
//! GeGLU MLP, decoder layer, model. One code path serves Gemma 1, 2 and 3; the config decides
//! which norms exist, which layers slide, and where soft-capping applies.
//!
//! Invariants:
//! - Inputs are right-padded: a real token never follows a pad in its row, so the causal mask
//!   alone keeps pads out of every real token's context.
//! - Norm multipliers are stored whole (`gamma = 1 + w` for Hugging Face weights, the GGUF value
//!   as stored), so the forward is `x / rms(x) * gamma` for every source.
//! - The LM head is the embedding matrix (tied), applied after the final norm.
//! - With a mixed [`Precision`], only the matmuls change dtype (see [`crate::precision`]); every
//!   tensor between two ops of this file is f32, and so is every output.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::Linear;
use burn::tensor::activation;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::cache::{KvCache, LayerKv};
use crate::config::{Activation, GemmaConfig, GemmaFamily, LayerType};
use crate::error::{GemmaError, Result};
use crate::precision::Precision;
use crate::weights::{WeightSource, fetch};

/// Root-mean-square norm with a stored multiplier: `x / sqrt(mean(x²) + eps) * gamma`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The full multiplier (Gemma's `1 + w`).
    pub gamma: Param<Tensor<1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalises over the last dimension.
    ///
    /// # Shapes
    ///
    /// * `x`: `[..., W]`, `W` the length of `gamma` (`hidden` or `head_dim`)
    /// * output: the shape of `x`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let ms = x.clone().powi_scalar(2).mean_dim(D - 1);
        let inv = ms.add_scalar(self.eps).sqrt().recip();
        let gamma = self.gamma.val().unsqueeze::<D>();
        x.mul(inv).mul(gamma)
    }
}

/// `x · W` through `lin`, the product in `precision`'s matmul dtype: `x` (f32, or already in that
/// dtype) and the weight — for LoRA the composed `W + ΔW` — are cast, the result is cast back to
/// f32. With f32 this is exactly `lin.forward(x)`.
fn project(lin: &Linear, x: Tensor<3>, precision: Precision) -> Tensor<3> {
    match precision.matmul_dtype() {
        None => lin.forward(x),
        Some(dtype) => {
            let weight = lin.weight.val().cast(dtype);
            let bias = lin.bias.as_ref().map(|b| b.val().cast(dtype));
            linear(x.cast(dtype), weight, bias).cast(DType::F32)
        }
    }
}

/// RoPE's inverse frequencies `1 / θ^(2i/d)` divided by the linear factor, `i < head_dim / 2`,
/// in f32 as transformers computes them.
fn inv_freq(theta: f64, linear_factor: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            (1.0f32 / (theta as f32).powf(exponent)) / linear_factor as f32
        })
        .collect()
}

/// Cosine and sine tables `[1, 1, T, head_dim]` for rotate-half RoPE at `positions`.
///
/// Computed in f32 exactly as transformers does: `inv_freq[i] = 1 / θ^(2i/d)`, divided by the
/// linear factor, times the integer position; `cos`/`sin` of the duplicated angles.
pub fn rope_tables(
    theta: f64,
    linear_factor: f64,
    head_dim: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let inv = inv_freq(theta, linear_factor, head_dim);
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for p in start..start + len {
        for _ in 0..2 {
            for f in &inv {
                let a = f * p as f32;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let shape = [1, 1, len, head_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..t, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Applies RoPE to a `[B, heads, T, head_dim]` tensor.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    x.clone().mul(cos.clone()) + rotate_half(x).mul(sin.clone())
}

/// Cosine and sine tables `[B, 1, M, head_dim]` for rotate-half RoPE at per-row, possibly
/// negative, positions `[B, M]` (the same angles as [`rope_tables`], computed on the device).
pub fn rope_tables_at(
    theta: f64,
    linear_factor: f64,
    head_dim: usize,
    positions: Tensor<2>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, m] = positions.dims();
    let device = positions.device();
    // The duplicated angles of rotate-half RoPE, as `rope_tables` lays them out.
    let half = inv_freq(theta, linear_factor, head_dim);
    let inv: Vec<f32> = half.iter().chain(&half).copied().collect();
    let inv = Tensor::<1>::from_data(TensorData::new(inv, [head_dim]), &device)
        .reshape([1, 1, 1, head_dim]);
    let angles = positions.reshape([b, 1, m, 1]).mul(inv);
    (angles.clone().cos(), angles.sin())
}

/// What one attention layer reads besides its own segment: keys and values of earlier tokens
/// (a memory), each at its position relative to position 0 of the segment being read.
///
/// # Shapes
///
/// * `keys`, `values`: `[B, kv_heads, M, head_dim]`; the keys after the key norm and *before*
///   RoPE (RoPE is applied at `positions` when they are read)
/// * `positions`: `[B, M]`, e.g. `-10` for the token ten positions before the segment's first
/// * `bias`: `[B, M]`, added to the entry's attention score; `−∞` where the entry may not be read
#[derive(Debug, Clone)]
pub struct LayerMemory {
    /// Keys before RoPE.
    pub keys: Tensor<4>,
    /// Values.
    pub values: Tensor<4>,
    /// Positions relative to the segment's position 0.
    pub positions: Tensor<2>,
    /// Additive score bias, `−∞` for entries that may not be read.
    pub bias: Tensor<2>,
}

/// A layer's keys (after the key norm, before RoPE) and values of the positions a forward read,
/// `[B, kv_heads, T, head_dim]` each: what a memory stores to hand back as a [`LayerMemory`].
#[derive(Debug, Clone)]
pub struct LayerKeysValues {
    /// Keys before RoPE.
    pub keys: Tensor<4>,
    /// Values.
    pub values: Tensor<4>,
}

/// Causal (and optionally sliding-window) mask: `true` where query `q_start + i` may NOT see key
/// `k_start + j`, i.e. the key lies in the future or `window` or more positions back.
pub fn causal_mask(
    q_start: usize,
    q_len: usize,
    k_start: usize,
    k_len: usize,
    window: Option<usize>,
    device: &Device,
) -> Tensor<2, Bool> {
    let mut m = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len {
        let qp = q_start + i;
        for j in 0..k_len {
            let kp = k_start + j;
            let future = kp > qp;
            let too_old = window.is_some_and(|w| qp >= kp + w);
            m.push(future || too_old);
        }
    }
    Tensor::from_data(TensorData::new(m, [q_len, k_len]), device)
}

/// Multi-head attention with multi-query / grouped-query key-value heads.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection `[hidden, heads·head_dim]`.
    pub q_proj: Linear,
    /// Key projection `[hidden, kv_heads·head_dim]`.
    pub k_proj: Linear,
    /// Value projection `[hidden, kv_heads·head_dim]`.
    pub v_proj: Linear,
    /// Output projection `[heads·head_dim, hidden]`.
    pub o_proj: Linear,
    /// Per-head query norm (Gemma 3).
    pub q_norm: Option<RmsNorm>,
    /// Per-head key norm (Gemma 3).
    pub k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// Score scale `query_pre_attn_scalar^-0.5`.
    scale: f64,
    /// Attention soft-cap; 0 = none.
    softcap: f64,
    /// Sliding window; 0 = full attention.
    window: usize,
    rope_theta: f64,
    rope_factor: f64,
    /// The matmul precision (set through [`Gemma::with_precision`]).
    #[module(skip)]
    precision: Precision,
}

impl Attention {
    /// Causal (sliding-window where the layer slides) attention with RoPE; with a `cache`, also
    /// over the earlier positions it holds, and this call's keys and values are appended to it.
    ///
    /// # Shapes
    ///
    /// * `x`: `[B, T, hidden]` at absolute positions `start..start + T`
    /// * queries `[B, heads, T, head_dim]`; keys and values `[B, kv_heads, S, head_dim]`, `S` = the
    ///   positions the cache holds plus `T`, repeated to `heads`
    /// * output: `[B, T, hidden]`
    pub fn forward(&self, x: Tensor<3>, start: usize, cache: Option<&mut LayerKv>) -> Tensor<3> {
        self.forward_with_memory(x, start, cache, None).0
    }

    /// [`forward`](Self::forward) that also attends to a `memory` of earlier tokens (one softmax
    /// over the memory's entries and the segment's own keys, the entries' scores plus their
    /// bias; a sliding layer sees only entries less than its window back), and returns this
    /// call's keys (before RoPE) and values for a memory to store.
    ///
    /// With the memory holding the keys and values of the tokens just before the segment, at
    /// their positions, and bias 0, this is attention over the concatenated sequence.
    ///
    /// # Shapes
    ///
    /// * as [`forward`](Self::forward); `memory`: see [`LayerMemory`] (`M` entries)
    /// * returned keys and values: `[B, kv_heads, T, head_dim]`
    pub fn forward_with_memory(
        &self,
        x: Tensor<3>,
        start: usize,
        cache: Option<&mut LayerKv>,
        memory: Option<&LayerMemory>,
    ) -> (Tensor<3>, LayerKeysValues) {
        let [b, t, _] = x.dims();
        let device = x.device();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let p = self.precision;
        let q = project(&self.q_proj, x.clone(), p)
            .reshape([b, t, h, hd])
            .swap_dims(1, 2);
        let k = project(&self.k_proj, x.clone(), p)
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);
        let v = project(&self.v_proj, x, p)
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2);
        let q = match &self.q_norm {
            Some(n) => n.forward(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(k),
            None => k,
        };
        let read = LayerKeysValues {
            keys: k.clone(),
            values: v.clone(),
        };
        let (cos, sin) = rope_tables(self.rope_theta, self.rope_factor, hd, start, t, &device);
        let q = apply_rope(q, &cos, &sin);
        let k = apply_rope(k, &cos, &sin);
        let window = (self.window > 0).then_some(self.window);
        // The attention core in the matmul dtype; the cache holds k and v in it too.
        let cast = |x: Tensor<4>| match p.matmul_dtype() {
            None => x,
            Some(dtype) => x.cast(dtype),
        };
        let (q, k, v) = (cast(q), cast(k), cast(v));

        let (k, v, k_start) = match cache {
            Some(c) => c.append(k, v, start, window),
            None => (k, v, start),
        };
        let s = k.dims()[2];
        let group = h / kvh;
        let expand = |x: Tensor<4>, s: usize| {
            if group == 1 {
                x
            } else {
                x.unsqueeze_dim::<5>(2)
                    .expand([b, kvh, group, s, hd])
                    .reshape([b, h, s, hd])
            }
        };
        let (k, v) = (expand(k, s), expand(v, s));
        let mask = causal_mask(start, t, k_start, s, window, &device).reshape([1, 1, t, s]);
        let options = AttentionModuleOptions {
            scale: Some(self.scale),
            softcap: (self.softcap > 0.0).then_some(self.softcap),
            is_causal: false,
        };
        let out = match memory {
            // Masks and biases go in with one head ([B or 1, 1, T, S]): the backend reads the
            // same tile for every head instead of a copy per head.
            None => attention(q, k, v, Some(mask), None, options),
            Some(mem) => {
                let m = mem.positions.dims()[1];
                let (mcos, msin) =
                    rope_tables_at(self.rope_theta, self.rope_factor, hd, mem.positions.clone());
                let mk = expand(cast(apply_rope(mem.keys.clone(), &mcos, &msin)), m);
                let mv = expand(cast(mem.values.clone()), m);
                // An entry is hidden where its bias is −∞ and, in a sliding layer, from the
                // queries `window` or more positions after it.
                let unreadable = mem
                    .bias
                    .clone()
                    .is_finite()
                    .bool_not()
                    .reshape([b, 1, 1, m]);
                let unreadable = match window {
                    None => unreadable.expand([b, 1, t, m]),
                    Some(w) => {
                        let q_pos: Vec<f32> = (start..start + t).map(|x| x as f32).collect();
                        let q_pos = Tensor::<1>::from_data(TensorData::new(q_pos, [t]), &device)
                            .reshape([1, 1, t, 1]);
                        let back = q_pos.sub(mem.positions.clone().reshape([b, 1, 1, m]));
                        unreadable.bool_or(back.greater_equal_elem(w as f32))
                    }
                };
                let mask = Tensor::cat(vec![unreadable, mask.expand([b, 1, t, s])], 3);
                let bias = mem
                    .bias
                    .clone()
                    .mask_fill(mem.bias.clone().is_finite().bool_not(), 0.0)
                    .reshape([b, 1, 1, m])
                    .expand([b, 1, t, m]);
                let bias = Tensor::cat(vec![bias, Tensor::zeros([b, 1, t, s], &device)], 3);
                let bias = cast(bias);
                attention(
                    q,
                    Tensor::cat(vec![mk, k], 2),
                    Tensor::cat(vec![mv, v], 2),
                    Some(mask),
                    Some(bias),
                    options,
                )
            }
        };
        // With a mixed precision `out` is still in the matmul dtype: o_proj takes it as is.
        let out = out.swap_dims(1, 2).reshape([b, t, h * hd]);
        (project(&self.o_proj, out, p), read)
    }
}

/// The tanh approximation of GELU, `x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))`, written as
/// `x·σ(2√(2/π)·x(1 + 0.044715x²))` (the same function: `(1 + tanh z)/2 = σ(2z)`). Burn's
/// `gelu_approximate` computes `x³` with `powf` and then a `tanh`; here the cube is two multiplies
/// and the one transcendental is the backend's sigmoid: two of eight elementwise passes fewer,
/// and no `powf` (README, "GELU": ≈ a fifth of a forward).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_K: f64 = 2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    let inner = x
        .clone()
        .mul(x.clone())
        .mul_scalar(TWO_K * 0.044715)
        .add_scalar(TWO_K)
        .mul(x.clone());
    x.mul(activation::sigmoid(inner))
}

/// GeGLU feed-forward: `down(gelu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
    exact_gelu: bool,
    /// The matmul precision (set through [`Gemma::with_precision`]).
    #[module(skip)]
    precision: Precision,
}

impl Mlp {
    /// Applies the feed-forward at every position.
    ///
    /// # Shapes
    ///
    /// * `x`: `[B, T, hidden]` (the gate and up projections widen to `[B, T, intermediate_size]`)
    /// * output: `[B, T, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.precision;
        let gate = project(&self.gate_proj, x.clone(), p);
        let gate = if self.exact_gelu {
            activation::gelu(gate)
        } else {
            gelu_tanh(gate)
        };
        project(&self.down_proj, gate.mul(project(&self.up_proj, x, p)), p)
    }
}

/// One decoder block. Gemma 1: `h = x + attn(n1(x)); h + mlp(n2(h))`. Gemma 2/3 add a norm after
/// each sub-block: `h = x + n2(attn(n1(x))); h + n4(mlp(n3(h)))`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Gemma 1: norm before the MLP. Gemma 2/3: norm after attention.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma 2/3: norm before the MLP.
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    /// Gemma 2/3: norm after the MLP.
    pub post_feedforward_layernorm: Option<RmsNorm>,
    /// Feed-forward.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// Runs the block; with a `cache`, attends to the earlier positions it holds.
    ///
    /// # Shapes
    ///
    /// * `x`: `[B, T, hidden]` at absolute positions `start..start + T`
    /// * `cache`: this layer's keys and values of the earlier positions; this call's `T` are
    ///   appended
    /// * output: `[B, T, hidden]`
    pub fn forward(&self, x: Tensor<3>, start: usize, cache: Option<&mut LayerKv>) -> Tensor<3> {
        self.forward_with_memory(x, start, cache, None).0
    }

    /// [`forward`](Self::forward) with attention that also reads a `memory` (see
    /// [`Attention::forward_with_memory`]); returns this call's keys and values too.
    pub fn forward_with_memory(
        &self,
        x: Tensor<3>,
        start: usize,
        cache: Option<&mut LayerKv>,
        memory: Option<&LayerMemory>,
    ) -> (Tensor<3>, LayerKeysValues) {
        let (attn, read) = self.self_attn.forward_with_memory(
            self.input_layernorm.forward(x.clone()),
            start,
            cache,
            memory,
        );
        let out = match (
            &self.pre_feedforward_layernorm,
            &self.post_feedforward_layernorm,
        ) {
            (Some(pre), Some(post)) => {
                let h = x + self.post_attention_layernorm.forward(attn);
                let m = self.mlp.forward(pre.forward(h.clone()));
                h + post.forward(m)
            }
            _ => {
                let h = x + attn;
                let m = self
                    .mlp
                    .forward(self.post_attention_layernorm.forward(h.clone()));
                h + m
            }
        };
        (out, read)
    }
}

/// Final hidden states and logits of one forward.
#[derive(Debug, Clone)]
pub struct GemmaOutput {
    /// Logits `[B, T, vocab]` (soft-capped where the config says so).
    pub logits: Tensor<3>,
    /// Hidden states after the final norm `[B, T, hidden]` (what the LM head reads).
    pub hidden: Tensor<3>,
}

/// A Gemma text model (weights only; the KV cache is passed in).
#[derive(Module, Debug)]
pub struct Gemma {
    /// Token embedding `[vocab, hidden]`, also the LM head.
    pub embed_tokens: Param<Tensor<2>>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// The configuration the weights were built for.
    #[module(skip)]
    pub config: GemmaConfig,
    /// Optional f16 copy of the embedding for a faster (memory-bound) LM head in decoding;
    /// see [`Gemma::with_f16_lm_head`]. Not saved, not trained.
    #[module(skip)]
    pub lm_head_f16: Option<Tensor<2>>,
    /// The matmul precision; see [`Gemma::with_precision`].
    #[module(skip)]
    precision: Precision,
}

/// Stores the frozen matmul weights in `dtype` (see [`Gemma::with_precision`]): 2-D parameters
/// (the embedding and the projections; norm gains are 1-D) outside LoRA adapters that require no
/// gradient.
struct StoreFrozen {
    dtype: DType,
    path: Vec<String>,
}

impl ModuleMapper for StoreFrozen {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let in_adapter = self.path.iter().any(|p| p == "lora");
        if D != 2 || in_adapter || param.is_require_grad() || param.dtype() == self.dtype {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| t.cast(dtype))
    }
}

/// Every tensor a checkpoint must hold for `config`, with its Hugging Face name and shape.
pub fn hf_tensor_specs(config: &GemmaConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size;
    let (h, kvh, hd) = (config.num_heads, config.num_kv_heads, config.head_dim);
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![config.vocab_size, d],
        ),
        ("model.norm.weight".to_string(), vec![d]),
    ];
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        v.push((format!("{p}.input_layernorm.weight"), vec![d]));
        v.push((format!("{p}.self_attn.q_proj.weight"), vec![h * hd, d]));
        v.push((format!("{p}.self_attn.k_proj.weight"), vec![kvh * hd, d]));
        v.push((format!("{p}.self_attn.v_proj.weight"), vec![kvh * hd, d]));
        v.push((format!("{p}.self_attn.o_proj.weight"), vec![d, h * hd]));
        if config.qk_norm() {
            v.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
            v.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
        }
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        if config.sandwich_norms() {
            v.push((format!("{p}.pre_feedforward_layernorm.weight"), vec![d]));
            v.push((format!("{p}.post_feedforward_layernorm.weight"), vec![d]));
        }
        let ff = config.intermediate_size;
        v.push((format!("{p}.mlp.gate_proj.weight"), vec![ff, d]));
        v.push((format!("{p}.mlp.up_proj.weight"), vec![ff, d]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![d, ff]));
    }
    v
}

/// The names of [`hf_tensor_specs`].
pub fn hf_tensor_names(config: &GemmaConfig) -> Vec<String> {
    hf_tensor_specs(config)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

struct Builder<'a> {
    src: &'a dyn WeightSource,
    config: &'a GemmaConfig,
    device: &'a Device,
}

impl Builder<'_> {
    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = fetch(self.src, name, &[out, inp])?;
        // Hugging Face stores [out, in]; Burn's Linear holds [in, out].
        let mut t = vec![0f32; w.len()];
        for o in 0..out {
            for i in 0..inp {
                t[i * out + o] = w[o * inp + i];
            }
        }
        Ok(Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(t, [inp, out]),
                self.device,
            )),
            bias: None,
        })
    }

    fn norm(&self, name: &str, dim: usize) -> Result<RmsNorm> {
        let offset = self.src.norm_offset();
        let w: Vec<f32> = fetch(self.src, name, &[dim])?
            .into_iter()
            .map(|x| x + offset)
            .collect();
        Ok(RmsNorm {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(w, [dim]), self.device)),
            eps: self.config.rms_norm_eps,
        })
    }

    fn layer(&self, i: usize) -> Result<DecoderLayer> {
        let c = self.config;
        let d = c.hidden_size;
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let p = format!("model.layers.{i}");
        let rope = c.rope_for(i);
        let qk = |n: &str| -> Result<Option<RmsNorm>> {
            if c.qk_norm() {
                Ok(Some(self.norm(&format!("{p}.self_attn.{n}.weight"), hd)?))
            } else {
                Ok(None)
            }
        };
        let sandwich = |n: &str| -> Result<Option<RmsNorm>> {
            if c.sandwich_norms() {
                Ok(Some(self.norm(&format!("{p}.{n}.weight"), d)?))
            } else {
                Ok(None)
            }
        };
        let self_attn = Attention {
            q_proj: self.linear(&format!("{p}.self_attn.q_proj.weight"), h * hd, d)?,
            k_proj: self.linear(&format!("{p}.self_attn.k_proj.weight"), kvh * hd, d)?,
            v_proj: self.linear(&format!("{p}.self_attn.v_proj.weight"), kvh * hd, d)?,
            o_proj: self.linear(&format!("{p}.self_attn.o_proj.weight"), d, h * hd)?,
            q_norm: qk("q_norm")?,
            k_norm: qk("k_norm")?,
            num_heads: h,
            num_kv_heads: kvh,
            head_dim: hd,
            scale: c.query_pre_attn_scalar.powf(-0.5),
            softcap: c.attn_logit_softcapping.unwrap_or(0.0),
            window: match c.layer_types[i] {
                LayerType::Sliding => c.sliding_window.unwrap_or(0),
                LayerType::Full => 0,
            },
            rope_theta: rope.theta,
            rope_factor: rope.linear_factor,
            precision: Precision::F32,
        };
        let ff = c.intermediate_size;
        Ok(DecoderLayer {
            input_layernorm: self.norm(&format!("{p}.input_layernorm.weight"), d)?,
            self_attn,
            post_attention_layernorm: self
                .norm(&format!("{p}.post_attention_layernorm.weight"), d)?,
            pre_feedforward_layernorm: sandwich("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: sandwich("post_feedforward_layernorm")?,
            mlp: Mlp {
                gate_proj: self.linear(&format!("{p}.mlp.gate_proj.weight"), ff, d)?,
                up_proj: self.linear(&format!("{p}.mlp.up_proj.weight"), ff, d)?,
                down_proj: self.linear(&format!("{p}.mlp.down_proj.weight"), d, ff)?,
                exact_gelu: c.activation == Activation::GeluExact,
                precision: Precision::F32,
            },
        })
    }
}

impl Gemma {
    /// Builds the model from a checkpoint, checking every tensor's presence and shape.
    pub fn from_weights(
        config: &GemmaConfig,
        src: &dyn WeightSource,
        device: &Device,
    ) -> Result<Self> {
        let b = Builder {
            src,
            config,
            device,
        };
        let embed = fetch(
            src,
            "model.embed_tokens.weight",
            &[config.vocab_size, config.hidden_size],
        )?;
        let layers = (0..config.num_layers)
            .map(|i| b.layer(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Param::from_tensor(Tensor::from_data(
                TensorData::new(embed, [config.vocab_size, config.hidden_size]),
                device,
            )),
            layers,
            norm: b.norm("model.norm.weight", config.hidden_size)?,
            config: config.clone(),
            lm_head_f16: None,
            precision: Precision::F32,
        })
    }

    /// A randomly initialised model (seeded), for tests and for crates built on this one.
    pub fn random(config: &GemmaConfig, seed: u64, device: &Device) -> Result<Self> {
        let src = crate::weights::RandomWeights::new(config, seed);
        Self::from_weights(config, &src, device)
    }

    /// The configuration.
    pub fn config(&self) -> &GemmaConfig {
        &self.config
    }

    /// Checks that every id is inside the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.config.vocab_size)
        {
            Some((position, &id)) => Err(GemmaError::TokenOutOfRange {
                id,
                position,
                vocab_size: self.config.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Makes a `[B, T]` id tensor from equal-length rows, checking every id.
    pub fn ids_tensor(&self, rows: &[Vec<u32>], device: &Device) -> Result<Tensor<2, Int>> {
        let t = rows.first().map(Vec::len).unwrap_or(0);
        if t == 0 || rows.iter().any(|r| r.len() != t) {
            return Err(GemmaError::InvalidInput(
                "a batch needs at least one token and rows of equal length".into(),
            ));
        }
        let mut flat = Vec::with_capacity(rows.len() * t);
        for r in rows {
            self.check_ids(r)?;
            flat.extend(r.iter().map(|&x| x as i64));
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [rows.len(), t]),
            device,
        ))
    }

    /// Scaled token embeddings `[B, T, hidden]`: `E[ids] · sqrt(hidden)` (the scale rounded to f32).
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let d = self.config.hidden_size;
        let flat = ids.reshape([b * t]);
        let e = self.embed_tokens.val().select(0, flat).reshape([b, t, d]);
        // A frozen embedding may be stored in bf16 (see `with_precision`); the stream is f32.
        let e = if e.dtype() == DType::F32 {
            e
        } else {
            e.cast(DType::F32)
        };
        e.mul_scalar((d as f32).sqrt())
    }

    /// Final hidden states (after the final norm) `[B, T, hidden]`; appends to `cache` if given.
    pub fn hidden_states(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.hidden_states_with_memory(ids, cache, &[]).0
    }

    /// [`hidden_states`](Self::hidden_states) where layer `i`'s attention also reads
    /// `memory[i]` (see [`Attention::forward_with_memory`]; `None`, or a layer past the end of
    /// `memory`, reads nothing), returning every layer's keys (before RoPE) and values of these
    /// positions too, for a memory to store.
    ///
    /// # Shapes
    ///
    /// * `ids`: `[B, T]`; `memory[i]`: see [`LayerMemory`]
    /// * hidden states `[B, T, hidden]`; one [`LayerKeysValues`] a layer, `[B, kv_heads, T, head_dim]`
    pub fn hidden_states_with_memory(
        &self,
        ids: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
        memory: &[Option<LayerMemory>],
    ) -> (Tensor<3>, Vec<LayerKeysValues>) {
        let start = cache.as_ref().map(|c| c.seq_len()).unwrap_or(0);
        let t = ids.dims()[1];
        let mut x = self.embed(ids);
        let mut read = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| c.layer_mut(i));
            let mem = memory.get(i).and_then(Option::as_ref);
            let (y, kv) = layer.forward_with_memory(x, start, layer_cache, mem);
            x = y;
            read.push(kv);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        (self.norm.forward(x), read)
    }

    /// Runs every matmul of this model — projections, attention core, LM head — in `precision`,
    /// everything else in f32 (see [`crate::precision`]); outputs stay f32.
    ///
    /// The weights only matmuls read and nothing trains — the embedding and the projections'
    /// weights that require no gradient — are stored in the matmul dtype (half the memory with
    /// bf16; each use would cast them to it anyway). LoRA factors, norm gains and every weight
    /// that requires a gradient stay f32: the masters the optimizer updates. A LoRA-adapted
    /// weight composes `W + ΔW` in f32 and is cast at each use. Call it after freezing (or
    /// attaching LoRA) so the frozen weights are known; on a device without autodiff nothing
    /// trains. `F32` stores everything in f32 again. An error if the device's backend cannot
    /// compute in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        precision.check_device(&self.embed_tokens.val().device())?;
        self.precision = precision;
        for layer in &mut self.layers {
            layer.self_attn.precision = precision;
            layer.mlp.precision = precision;
        }
        let mut store = StoreFrozen {
            dtype: precision.matmul_dtype().unwrap_or(DType::F32),
            path: Vec::new(),
        };
        Ok(self.map(&mut store))
    }

    /// The matmul precision ([`Precision::F32`] unless set by [`Gemma::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Keeps an f16 copy of the embedding and computes the LM head from it (inputs cast to f16,
    /// logits back to f32). On CPU the decode-time LM head is memory-bound, and halving the bytes
    /// read makes it ≈ 2.5× faster; logits then differ from f32 by ~1e-2, so this is an explicit
    /// opt-in for generation, never used for scoring or training.
    pub fn with_f16_lm_head(mut self) -> Self {
        self.lm_head_f16 = Some(self.embed_tokens.val().cast(DType::F16));
        self
    }

    /// The tied LM head: `hidden · Eᵀ`, soft-capped if the config says so. `[B,T,hidden]` → `[B,T,vocab]`.
    ///
    /// The product runs in f16 with [`Gemma::with_f16_lm_head`] (which wins), else in the
    /// model's [`Precision`]; the soft-cap and the logits are f32.
    pub fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let flat = hidden.reshape([b * t, d]);
        let logits = match &self.lm_head_f16 {
            Some(e16) => flat
                .cast(DType::F16)
                .matmul(e16.clone().transpose())
                .cast(DType::F32),
            None => match self.precision.matmul_dtype() {
                None => flat.matmul(self.embed_tokens.val().transpose()),
                Some(dtype) => flat
                    .cast(dtype)
                    .matmul(self.embed_tokens.val().cast(dtype).transpose())
                    .cast(DType::F32),
            },
        }
        .reshape([b, t, self.config.vocab_size]);
        match self.config.final_logit_softcapping {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        }
    }

    /// Hidden states and logits.
    ///
    /// # Shapes
    ///
    /// * `ids`: `[B, T]`, right-padded, every id below `vocab_size` (see [`Gemma::ids_tensor`]);
    ///   with a `cache` the positions continue from [`KvCache::seq_len`], and the cache grows by `T`
    /// * `logits`: `[B, T, vocab_size]`, `hidden`: `[B, T, hidden_size]`
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> GemmaOutput {
        let hidden = self.hidden_states(ids, cache);
        GemmaOutput {
            logits: self.lm_head(hidden.clone()),
            hidden,
        }
    }

    /// A fresh KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }

    /// Whether this is a Gemma 1, 2 or 3 model.
    pub fn family(&self) -> GemmaFamily {
        self.config.family
    }
}
