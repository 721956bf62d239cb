//! hippo-train: training of the HippoFormer memory layer over a frozen Gemma LM.
//!
//! [`data`] reads corpora as document streams: loading and splitting corpora, a token cache,
//! and a stream batcher whose rows carry one document each across consecutive segments.
//! [`trainer`] is the training loop over those streams: AdamW with warmup and decay, gradient
//! accumulation, global-norm clipping, per-stream memory carried across segments, validation,
//! and atomic checkpoints that resume bit-identically.

pub mod data;
pub mod trainer;

pub use trainer::{
    Schedule, StepMetrics, TrainError, TrainOptions, TrainSummary, ValidPoint, train, train_model,
};
