//! hippo-train: training of the HippoFormer memory layer over a frozen Gemma LM.
//!
//! [`data`] reads corpora as document streams: loading and splitting corpora, a token cache,
//! and a stream batcher whose rows carry one document each across consecutive segments.

pub mod data;
