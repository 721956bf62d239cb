//! How a token stream (a document, or a generated stream) is cut into segments.
//!
//! The base model sees one segment at a time with positions restarting at 0, so every segment
//! should look like the start of a text to it. Gemma is trained on texts that begin with BOS
//! and reads a segment that does not begin with BOS badly (measured on Gemma-3-270M, 5 wiki
//! articles, segments of 256: segment-1 NLL 4.76 without BOS, 3.15 with). With
//! [`SegmentLayout::bos`] set, every segment after the first therefore begins with BOS:
//!
//! - segment 0 is the stream's own first `L` tokens (a document starts with its BOS already);
//! - segment `k ≥ 1` is `[BOS]` followed by the next `L − 1` tokens of the stream. The BOS
//!   position predicts the first of those tokens, which the previous segment's last position
//!   predicted already, so it has no target (−100): no token is scored twice or skipped.
//!
//! Without `bos` (the contiguous layout) segment `k` is tokens `k·L .. (k+1)·L`.
//!
//! Training and evaluation ([`crate::StreamBatcher`], [`crate::Segments`]) and generation
//! (hippo-model's `generate`) all cut streams with this one type, so they agree position for
//! position; hippo-model's `HippoFormer::segment_layout` gives the layout of a model.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Segment length and the optional BOS that starts every later segment (see the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentLayout {
    /// Inputs per segment (`L`), the BOS prefix included.
    pub seq_len: usize,
    /// Token that begins every segment after the first; `None`: contiguous segments.
    pub bos: Option<u32>,
}

impl SegmentLayout {
    /// Contiguous segments of `seq_len` tokens.
    pub fn contiguous(seq_len: usize) -> Self {
        Self { seq_len, bos: None }
    }

    /// Segments of `seq_len` inputs, each after the first beginning with `bos`.
    pub fn with_bos(seq_len: usize, bos: u32) -> Self {
        Self {
            seq_len,
            bos: Some(bos),
        }
    }

    /// Why this layout cannot cut a stream: `seq_len` is 0, or 1 with a BOS prefix (a later
    /// segment would hold no token of the stream).
    pub fn check(&self) -> Result<(), String> {
        match (self.seq_len, self.bos) {
            (0, _) => Err("seq_len must be at least 1, found 0".into()),
            (1, Some(_)) => {
                Err("seq_len must be at least 2 when later segments begin with BOS, found 1".into())
            }
            _ => Ok(()),
        }
    }

    /// Inputs of segment `k` that are not stream tokens (1 for the BOS of a later segment).
    pub fn prefix(&self, k: usize) -> usize {
        usize::from(k > 0 && self.bos.is_some())
    }

    /// Stream tokens segment `k` holds when the stream is long enough.
    pub fn span(&self, k: usize) -> usize {
        self.seq_len.saturating_sub(self.prefix(k))
    }

    /// Stream position of segment `k`'s first stream token.
    pub fn start(&self, k: usize) -> usize {
        match (self.bos, k) {
            (_, 0) => 0,
            (None, k) => k.saturating_mul(self.seq_len),
            (Some(_), k) => self
                .seq_len
                .saturating_add((k - 1).saturating_mul(self.seq_len.saturating_sub(1))),
        }
    }

    /// Segments of a stream of `n` tokens (0 for an empty stream or an invalid layout).
    pub fn count(&self, n: usize) -> usize {
        if n == 0 || self.check().is_err() {
            return 0;
        }
        match self.bos {
            None => n.div_ceil(self.seq_len),
            Some(_) if n <= self.seq_len => 1,
            Some(_) => 1 + (n - self.seq_len).div_ceil(self.seq_len - 1),
        }
    }

    /// Stream positions of segment `k` in a stream of `n` tokens (empty past the last one).
    pub fn range(&self, k: usize, n: usize) -> Range<usize> {
        let start = self.start(k).min(n);
        start..start.saturating_add(self.span(k)).min(n)
    }

    /// Segment and input position of stream position `j`: `(k, p)` with
    /// `start(k) + p − prefix(k) = j`.
    pub fn locate(&self, j: usize) -> (usize, usize) {
        let l = self.seq_len.max(1);
        match self.bos {
            None => (j / l, j % l),
            Some(_) if j < l || l < 2 => (0, j),
            Some(_) => {
                let r = j - l;
                (1 + r / (l - 1), 1 + r % (l - 1))
            }
        }
    }

    /// The input ids of segment `k` of `ids`, the BOS prefix included (empty past the end).
    pub fn segment_ids(&self, ids: &[u32], k: usize) -> Vec<u32> {
        let r = self.range(k, ids.len());
        if r.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.seq_len);
        if let (1, Some(b)) = (self.prefix(k), self.bos) {
            out.push(b);
        }
        out.extend_from_slice(&ids[r]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream position lies in exactly one segment, in order, and `locate` inverts
    /// `start`/`prefix`, for both layouts and several lengths.
    #[test]
    fn segments_tile_the_stream() {
        for layout in [
            SegmentLayout::contiguous(1),
            SegmentLayout::contiguous(4),
            SegmentLayout::with_bos(2, 9),
            SegmentLayout::with_bos(4, 9),
            SegmentLayout::with_bos(5, 9),
        ] {
            for n in 0..40 {
                let count = layout.count(n);
                let mut next = 0;
                for k in 0..count {
                    let r = layout.range(k, n);
                    assert_eq!(r.start, next, "{layout:?} n={n} k={k}");
                    assert!(!r.is_empty(), "{layout:?} n={n} k={k}");
                    assert!(r.len() + layout.prefix(k) <= layout.seq_len);
                    for j in r.clone() {
                        assert_eq!(
                            layout.locate(j),
                            (k, j - r.start + layout.prefix(k)),
                            "{layout:?} j={j}"
                        );
                    }
                    next = r.end;
                }
                assert_eq!(next, n, "{layout:?} n={n}");
                assert!(layout.range(count, n).is_empty());
            }
        }
    }

    #[test]
    fn bos_layout_by_hand() {
        let l = SegmentLayout::with_bos(4, 2);
        let ids: Vec<u32> = (10..21).collect(); // 11 tokens
        // 0..4, then BOS + 3 each: 4..7, 7..10, 10..11.
        assert_eq!(l.count(11), 4);
        assert_eq!(l.segment_ids(&ids, 0), vec![10, 11, 12, 13]);
        assert_eq!(l.segment_ids(&ids, 1), vec![2, 14, 15, 16]);
        assert_eq!(l.segment_ids(&ids, 2), vec![2, 17, 18, 19]);
        assert_eq!(l.segment_ids(&ids, 3), vec![2, 20]);
        assert!(l.segment_ids(&ids, 4).is_empty());
        assert_eq!(l.locate(3), (0, 3));
        assert_eq!(l.locate(4), (1, 1));
        assert_eq!(l.locate(10), (3, 1));
        let c = SegmentLayout::contiguous(4);
        assert_eq!(c.count(11), 3);
        assert_eq!(c.segment_ids(&ids, 2), vec![18, 19, 20]);
    }

    #[test]
    fn invalid_layouts_are_named() {
        assert!(SegmentLayout::contiguous(0).check().is_err());
        assert!(SegmentLayout::with_bos(1, 2).check().is_err());
        assert!(SegmentLayout::contiguous(1).check().is_ok());
        assert_eq!(SegmentLayout::with_bos(1, 2).count(5), 0);
        assert_eq!(SegmentLayout::contiguous(0).count(5), 0);
    }
}
