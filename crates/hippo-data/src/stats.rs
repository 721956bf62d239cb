//! Word and byte counts for word- and byte-level perplexity.

use serde::{Deserialize, Serialize};

/// Size of a text for normalising a summed negative log-likelihood, as lm-evaluation-harness
/// defines it: `word_perplexity = exp(nll / words)`, `bits_per_byte = nll / (bytes · ln 2)`.
///
/// Counted on the exact text that is tokenised (BOS is not text and counts for neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextStats {
    /// Whitespace-separated words (`str::split_whitespace`).
    pub words: u64,
    /// UTF-8 bytes.
    pub bytes: u64,
}

impl TextStats {
    /// The counts of `text`.
    pub fn of(text: &str) -> Self {
        Self {
            words: text.split_whitespace().count() as u64,
            bytes: text.len() as u64,
        }
    }
}

impl std::ops::Add for TextStats {
    type Output = TextStats;

    fn add(self, rhs: TextStats) -> TextStats {
        TextStats {
            words: self.words + rhs.words,
            bytes: self.bytes + rhs.bytes,
        }
    }
}

impl std::ops::AddAssign for TextStats {
    fn add_assign(&mut self, rhs: TextStats) {
        *self = *self + rhs;
    }
}

impl std::iter::Sum for TextStats {
    fn sum<I: Iterator<Item = TextStats>>(iter: I) -> TextStats {
        iter.fold(TextStats::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_and_utf8_bytes() {
        let s = TextStats::of("  Hello,\twörld\n\nfoo  ");
        assert_eq!(s.words, 3);
        assert_eq!(s.bytes, 22);
        assert_eq!(TextStats::of(""), TextStats::default());
        let total: TextStats = [TextStats::of("a b"), TextStats::of("c")].into_iter().sum();
        assert_eq!(total, TextStats { words: 3, bytes: 4 });
    }
}
