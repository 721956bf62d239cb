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
    FusionSpace, HippoFormerConfig, MemoryScoring, MemoryValue, QueryMode, SalienceMode,
};
pub use error::{HippoError, Result};
pub use fusion::{OutputFusion, ProbabilityMix};
pub use generate::{HippoGenerateOptions, HippoGeneration, generate};
pub use hippo_data::SegmentLayout;
pub use model::{
    HippoFormer, LogitPositions, LossTerms, Mixture, Salience, SegmentOutput, log_sum_exp,
    mix_logits,
};
pub use stream::{SegmentTensors, StreamRunner, StreamStep, reset_new_documents};
