//! The key/value cache for incremental decoding.
//!
//! Invariant: each layer's cache holds the keys and values of a contiguous run of absolute
//! positions `start..start + len` ending at the last token seen; a sliding-window layer keeps only
//! its last `window` positions (all a later query can see), a full layer keeps everything.

use burn::tensor::Tensor;

/// Cached keys and values of one layer, `[B, kv_heads, S, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    kv: Option<(Tensor<4>, Tensor<4>)>,
    start: usize,
}

impl LayerKv {
    /// Appends this step's keys/values (positions `pos..pos+T`), returns the keys and values to
    /// attend over and the absolute position of their first entry, then trims to the window.
    pub fn append(
        &mut self,
        k: Tensor<4>,
        v: Tensor<4>,
        pos: usize,
        window: Option<usize>,
    ) -> (Tensor<4>, Tensor<4>, usize) {
        let (k_all, v_all, start) = match self.kv.take() {
            Some((pk, pv)) => (
                Tensor::cat(vec![pk, k], 2),
                Tensor::cat(vec![pv, v], 2),
                self.start,
            ),
            None => (k, v, pos),
        };
        let len = k_all.dims()[2];
        let (keep_k, keep_v, keep_start) = match window {
            Some(w) if len > w => {
                let cut = len - w;
                (
                    k_all.clone().slice_dim(2, cut..len),
                    v_all.clone().slice_dim(2, cut..len),
                    start + cut,
                )
            }
            _ => (k_all.clone(), v_all.clone(), start),
        };
        self.kv = Some((keep_k, keep_v));
        self.start = keep_start;
        (k_all, v_all, start)
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-layer caches plus the number of tokens seen.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    seq_len: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            seq_len: 0,
        }
    }

    /// Tokens seen so far (the absolute position of the next token).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The cache of layer `i`.
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }

    /// The cache of layer `i`, read-only.
    pub fn layer(&self, i: usize) -> &LayerKv {
        &self.layers[i]
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.seq_len += t;
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        let n = self.layers.len();
        *self = Self::new(n);
    }
}
