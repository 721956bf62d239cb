//! The data layer: corpora → documents → cached token ids → batches of document streams.
//!
//! * [`corpus`]: [`CorpusSpec`] (`wiki-sample`, `sotu`, `txt-dir:<path>`,
//!   `wikitext-raw:<dir>`, `wikitext-hf:<dir>`), [`load_corpus`], and the deterministic
//!   by-document split ([`split_of_id`]: FNV-1a 64 of the id, `% 100`, 90/5/5).
//! * [`stats`]: [`TextStats`], words and bytes for word/byte perplexity.
//! * [`tokenize`]: the [`Tokenize`] seam (Gemma, and [`ByteTokenizer`] for tests).
//! * [`cache`]: [`TokenizedCorpus`], tokenised once, cached under `<cache>/tokens/<key>.bin`.
//! * [`batch`]: [`StreamBatcher`] (B independent document streams in segments of `seq_len`,
//!   resumable through [`BatcherState`]) and [`Segments`] for evaluation.

pub mod batch;
pub mod cache;
pub mod corpus;
pub mod error;
pub mod parquet;
pub mod stats;
pub mod tokenize;

pub use batch::{
    BatcherConfig, BatcherState, IGNORE_INDEX, PaddedSegment, RowState, Segment, SegmentBatch,
    SegmentLayout, Segments, StreamBatcher,
};
pub use cache::{CacheMeta, SourceDigest, TokenizedCorpus, TokenizedDoc};
pub use corpus::{
    CorpusSpec, Document, SourceFile, Split, default_home, fnv1a64, load_corpus, split_bucket,
    split_of_id,
};
pub use error::{DataError, Result};
pub use stats::TextStats;
pub use tokenize::{ByteTokenizer, Tokenize};
