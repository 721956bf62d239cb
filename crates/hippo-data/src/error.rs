//! Errors of the data layer.

use std::path::PathBuf;

/// How to get the default corpora and tokenizer.
pub const ASSETS_HINT: &str = "run `cargo xtask assets` to fetch the corpora and the tokenizer \
                               into the asset cache ($HIPPO_HOME, else <user cache>/hippoformer)";

/// Errors of corpus loading, tokenisation, the token cache and batching.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A corpus spec string that names no known corpus.
    #[error(
        "unknown corpus `{spec}`: expected `wiki-sample`, `sotu`, `txt-dir:<path>`, \
         `wikitext-raw:<dir>` or `wikitext-hf:<dir>`"
    )]
    UnknownCorpus {
        /// The string as given.
        spec: String,
    },
    /// A corpus spec of the form `kind:<path>` with an empty path.
    #[error("corpus `{spec}` needs a path after `:` (e.g. `{kind}:/data/corpus`)")]
    MissingSpecPath {
        /// The string as given.
        spec: String,
        /// The kind before the colon.
        kind: String,
    },
    /// A split name that is not `train`, `valid` or `test`.
    #[error("unknown split `{name}`: expected `train`, `valid` (or `validation`) or `test`")]
    UnknownSplit {
        /// The string as given.
        name: String,
    },
    /// No asset cache directory could be determined.
    #[error("no asset cache directory: set HIPPO_HOME (or HOME); then {ASSETS_HINT}")]
    NoHome,
    /// A required file or directory is absent.
    #[error("{what} not found at {}: {hint}", path.display())]
    Missing {
        /// What was looked for.
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// An I/O failure on a path.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A corpus file that is not UTF-8.
    #[error("{} is not valid UTF-8 (first bad byte at offset {offset})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A `<doc ...>` wrapper that cannot be parsed.
    #[error("malformed <doc> wrapper in {} at line {line}: {message}", path.display())]
    BadDoc {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// A Parquet file that cannot be read as a WikiText split.
    #[error("cannot read Parquet file {}: {message}", path.display())]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A corpus whose sources hold no (non-empty) document.
    #[error("corpus `{spec}` at {} has no non-empty document; {hint}", path.display())]
    EmptyCorpus {
        /// The corpus spec.
        spec: String,
        /// The file or directory read.
        path: PathBuf,
        /// How to get the data.
        hint: String,
    },
    /// A split of a corpus that received no document.
    #[error("split `{split}` of corpus `{spec}` has no document (of {total} documents loaded)")]
    EmptySplit {
        /// The corpus spec.
        spec: String,
        /// The split asked for.
        split: String,
        /// Documents in the corpus across all splits.
        total: usize,
    },
    /// The tokenizer failed on a document.
    #[error("tokenizer failed on document `{id}`: {message}")]
    Tokenize {
        /// Id of the document.
        id: String,
        /// The tokenizer's message.
        message: String,
    },
    /// A token cache file that is not what its name promises.
    #[error("token cache {} is invalid: {message}", path.display())]
    BadCache {
        /// The cache file.
        path: PathBuf,
        /// Expected vs found.
        message: String,
    },
    /// A token id the model cannot read: the tokenizer does not match the model.
    #[error(
        "token id {id} of document `{doc}` is outside the model's vocabulary of {vocab_size}: the \
         tokenizer does not match the model"
    )]
    OutOfVocabulary {
        /// The id.
        id: u32,
        /// Id of the document holding it.
        doc: String,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A batcher configuration that cannot work.
    #[error("invalid stream batcher configuration: {0}")]
    BadConfig(String),
    /// A saved batcher state that does not belong to this corpus and configuration.
    #[error("batcher state does not fit this batcher: {0}")]
    BadState(String),
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of the data layer.
pub type Result<T> = std::result::Result<T, DataError>;
