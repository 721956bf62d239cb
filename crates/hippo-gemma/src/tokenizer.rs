//! The Gemma tokenizer (`tokenizer.json` through the `tokenizers` crate).
//!
//! Invariant: [`GemmaTokenizer::encode`] returns ids with BOS exactly once at the front when asked
//! for it, whatever the tokenizer's own post-processor would add.

use std::path::{Path, PathBuf};

use crate::error::{GemmaError, Result};

/// The byte range `[start, end)` of a token in the text it was encoded from.
pub type Span = (usize, usize);

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
        Ok(self.encode_with_offsets(text, add_bos)?.0)
    }

    /// [`Self::encode`] with the byte span `[start, end)` of each token in `text`; a BOS this
    /// adds has the empty span `(0, 0)`. The ids are exactly those of [`Self::encode`].
    pub fn encode_with_offsets(&self, text: &str, add_bos: bool) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let ids = enc.get_ids();
        // A BOS the tokenizer's post-processor added is dropped when we add our own.
        let skip = if add_bos {
            ids.iter().take_while(|&&id| id == self.bos).count()
        } else {
            0
        };
        let mut out = Vec::with_capacity(ids.len() + 1);
        let mut spans = Vec::with_capacity(ids.len() + 1);
        if add_bos {
            out.push(self.bos);
            spans.push((0, 0));
        }
        out.extend_from_slice(&ids[skip..]);
        spans.extend_from_slice(&enc.get_offsets()[skip..]);
        Ok((out, spans))
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

/// Feeds hippo-data's corpora and token cache: BOS prepended once; the fingerprint is the
/// sha256 of `tokenizer.json`'s bytes, so a changed tokenizer invalidates cached ids.
impl hippo_data::Tokenize for GemmaTokenizer {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        GemmaTokenizer::encode(self, text, true).map_err(|e| hippo_data::DataError::Tokenize {
            id: String::new(),
            message: e.to_string(),
        })
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        use sha2::{Digest, Sha256};
        let path = self.path();
        let bytes = std::fs::read(path).map_err(|e| hippo_data::DataError::io(path, e))?;
        Ok(format!(
            "gemma-tokenizer-json:sha256:{}",
            hex::encode(Sha256::digest(&bytes))
        ))
    }
}
