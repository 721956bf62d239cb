//! Errors of the composed model.

/// What can go wrong building or running a HippoFormer.
#[derive(Debug, thiserror::Error)]
pub enum HippoError {
    /// A configuration value is invalid.
    #[error("invalid HippoFormer config ({origin}): {message}")]
    Config {
        /// The file or "config".
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The base model failed.
    #[error(transparent)]
    Gemma(#[from] hippo_gemma::GemmaError),
    /// The salience gate failed.
    #[error(transparent)]
    Salience(#[from] hippo_salience::SalienceError),
    /// The memory failed.
    #[error(transparent)]
    Memory(#[from] hippo_memory::MemoryError),
    /// The drift calibrator failed.
    #[error(transparent)]
    Drift(#[from] hippo_drift::DriftError),
    /// A checkpoint could not be read or written, or does not fit the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor of a reference checkpoint does not fit the model it is imported into.
    #[error(transparent)]
    ImportShape(Box<ShapeMismatch>),
    /// Invalid input to a call.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, HippoError>;

/// A reference checkpoint tensor whose shape does not fit our parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "reference checkpoint {path}: `{key}` has shape {found:?}, which does not give our `{ours}` \
     its shape {expected:?} (rule: {rule})"
)]
pub struct ShapeMismatch {
    /// The checkpoint path.
    pub path: String,
    /// The reference key.
    pub key: String,
    /// Its shape in the checkpoint.
    pub found: Vec<usize>,
    /// Our parameter path.
    pub ours: String,
    /// Our parameter's shape.
    pub expected: Vec<usize>,
    /// The conversion rule.
    pub rule: String,
}
