//! Gemma 1, 2 and 3 (text) in Burn: the frozen base model HippoFormer reads hidden states from.
//!
//! - [`config`]: one [`GemmaConfig`] from a Hugging Face `config.json` (transformers 4.x or 5.x
//!   form) or from GGUF metadata.
//! - [`weights`]: safetensors (single or sharded, f32/bf16/f16) and GGUF (quantised types
//!   dequantised to f32) behind one [`WeightSource`] trait speaking Hugging Face names.
//! - [`model`]: the decoder ([`Gemma`]): full-sequence forward returning logits and the final
//!   hidden states, and incremental decoding with a [`KvCache`].
//! - [`load`]: resolving a model argument (dir, `.gguf`, HF repo id in the local cache).
//! - [`tokenizer`]: `tokenizer.json`, BOS added exactly once.
//! - [`precision`]: bf16 mixed precision for the matmuls ([`Precision`], [`Gemma::with_precision`]).
//! - [`lora`]: LoRA adapters on chosen projections (Burn's built-in `Lora`).
//! - [`score`]: per-token negative log-likelihood with a rolling window.
//! - [`sample`]: seeded sampling (greedy, temperature, top-k, top-p) and base-model generation.
//!
//! Architecture invariant: this crate knows nothing about memory, salience or training loops.
//! It does no I/O beyond reading the files it is given.
//!
//! # Example
//!
//! A tiny randomly initialised Gemma 3 (no checkpoint needed), a full forward, and incremental
//! decoding with a KV cache, on the CPU:
//!
//! ```
//! use burn::tensor::Device;
//! use hippo_gemma::{Gemma, GemmaConfig, GemmaFamily};
//!
//! let device = Device::flex();
//! let config = GemmaConfig::tiny(GemmaFamily::Gemma3); // 2 layers, width 32, vocabulary 64
//! let model = Gemma::random(&config, 0, &device)?;
//!
//! // Two rows of five ids (BOS = 2 first); `ids_tensor` checks every id against the vocabulary.
//! let ids = model.ids_tensor(&[vec![2, 10, 11, 12, 13], vec![2, 20, 21, 22, 23]], &device)?;
//! let out = model.forward(ids.clone(), None);
//! assert_eq!(out.logits.dims(), [2, 5, 64]); // [B, T, vocab]
//! assert_eq!(out.hidden.dims(), [2, 5, 32]); // [B, T, hidden], after the final norm
//!
//! // A prefill of four tokens, then one token with the cache: the full forward's logits.
//! let mut cache = model.new_cache();
//! model.forward(ids.clone().slice_dim(1, 0..4), Some(&mut cache));
//! let step = model.forward(ids.slice_dim(1, 4..5), Some(&mut cache)).logits;
//! assert_eq!(cache.seq_len(), 5);
//! let full = out.logits.slice_dim(1, 4..5);
//! let diff = (step - full).abs().max().into_scalar::<f32>();
//! assert!(diff < 1e-4, "cached vs full |Δlogit| = {diff}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cache;
pub mod config;
pub mod error;
pub mod gguf_check;
pub mod load;
pub mod lora;
pub mod model;
pub mod precision;
pub mod sample;
pub mod score;
pub mod tokenizer;
pub mod weights;

pub use cache::KvCache;
pub use config::{Activation, GemmaConfig, GemmaFamily, LayerType, Rope};
pub use error::{GemmaError, Result};
pub use load::{LoadedModel, ModelLocation, load, load_from, resolve};
pub use model::{Gemma, GemmaOutput, LayerKeysValues, LayerMemory};
pub use precision::Precision;
pub use sample::{GenerateOptions, Generation, Sampler, SamplingConfig, StopReason};
pub use tokenizer::GemmaTokenizer;
pub use weights::{GgufWeights, RawTensor, SafetensorsWeights, WeightSource};
