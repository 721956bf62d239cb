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
pub use model::{Gemma, GemmaOutput};
pub use precision::Precision;
pub use sample::{GenerateOptions, Generation, Sampler, SamplingConfig, StopReason};
pub use tokenizer::GemmaTokenizer;
pub use weights::{GgufWeights, RawTensor, SafetensorsWeights, WeightSource};
