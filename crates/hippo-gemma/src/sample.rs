//! Choosing the next token, and plain generation with the base model.
//!
//! [`Sampler`] turns one position's logits into a token id: greedy (arg-max, ties to the lowest
//! id) or sampled with temperature, top-k and top-p (nucleus), applied in that order as in
//! Hugging Face transformers. Randomness comes only from the sampler's own seeded [`StdRng`]
//! (never Burn's process-wide RNG), so the same seed and the same logits give the same tokens.
//!
//! [`generate`] runs the bare base model: the prompt is read once (prefill), then one token at a
//! time with the [`KvCache`](crate::KvCache), or — with `use_cache = false` — by recomputing the
//! whole sequence each step (the reference the cached path is checked against). Only the last
//! position goes through the LM head.
//!
//! Stop tokens end generation and are **not** emitted: they reach neither the callback nor
//! [`Generation::tokens`]; [`StopReason::StopToken`] says which one ended it.

use std::ops::ControlFlow;

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{GemmaError, Result};
use crate::model::Gemma;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits before sampling; must be finite and > 0 unless `greedy`.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None`: all); `Some(0)` is an error.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; in (0, 1].
    pub top_p: f64,
    /// Arg-max (ties to the lowest id); temperature, top-k, top-p and seed are then unused.
    pub greedy: bool,
    /// Seed of the sampler's RNG.
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// Temperature 1, no top-k, top-p 1, not greedy, seed 0: plain sampling from the model.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            greedy: false,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// Checks the values: temperature finite and > 0 (unless greedy), top-p in (0, 1],
    /// top-k ≥ 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GemmaError::InvalidInput(m));
        let temperature_ok = self.temperature.is_finite() && self.temperature > 0.0;
        if !self.greedy && !temperature_ok {
            return bad(format!(
                "temperature = {} must be finite and > 0 (use greedy decoding for temperature 0)",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p = {} must lie in (0, 1]", self.top_p));
        }
        if self.top_k == Some(0) {
            return bad("top_k must be ≥ 1 when given".into());
        }
        Ok(())
    }
}

/// Picks tokens from logits (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

/// Descending by value, ties to the lower id: a total order, so every selection is deterministic.
fn by_value_desc(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

impl Sampler {
    /// A sampler with a validated config, its RNG seeded with `config.seed`.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The next token from one position's logits `[V]`. NaN logits are an error; `-inf`
    /// excludes a token.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(GemmaError::InvalidInput("no logits to sample from".into()));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            let n = logits.iter().filter(|x| x.is_nan()).count();
            return Err(GemmaError::InvalidInput(format!(
                "the logits are NaN at {n} of {} vocabulary entries (first: token id {i})",
                logits.len()
            )));
        }
        if self.config.greedy {
            return Ok(argmax(logits));
        }
        let t = self.config.temperature;
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, f64::from(l) / t))
            .collect();
        if let Some(k) = self.config.top_k
            && k < cand.len()
        {
            cand.select_nth_unstable_by(k - 1, by_value_desc);
            cand.truncate(k);
            cand.sort_by(by_value_desc);
        }
        let max = cand.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return Err(GemmaError::InvalidInput(
                "every logit is -inf: nothing to sample".into(),
            ));
        }
        let mut total = 0.0;
        for c in &mut cand {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        for c in &mut cand {
            c.1 /= total;
        }
        if self.config.top_p < 1.0 {
            nucleus(&mut cand, self.config.top_p);
        }
        let mass: f64 = cand.iter().map(|c| c.1).sum();
        let mut u = self.rng.random::<f64>() * mass;
        for &(id, p) in &cand {
            if u < p {
                return Ok(id);
            }
            u -= p;
        }
        // Rounding left `u` just past the last candidate's share: the last one it is.
        Ok(cand
            .iter()
            .rev()
            .find(|c| c.1 > 0.0)
            .map_or(cand[0].0, |c| c.0))
    }

    /// The next token from logits `[1, T, V]` (or `[1, 1, V]`): the last position's.
    pub fn sample_last(&mut self, logits: Tensor<3>) -> Result<u32> {
        let [b, t, v] = logits.dims();
        if b != 1 || t == 0 {
            return Err(GemmaError::InvalidInput(format!(
                "sampling needs logits [1, T ≥ 1, V], got [{b}, {t}, {v}]"
            )));
        }
        let last = logits.slice_dim(1, t - 1..t).reshape([v]);
        let host = last
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| GemmaError::InvalidInput(format!("reading logits: {e:?}")))?;
        self.sample(&host)
    }
}

/// Index of the largest logit, ties to the lowest index.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Keeps the smallest set of most likely candidates whose probability reaches `p`, sorted by
/// probability (descending, ties to the lower id). `cand` holds probabilities summing to 1.
fn nucleus(cand: &mut Vec<(u32, f64)>, p: f64) {
    let n = cand.len();
    // Most of the mass usually sits in a few tokens: select a growing head instead of sorting
    // the whole vocabulary.
    let mut k = 64.min(n);
    loop {
        if k < n {
            cand.select_nth_unstable_by(k - 1, by_value_desc);
        }
        cand[..k].sort_by(by_value_desc);
        let mut acc = 0.0;
        let reached = cand[..k].iter().position(|c| {
            acc += c.1;
            acc >= p
        });
        if let Some(i) = reached {
            cand.truncate(i + 1);
            return;
        }
        if k == n {
            return;
        }
        k = (k * 4).min(n);
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` tokens were generated.
    MaxTokens,
    /// This stop token was sampled (it is not emitted).
    StopToken(u32),
    /// The callback returned [`ControlFlow::Break`] (after receiving the last emitted token).
    Callback,
    /// The sequence reached the model's `max_position_embeddings`.
    ContextFull,
}

