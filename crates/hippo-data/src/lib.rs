//! hippo-data: document streams for HippoFormer, without tensors.
//!
//! Corpora → documents → cached token ids → batches of document streams. Nothing here depends
//! on Burn: a batch is host data (ids, targets, flags), which hippo-model turns into tensors.
//!
//! * [`corpus`]: [`CorpusSpec`] (`wiki-sample`, `sotu`, `txt-dir:<path>`,
//!   `wikitext-raw:<dir>`, `wikitext-hf:<dir>`), [`load_corpus`], and the deterministic
//!   by-document split ([`split_of_id`]: FNV-1a 64 of the id, `% 100`, 90/5/5).
//! * [`stats`]: [`TextStats`], words and bytes for word/byte perplexity.
//! * [`tokenize`]: the [`Tokenize`] seam (Gemma, and [`ByteTokenizer`] for tests).
//! * [`cache`]: [`TokenizedCorpus`], tokenised once, cached under `<cache>/tokens/<key>.bin`.
//! * [`layout`]: [`SegmentLayout`], how a stream is cut into segments (a BOS before every
//!   segment after the first), shared by training, evaluation and generation.
//! * [`batch`]: [`StreamBatcher`] (B independent document streams in segments of `seq_len`,
//!   resumable through [`BatcherState`]) and [`Segments`] for evaluation.
//! * [`seed`]: SplitMix64, the one deterministic generator of the project.
//!
//! # Example
//!
//! Two documents, tokenised by bytes, read as two streams of 8-input segments with a BOS
//! before every later segment (whose position has no target):
//!
//! ```
//! use std::sync::Arc;
//! use hippo_data::{
//!     BatcherConfig, ByteTokenizer, Document, IGNORE_INDEX, SegmentLayout, Split,
//!     StreamBatcher, TokenizedCorpus,
//! };
//!
//! let doc = |id: &str, text: &str| Document {
//!     id: id.into(),
//!     title: id.into(),
//!     text: text.into(),
//!     source: "example".into(),
//!     url: None,
//! };
//! let docs = [doc("a", "a first short document"), doc("b", "and a second one")];
//! let corpus = TokenizedCorpus::build(&docs, &ByteTokenizer, "example", Split::Test)?;
//! assert_eq!(corpus.docs[0].tokens[0], ByteTokenizer::BOS); // BOS once, then bytes
//!
//! let layout = SegmentLayout::with_bos(8, ByteTokenizer::BOS);
//! let config = BatcherConfig::new(8, 2).with_layout(layout).with_min_tokens(2);
//! let batches: Vec<_> = StreamBatcher::new(Arc::new(corpus), config)?.collect();
//! // Row 0 carries document "a" (23 tokens): 3 segments; the first resets its memory.
//! assert_eq!(batches[0].doc_index[0], Some(0));
//! assert!(batches[0].reset[0] && !batches[1].reset[0]);
//! assert_eq!(batches[1].input_ids[0][0], ByteTokenizer::BOS);
//! assert_eq!(batches[1].targets[0][0], IGNORE_INDEX); // the BOS predicts nothing
//! // Every target is scored exactly once: 22 of "a" + 16 of "b".
//! let scored: usize = batches.iter().map(|b| b.num_targets()).sum();
//! assert_eq!(scored, 22 + 16);
//! # Ok::<(), hippo_data::DataError>(())
//! ```

pub mod batch;
pub mod cache;
pub mod corpus;
pub mod error;
pub mod layout;
pub mod parquet;
pub mod seed;
pub mod stats;
pub mod tokenize;

pub use batch::{
    BatcherConfig, BatcherState, IGNORE_INDEX, PaddedSegment, RowState, Segment, SegmentBatch,
    SegmentLayout, Segments, StreamBatcher,
};
pub use cache::{CacheMeta, SourceDigest, TokenizedCorpus, TokenizedDoc};
pub use corpus::{
    CorpusSpec, Document, SourceFile, Split, default_home, fnv1a64, hippo_home, load_corpus,
    split_bucket, split_of_id,
};
pub use error::{DataError, Result};
pub use stats::TextStats;
pub use tokenize::{ByteTokenizer, Tokenize};
