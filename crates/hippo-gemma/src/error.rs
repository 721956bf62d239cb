//! Errors of the Gemma crate: every variant names the file, tensor or key it is about.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading or running a Gemma model.
#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration file or GGUF metadata is invalid.
    #[error("invalid config in {origin}: {message}")]
    Config {
        /// Where the config came from (a path or a description).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The architecture is not a Gemma text model this crate implements.
    #[error(
        "unknown architecture `{found}` in {origin}: supported are gemma (Gemma 1), gemma2, gemma3_text / gemma3 (Gemma 3 text)"
    )]
    UnknownArchitecture {
        /// Where the config came from.
        origin: String,
        /// The architecture string that was found.
        found: String,
    },
    /// A weight file is malformed (truncated, corrupt header, bad dtype, ...).
    #[error("corrupt or unreadable weight file {path}: {message}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from {origin}")]
    MissingTensor {
        /// The tensor name, as the checkpoint would spell it.
        name: String,
        /// The checkpoint.
        origin: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` in {origin} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The checkpoint.
        origin: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// The model could not be found.
    #[error("model not found: {0}")]
    ModelNotFound(String),
    /// A token id is outside the vocabulary.
    #[error(
        "token id {id} at position {position} is out of range for a vocabulary of {vocab_size}"
    )]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Its position in the input.
        position: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// Invalid input to a model call (empty input, ragged batch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tokenizer failed to load or run.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, GemmaError>;

impl GemmaError {
    pub(crate) fn config(origin: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Self::Config {
            origin: origin.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::CorruptWeights {
            path: path.into(),
            message: message.into(),
        }
    }
}
