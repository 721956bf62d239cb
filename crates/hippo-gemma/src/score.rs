//! Per-token negative log-likelihood of a token sequence, with a rolling window for sequences
//! longer than the context.
//!
//! Windowing: targets are scored in chunks of `stride` positions. Each chunk is predicted from a
//! window that ends at the chunk's last target and reaches back as far as `context` allows; a
//! window that does not start at position 0 gets BOS prepended (Gemma is trained with BOS first),
//! which costs one position of context. With `stride == context` this is lm-evaluation-harness's
//! disjoint rolling windows; smaller strides give every target more context.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{GemmaError, Result};
use crate::model::Gemma;

/// The scoring of one sequence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scores {
    /// The ids scored (BOS included if it was given).
    pub input_ids: Vec<u32>,
    /// `nll[i] = -ln p(input_ids[i + 1] | input_ids[..=i])` (length `len - 1`).
    pub nll: Vec<f64>,
}

impl Scores {
    /// Number of predicted tokens.
    pub fn count(&self) -> usize {
        self.nll.len()
    }

    /// Mean NLL in nats per token.
    pub fn mean_nll(&self) -> f64 {
        if self.nll.is_empty() {
            return f64::NAN;
        }
        self.nll.iter().sum::<f64>() / self.nll.len() as f64
    }

    /// Token perplexity `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// Log-probabilities of `targets[i]` under `logits[i]`: `[N, V]`, `N` ids → `N` values.
pub fn target_log_probs(logits: Tensor<2>, targets: &[u32], device: &Device) -> Vec<f64> {
    let n = targets.len();
    let idx: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [n, 1]), device);
    let lp = log_probs_at(logits.unsqueeze_dim(0), idx.reshape([1, n])).reshape([n]);
    lp.into_data()
        .try_to_vec::<f32>()
        .map(|v| v.into_iter().map(f64::from).collect())
        .unwrap_or_default()
}

/// Scores `ids` with windows of at most `context` tokens moving by `stride` targets.
pub fn score_ids(
    model: &Gemma,
    ids: &[u32],
    context: usize,
    stride: usize,
    device: &Device,
) -> Result<Scores> {
    if ids.len() < 2 {
        return Err(GemmaError::InvalidInput(
            "scoring needs at least two tokens".into(),
        ));
    }
    if context < 2 || stride == 0 || stride >= context {
        return Err(GemmaError::InvalidInput(format!(
            "need context >= 2 and 0 < stride < context (got context {context}, stride {stride})"
        )));
    }
    model.check_ids(ids)?;
    let bos = model.config().bos_token_id;
    let n = ids.len();
    let mut nll = Vec::with_capacity(n - 1);
    let mut a = 1; // first target of the chunk
    while a < n {
        let b = (a + stride).min(n);
        // Window covers inputs s..b-1 (the last input predicts target b-1).
        let (s, prefix) = if b - 1 <= context {
            (0, false)
        } else {
            (b - context, true)
        };
        let mut input: Vec<u32> = Vec::with_capacity(context);
        if prefix {
            input.push(bos);
        }
        input.extend_from_slice(&ids[s..b - 1]);
        let off = usize::from(prefix);
        let t = input.len();
        let x = model.ids_tensor(&[input], device)?;
        let logits = model
            .forward(x, None)
            .logits
            .reshape([t, model.config().vocab_size]);
        // Target p is predicted at input index (p - 1 - s) + off.
        let first = a - 1 - s + off;
        let rows = logits.slice_dim(0, first..first + (b - a));
        let lp = target_log_probs(rows, &ids[a..b], device);
        nll.extend(lp.into_iter().map(|x| -x));
        a = b;
    }
    Ok(Scores {
        input_ids: ids.to_vec(),
        nll,
    })
}

/// `ln softmax(logits)` at `targets`: one gather minus [`log_sum_exp`], no `T × V`
/// log-probabilities written.
///
/// # Shapes
///
/// * `logits`: `[B, T, V]`; `targets`: `[B, T]` (valid ids)
/// * output: `[B, T]`
pub fn log_probs_at(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, _] = logits.dims();
    logits
        .clone()
        .gather(2, targets.reshape([b, t, 1]))
        .reshape([b, t])
        .sub(log_sum_exp(logits))
}

/// `ln Σ_v e^{z_v}` over the last axis, `[B, T, V] → [B, T]` (max-shifted: stable).
///
/// Over the LM head's logits this replaces a log-softmax: one gather per target minus this
/// gives the target's log-probability without writing `T × V` of them (BENCHMARKS.md,
/// "Log-sum-exp"). Differentiable; the shift is detached, which leaves the gradient
/// `softmax(z)` unchanged.
///
/// # Shapes
///
/// * `z`: `[B, T, V]`
/// * output: `[B, T]`
pub fn log_sum_exp(z: Tensor<3>) -> Tensor<2> {
    let [b, t, _] = z.dims();
    let top = z.clone().max_dim(2).detach();
    z.sub(top.clone())
        .exp()
        .sum_dim(2)
        .log()
        .add(top)
        .reshape([b, t])
}