/// Options of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    pub sampling: SamplingConfig,
    /// Tokens that end generation (not emitted).
    pub stop_tokens: Vec<u32>,
    /// Decode incrementally with the KV cache (`false`: recompute the whole sequence each step).
    pub use_cache: bool,
}

impl Default for GenerateOptions {
    /// 64 tokens, default sampling, no stop tokens, with the cache.
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            stop_tokens: Vec::new(),
            use_cache: true,
        }
    }
}

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generated ids (the prompt and any stop token excluded).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
}

fn ids_tensor(ids: &[u32], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(flat, [1, ids.len()]), device)
}

/// Generates a continuation of `prompt` with the bare base model (full context, no segments).
/// `on_token` receives each emitted token in order; returning [`ControlFlow::Break`] ends
/// generation after that token. The prompt must be non-empty and inside the vocabulary.
pub fn generate(
    model: &Gemma,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    let mut sampler = Sampler::new(options.sampling.clone())?;
    if prompt.is_empty() {
        return Err(GemmaError::InvalidInput(
            "the prompt needs at least one token".into(),
        ));
    }
    model.check_ids(prompt)?;
    let max_pos = model.config().max_position_embeddings;
    if prompt.len() > max_pos {
        return Err(GemmaError::InvalidInput(format!(
            "the prompt has {} tokens, more than the model's max_position_embeddings {max_pos}",
            prompt.len()
        )));
    }
    let device = model.embed_tokens.val().device();
    let mut cache = model.new_cache();
    let mut seq = prompt.to_vec();
    let mut tokens = Vec::new();
    // Hidden state of the last position read so far.
    let mut last_hidden = if options.use_cache {
        model.hidden_states(ids_tensor(prompt, &device), Some(&mut cache))
    } else {
        model.hidden_states(ids_tensor(prompt, &device), None)
    };
    let stop = loop {
        if tokens.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        let t = last_hidden.dims()[1];
        let logits = model.lm_head(last_hidden.slice_dim(1, t - 1..t));
        let next = sampler.sample_last(logits).map_err(|e| {
            let e = match e {
                GemmaError::InvalidInput(m) => m,
                e => e.to_string(),
            };
            GemmaError::InvalidInput(format!(
                "at stream position {} (prompt of {} tokens, {} generated): {e}",
                seq.len() - 1,
                prompt.len(),
                tokens.len()
            ))
        })?;
        if options.stop_tokens.contains(&next) {
            break StopReason::StopToken(next);
        }
        tokens.push(next);
        seq.push(next);
        if on_token(next).is_break() {
            break StopReason::Callback;
        }
        if tokens.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        if seq.len() >= max_pos {
            break StopReason::ContextFull;
        }
        last_hidden = if options.use_cache {
            model.hidden_states(ids_tensor(&[next], &device), Some(&mut cache))
        } else {
            model.hidden_states(ids_tensor(&seq, &device), None)
        };
    };
    Ok(Generation { tokens, stop })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sampler(c: SamplingConfig) -> Sampler {
        Sampler::new(c).unwrap()
    }

    #[test]
    fn bad_values_are_rejected_with_the_field_named() {
        for (c, needle) in [
            (
                SamplingConfig {
                    temperature: 0.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingConfig {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingConfig {
                    temperature: f64::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingConfig {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingConfig {
                    top_k: Some(0),
                    ..Default::default()
                },
                "top_k",
            ),
        ] {
            let e = Sampler::new(c.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{c:?} → {e}");
        }
        // Greedy does not need a temperature.
        Sampler::new(SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::greedy()
        })
        .unwrap();
        let e = sampler(SamplingConfig::greedy())
            .sample(&[0.0, f32::NAN])
            .unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }

    #[test]
    fn greedy_takes_the_lowest_maximum() {
        let mut s = sampler(SamplingConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 3.0]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_bounds_the_support() {
        let logits: Vec<f32> = (0..500).map(|i| ((i * 7919) % 503) as f32 / 50.0).collect();
        let best = argmax(&logits);
        let mut s = sampler(SamplingConfig {
            top_k: Some(1),
            temperature: 5.0,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&logits).unwrap(), best);
        }
        let mut sorted: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, f64::from(l)))
            .collect();
        sorted.sort_by(by_value_desc);
        let top5: Vec<u32> = sorted[..5].iter().map(|c| c.0).collect();
        let mut s = sampler(SamplingConfig {
            top_k: Some(5),
            temperature: 100.0,
            ..Default::default()
        });
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let t = s.sample(&logits).unwrap();
            assert!(top5.contains(&t), "{t} is outside the top 5");
            seen.insert(t);
        }
        assert_eq!(seen.len(), 5, "a near-flat top 5 should all be drawn");
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities ∝ 8, 4, 2, 1, 1 (sum 16): top_p 0.7 needs 8/16 + 4/16 = 0.75 → two tokens.
        let logits: Vec<f32> = [8.0f32, 4.0, 2.0, 1.0, 1.0]
            .iter()
            .map(|x| x.ln())
            .collect();
        let mut s = sampler(SamplingConfig {
            top_p: 0.7,
            seed: 3,
            ..Default::default()
        });
        let mut counts = [0usize; 5];
        for _ in 0..3000 {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[2..], [0, 0, 0], "{counts:?}");
        // Renormalised 2:1 inside the nucleus.
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((1.7..2.3).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_draws_and_another_seed_others() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 31) % 97) as f32 / 40.0).collect();
        let draw = |seed| {
            let mut s = sampler(SamplingConfig {
                seed,
                top_p: 0.95,
                ..Default::default()
            });
            (0..32)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [2.0f32, 1.0, 0.0];
        let frac_first = |t: f64| {
            let mut s = sampler(SamplingConfig {
                temperature: t,
                seed: 1,
                ..Default::default()
            });
            (0..4000)
                .filter(|_| s.sample(&logits).unwrap() == 0)
                .count() as f64
                / 4000.0
        };
        let (cold, warm, hot) = (frac_first(0.25), frac_first(1.0), frac_first(10.0));
        // Exact shares: 0.982, 0.665, 0.367.
        assert!(cold > 0.97, "{cold}");
        assert!((0.63..0.70).contains(&warm), "{warm}");
        assert!((0.33..0.40).contains(&hot), "{hot}");
    }
}
