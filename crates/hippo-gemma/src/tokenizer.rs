//! The Gemma tokenizer (`tokenizer.json` through the `tokenizers` crate).
//!
//! Invariant: [`GemmaTokenizer::encode`] returns ids with BOS exactly once at the front when asked
//! for it, whatever the tokenizer's own post-processor would add.

use std::path::{Path, PathBuf};

use crate::error::{GemmaError, Result};

/// A loaded `tokenizer.json`.
pub struct GemmaTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos: u32,
    eos: Vec<u32>,
}

impl std::fmt::Debug for GemmaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmaTokenizer")
            .field("path", &self.path)
            .field("bos", &self.bos)
            .finish()
    }
}

impl GemmaTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(GemmaError::Tokenizer {
                path: path.to_path_buf(),
                message:
                    "file not found (pass --tokenizer, or put tokenizer.json beside the model)"
                        .into(),
            });
        }
        let err = |message: String| GemmaError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        // JSON syntax first: tokenizers 0.22 panics (`expect("Helper")` in its decoder's
        // Deserialize) on some malformed JSON instead of returning an error (found by fuzzing).
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|e| err(format!("not valid JSON: {e}")))?;
        // And should another of its deserializers panic, that is an error about this file too.
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                err(format!("the tokenizers crate panicked reading it: {what}"))
            })?
            .map_err(|e| err(e.to_string()))?;
        let bos = inner.token_to_id("<bos>").unwrap_or(2);
        let eos = ["<eos>", "<end_of_turn>"]
            .iter()
            .filter_map(|t| inner.token_to_id(t))
            .collect();
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            bos,
            eos,
        })
    }

    /// Token ids of `text`; with `add_bos`, BOS is prepended exactly once.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_bos {
            out.push(self.bos);
        }
        out.extend(
            ids.iter()
                .copied()
                .skip_while(|&id| add_bos && id == self.bos),
        );
        Ok(out)
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// The BOS id.
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// End-of-sequence ids (`<eos>`, `<end_of_turn>` where present).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
