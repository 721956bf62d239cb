//! HippoFormer composed over Gemma: salience gate → drift calibrator → memory replay (a query per
//! position, from a per-stream buffer holding only earlier segments) → output fusion → the base
//! model's tied LM head.
//!
//! Invariants:
//! - **Causal**: logits at position t depend only on tokens ≤ t of the segment and on the state
//!   passed in; [`HippoFormer::forward`] never writes, [`HippoFormer::commit`] writes afterwards.
//! - **Per stream**: the [`hippo_memory::MemoryState`] has one buffer per batch row; callers reset
//!   a row between documents.
//! - **Identity at init**: fresh modules give exactly the base model's logits (drift A = I, b = 0;
//!   fusion opening tanh(0) = 0).
//!
//! # Example
//!
//! A tiny HippoFormer over a random tiny Gemma 3, streamed over two segments on the CPU: at init
//! its logits are the base model's even once memory holds the first segment.
//!
//! ```
//! use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
//! use hippo_gemma::{Gemma, GemmaConfig, GemmaFamily};
//! use hippo_model::{HippoFormer, HippoFormerConfig};
//!
//! let device = Device::flex();
//! let base = Gemma::random(&GemmaConfig::tiny(GemmaFamily::Gemma3), 0, &device)?;
//! let config = HippoFormerConfig {
//!     buffer_size: 16, // memory slots per stream
//!     max_replay_rounds: 3,
//!     lora_r: 4,
//!     n_anchors: 8,
//!     ..HippoFormerConfig::default()
//! };
//! let model = HippoFormer::new(base.clone(), config, &device)?;
//!
//! let (b, t) = (2, 8);
//! let mut state = model.empty_state(b, &device); // one buffer per stream, empty
//! for segment in 0..2 {
//!     // Every segment starts with BOS (2); the rest are arbitrary ids of the 64-token vocabulary.
//!     let rows: Vec<Vec<u32>> = (0..b as u32)
//!         .map(|r| {
//!             let body = (1..t as u32).map(|i| (i * 7 + r * 13 + segment * 5) % 60 + 3);
//!             std::iter::once(2).chain(body).collect()
//!         })
//!         .collect();
//!     let ids = base.ids_tensor(&rows, &device)?;
//!     let valid = Tensor::<2, Bool>::full([b, t], true, &device);
//!
//!     // Read the segment (memory holds only earlier segments), then commit it to memory.
//!     let out = model.forward(ids.clone(), valid.clone(), &state)?;
//!     assert_eq!(out.logits().dims(), [b, t, 64]);
//!     let want = base.forward(ids.clone(), None).logits;
//!     let diff = (out.logits() - want).abs().max().into_scalar::<f32>();
//!     assert!(diff <= 1e-5, "segment {segment}: |Δlogit| = {diff}");
//!
//!     // The training loss: next-token targets, −100 where there is none.
//!     let mut targets: Vec<i64> = Vec::new();
//!     for row in &rows {
//!         targets.extend(row[1..].iter().map(|&x| i64::from(x)));
//!         targets.push(-100);
//!     }
//!     let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [b, t]), &device);
//!     let loss = model.loss(&out, targets);
//!     assert_eq!(loss.tokens, b * (t - 1));
//!     assert!(loss.lm.into_scalar::<f32>().is_finite());
//!
//!     let (next, _written) = model.commit(state, &out)?;
//!     state = next;
//! }
//! // Memory was written, so the identity above was not vacuous.
//! assert!(model.memory.stats(&state).entries > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fusion;
pub mod generate;
pub mod import;
pub mod integrity;
pub mod model;
pub mod params;
pub mod stream;

pub use config::{
    FusionSpace, HippoFormerConfig, MemoryAttention, MemoryScoring, MemoryValue, QueryMode,
    SalienceMode, UsefulnessTarget,
};
pub use error::{HippoError, Result};
pub use fusion::{OutputFusion, ProbabilityMix};
pub use generate::{HippoGenerateOptions, HippoGeneration, generate};
pub use hippo_data::SegmentLayout;
pub use model::{
    BaseStates, HippoFormer, LogitPositions, LossTerms, Mixture, Salience, SegmentOutput,
    log_sum_exp, mix_logits,
};
pub use stream::{SegmentTensors, StreamRunner, StreamStep, reset_new_documents};
