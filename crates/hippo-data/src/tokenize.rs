//! The tokeniser seam: [`Tokenize`], implemented here for a byte-level tokenizer for tests
//! and by hippo-gemma for its `GemmaTokenizer`.

use super::error::Result;

/// Turns a document's text into token ids.
pub trait Tokenize {
    /// Token ids of `text` with BOS prepended exactly once.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// A string that changes whenever the ids this tokenizer produces may change (for
    /// hippo-gemma's `GemmaTokenizer`: sha256 of `tokenizer.json`'s bytes).
    fn fingerprint(&self) -> Result<String>;
}

/// UTF-8 bytes as ids `0..=255`, BOS = 256: a tokenizer for tests and tooling.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// The BOS id.
    pub const BOS: u32 = 256;
}

impl Tokenize for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() + 1);
        ids.push(Self::BOS);
        ids.extend(text.bytes().map(u32::from));
        Ok(ids)
    }

    fn fingerprint(&self) -> Result<String> {
        Ok("byte-tokenizer:v1".to_owned())
    }
}

impl<T: Tokenize + ?Sized> Tokenize for &T {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        (**self).encode(text)
    }

    fn fingerprint(&self) -> Result<String> {
        (**self).fingerprint()
    }
}
