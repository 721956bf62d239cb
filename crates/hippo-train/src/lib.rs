//! hippo-train: training of the HippoFormer memory layer over a frozen Gemma LM.
//!
//! The document streams come from [`hippo_data`] (corpora, splits, token cache, a stream
//! batcher whose rows carry one document each across consecutive segments).
//! [`trainer`] is the training loop over those streams: AdamW with warmup and decay, gradient
//! accumulation, global-norm clipping, per-stream memory carried across segments, validation,
//! and atomic checkpoints that resume bit-identically. [`Trainer`] is the run as a value
//! (`new`, which resumes with `resume: true`; `step`; `save`; `run`); [`train_model`] runs one
//! to the end.
//!
//! # Example
//!
//! Two optimizer steps of a tiny HippoFormer over a random tiny Gemma 3, then a resume that
//! finds the run complete:
//!
//! ```
//! use std::sync::Arc;
//! use burn::tensor::Device;
//! use hippo_data::{Document, Split, Tokenize, TokenizedCorpus};
//! use hippo_gemma::{Gemma, GemmaConfig, GemmaFamily};
//! use hippo_model::HippoFormerConfig;
//! use hippo_train::{TrainOptions, Trainer};
//!
//! /// Bytes folded into the tiny model's vocabulary of 64 (BOS = 2).
//! struct Tiny;
//! impl Tokenize for Tiny {
//!     fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
//!         Ok(std::iter::once(2).chain(text.bytes().map(|b| u32::from(b) % 60 + 3)).collect())
//!     }
//!     fn fingerprint(&self) -> hippo_data::Result<String> {
//!         Ok("tiny".into())
//!     }
//! }
//!
//! let device = Device::flex();
//! let dir = tempfile::tempdir()?;
//! let base_file = dir.path().join("base.txt"); // stands in for the base model's file
//! std::fs::write(&base_file, "a random tiny Gemma 3, seed 0")?;
//! let base = Gemma::random(&GemmaConfig::tiny(GemmaFamily::Gemma3), 0, &device)?;
//! let docs: Vec<Document> = (0..4)
//!     .map(|i| Document {
//!         id: format!("d{i}"),
//!         title: String::new(),
//!         text: "the cat sat on the mat. ".repeat(3),
//!         source: "example".into(),
//!         url: None,
//!     })
//!     .collect();
//! let corpus = Arc::new(TokenizedCorpus::build(&docs, &Tiny, "example", Split::Train)?);
//! let config = HippoFormerConfig {
//!     buffer_size: 16,
//!     max_replay_rounds: 3,
//!     lora_r: 4,
//!     n_anchors: 8,
//!     ..HippoFormerConfig::default()
//! };
//! let opts = TrainOptions {
//!     seq_len: 16,
//!     batch_size: 2,
//!     max_steps: Some(2),
//!     checkpoint_every: 0,
//!     keep_last: 1,
//!     valid_every: 0,
//!     output_dir: dir.path().join("run"),
//!     ..TrainOptions::default()
//! };
//! let mut trainer = Trainer::new(
//!     base.clone(), &base_file, config.clone(), corpus.clone(), None, &opts, &device,
//! )?;
//! let first = trainer.step()?.ok_or("no first step")?;
//! assert_eq!(first.step, 1);
//! assert!(first.loss.is_finite() && first.targets > 0);
//! // The second step, then the final checkpoint.
//! let (_, summary) = trainer.run(&mut |_, _| {})?;
//! assert_eq!(summary.steps, 2);
//! assert!(summary.final_checkpoint.is_some());
//!
//! let again = TrainOptions { resume: true, ..opts };
//! let resumed = Trainer::new(base, &base_file, config, corpus, None, &again, &device)?;
//! assert_eq!(resumed.steps_done(), 2);
//! assert!(resumed.is_done());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod trainer;

pub use trainer::{
    LossValues, Schedule, StepMetrics, TrainError, TrainOptions, TrainSummary, Trainer, ValidPoint,
    train, train_model,
};
