//! Documents as streams of fixed-length segments, batched as `B` independent streams.
//!
//! A document of `n` tokens is walked in segments as its [`SegmentLayout`] cuts it: contiguous
//! (segment `k` holds `tokens[k·L .. min((k+1)·L, n)]`), or — with [`BatcherConfig::bos`], as
//! the trainer and the evaluator use it — with every segment after the first beginning with
//! BOS, followed by the next `L − 1` tokens. Each document token at input position `p` has the
//! target `tokens[p + 1]`, or none ([`IGNORE_INDEX`]) at the document's last token; the BOS
//! prefix of a later segment has none either (its next token was the previous segment's last
//! target). Document tokens never overlap and are never skipped, so every target is scored
//! exactly once; only the last segment is short, and it is padded (`valid = false`, target
//! [`IGNORE_INDEX`]). A document can therefore end with a segment of one valid input and no
//! target; [`SegmentBatch::num_targets`] tells.
//!
//! [`StreamBatcher`] keeps `B` rows. Each row holds one document and emits its segments in
//! order, one per batch; when it has emitted the last one, the row takes the next document of
//! the epoch's order and `reset` is set for it (the caller resets that row's memory). When the
//! order is exhausted, rows with nothing left are fully padded (`valid` all false, `reset`
//! true, `doc_index` `None`) until every row is done; then the epoch ends (no all-padding batch
//! is emitted) and the next one starts with every row reset.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::layout::SegmentLayout;

use super::cache::TokenizedCorpus;
use super::error::{DataError, Result};
use super::seed::SplitMix64;

/// Target value of positions without a target (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One segment of one document (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Segment number within the document, from 0.
    pub index: usize,
    /// Position of the first document token in the document.
    pub start: usize,
    /// The token read before the document tokens (BOS of a later segment), without a target.
    pub prefix: Option<u32>,
    /// Document tokens read: `tokens[start .. start + inputs.len()]`; with the prefix, at most
    /// `seq_len` inputs in all.
    pub inputs: &'a [u32],
    /// Next-token ids: `targets[i]` is the target of `inputs[i]`; one shorter than `inputs`
    /// in the document's last segment.
    pub targets: &'a [u32],
    /// The targets of the document's later segments, in order: the document tokens after
    /// `targets` (empty in the last segment). A training-only label reads them
    /// ([`PaddedSegment::recurs_in`]); no input is made from them.
    pub later: &'a [u32],
}

/// A segment padded to `seq_len`: one batch row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedSegment {
    /// Input ids, `pad_id` past the document's end.
    pub input_ids: Vec<u32>,
    /// Target ids, [`IGNORE_INDEX`] where there is none.
    pub targets: Vec<i64>,
    /// Whether each input is a real token.
    pub valid: Vec<bool>,
    /// Per position: how many of the document's later targets ([`Segment::later`]) come before
    /// the first that equals this position's target (0: the first target of the next
    /// segment), or −1 where the target does not recur after this segment or there is none.
    /// A memory entry written at this position offers its target to later segments, so this
    /// says whether, and how soon, that offer can be taken up: a training-only label (it
    /// reads the future of the document), never an input.
    pub recurs_in: Vec<i64>,
}

impl Segment<'_> {
    /// Whether this is the document's first segment (its memory starts empty).
    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The input ids: the prefix, if any, then the document tokens.
    pub fn row_ids(&self) -> Vec<u32> {
        self.prefix.iter().chain(self.inputs).copied().collect()
    }

    /// Pads the segment to `seq_len` (which must be at least the number of inputs).
    pub fn padded(&self, seq_len: usize, pad_id: u32) -> PaddedSegment {
        let mut out = PaddedSegment {
            input_ids: vec![pad_id; seq_len],
            targets: vec![IGNORE_INDEX; seq_len],
            valid: vec![false; seq_len],
            recurs_in: vec![-1; seq_len],
        };
        for (i, t) in self.row_ids().into_iter().take(seq_len).enumerate() {
            out.input_ids[i] = t;
            out.valid[i] = true;
        }
        let offset = usize::from(self.prefix.is_some());
        for (i, &t) in self.targets.iter().enumerate() {
            if let Some(slot) = out.targets.get_mut(offset + i) {
                *slot = i64::from(t);
            }
        }
        let first = self.first_later_occurrences();
        for (i, t) in self.targets.iter().enumerate() {
            if let (Some(slot), Some(&d)) = (out.recurs_in.get_mut(offset + i), first.get(t)) {
                *slot = d as i64;
            }
        }
        out
    }

    /// For each distinct target of this segment that recurs in [`Segment::later`], the index
    /// of its first occurrence there. One pass over `later`, stopped once every target is
    /// found.
    fn first_later_occurrences(&self) -> std::collections::HashMap<u32, usize> {
        let wanted: std::collections::HashSet<u32> = self.targets.iter().copied().collect();
        let mut first = std::collections::HashMap::with_capacity(wanted.len());
        for (j, t) in self.later.iter().enumerate() {
            if first.len() == wanted.len() {
                break;
            }
            if wanted.contains(t) {
                first.entry(*t).or_insert(j);
            }
        }
        first
    }
}

/// Walks one document in the segments of a [`SegmentLayout`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    ids: &'a [u32],
    layout: SegmentLayout,
    next: usize,
}

impl<'a> Segments<'a> {
    /// The segments of the document `ids`; an invalid layout (`seq_len` 0) yields none.
    pub fn of_document(ids: &'a [u32], layout: SegmentLayout) -> Self {
        Self {
            ids,
            layout,
            next: 0,
        }
    }

    /// Segment `k`, if the document has one.
    pub fn get(ids: &'a [u32], layout: SegmentLayout, k: usize) -> Option<Segment<'a>> {
        if k >= layout.count(ids.len()) {
            return None;
        }
        let r = layout.range(k, ids.len());
        Some(Segment {
            index: k,
            start: r.start,
            prefix: if layout.prefix(k) == 1 {
                layout.bos
            } else {
                None
            },
            inputs: &ids[r.clone()],
            targets: &ids[r.start + 1..(r.end + 1).min(ids.len())],
            later: &ids[(r.end + 1).min(ids.len())..],
        })
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let s = Segments::get(self.ids, self.layout, self.next)?;
        self.next += 1;
        Some(s)
    }
}

/// Settings of a [`StreamBatcher`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherConfig {
    /// Tokens per segment (`L`).
    pub seq_len: usize,
    /// Rows (independent streams) per batch (`B`).
    pub batch_size: usize,
    /// Documents with fewer tokens (BOS included) are skipped; default `seq_len + 1`, one full
    /// segment of inputs with all targets. At least 2.
    pub min_tokens: usize,
    /// Shuffle the document order at the start of every epoch.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Number of epochs; `None` for endless.
    pub epochs: Option<usize>,
    /// Input id of padding positions.
    pub pad_id: u32,
    /// The token that begins every segment after a document's first (see the
    /// [module docs](self)); `None`: contiguous segments.
    #[serde(default)]
    pub bos: Option<u32>,
}

impl BatcherConfig {
    /// `seq_len` × `batch_size`, no shuffle, one epoch, `min_tokens = seq_len + 1`, pad id 0,
    /// contiguous segments.
    pub fn new(seq_len: usize, batch_size: usize) -> Self {
        Self {
            seq_len,
            batch_size,
            min_tokens: seq_len.saturating_add(1),
            shuffle: false,
            seed: 0,
            epochs: Some(1),
            pad_id: 0,
            bos: None,
        }
    }

    /// The batcher of `layout`'s segments: its `seq_len` and BOS prefix.
    pub fn with_layout(mut self, layout: SegmentLayout) -> Self {
        self.seq_len = layout.seq_len;
        self.bos = layout.bos;
        self
    }

    /// How documents are cut.
    pub fn layout(&self) -> SegmentLayout {
        SegmentLayout {
            seq_len: self.seq_len,
            bos: self.bos,
        }
    }

    /// Shuffles the document order each epoch, seeded.
    pub fn with_shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Sets the number of epochs (`None`: endless).
    pub fn with_epochs(mut self, epochs: Option<usize>) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the minimum document length in tokens.
    pub fn with_min_tokens(mut self, min_tokens: usize) -> Self {
        self.min_tokens = min_tokens;
        self
    }

    /// Sets the padding input id.
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    fn validate(&self) -> Result<()> {
        self.layout().check().map_err(DataError::BadConfig)?;
        if self.batch_size == 0 {
            return Err(DataError::BadConfig(
                "batch_size must be at least 1, found 0".into(),
            ));
        }
        if self.min_tokens < 2 {
            return Err(DataError::BadConfig(format!(
                "min_tokens must be at least 2 (one input with a target), found {}",
                self.min_tokens
            )));
        }
        Ok(())
    }

    /// Equal but for `epochs`, which a resumed run may change.
    fn same_stream(&self, other: &BatcherConfig) -> bool {
        BatcherConfig {
            epochs: None,
            ..self.clone()
        } == BatcherConfig {
            epochs: None,
            ..other.clone()
        }
    }
}

/// One step of `B` streams (`[B][seq_len]` everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentBatch {
    /// Input ids; `pad_id` where not valid.
    pub input_ids: Vec<Vec<u32>>,
    /// Next-token ids; [`IGNORE_INDEX`] past the end of the document and on padding.
    pub targets: Vec<Vec<i64>>,
    /// Whether each input is a real token.
    pub valid: Vec<Vec<bool>>,
    /// When each position's target recurs after its segment ([`PaddedSegment::recurs_in`]):
    /// a training-only label, −1 where it does not.
    pub recurs_in: Vec<Vec<i64>>,
    /// Per row: it starts a new document, or is padding; the caller resets its memory.
    pub reset: Vec<bool>,
    /// Per row: index of its document in the corpus, `None` for a padding row.
    pub doc_index: Vec<Option<usize>>,
    /// Per row: segment number within its document (0 for padding rows).
    pub segment_index: Vec<usize>,
    /// Epoch this batch belongs to, from 0.
    pub epoch: usize,
}

impl SegmentBatch {
    /// Rows (`B`).
    pub fn batch_size(&self) -> usize {
        self.input_ids.len()
    }

    /// Positions per row (`L`).
    pub fn seq_len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// A batch of one stream reading `segment` of document `doc`, unpadded (`seq_len` = its
    /// number of inputs); `reset` is set on the document's first segment.
    pub fn single(segment: &Segment<'_>, doc: usize) -> SegmentBatch {
        let n = segment.prefix.iter().count() + segment.inputs.len();
        let row = segment.padded(n, 0);
        SegmentBatch {
            input_ids: vec![row.input_ids],
            targets: vec![row.targets],
            valid: vec![row.valid],
            recurs_in: vec![row.recurs_in],
            reset: vec![segment.is_first()],
            doc_index: vec![Some(doc)],
            segment_index: vec![segment.index],
            epoch: 0,
        }
    }

    /// The rows `rows` of this batch, as a batch of their own (data-parallel shards).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> SegmentBatch {
        SegmentBatch {
            input_ids: self.input_ids[rows.clone()].to_vec(),
            targets: self.targets[rows.clone()].to_vec(),
            valid: self.valid[rows.clone()].to_vec(),
            recurs_in: self.recurs_in[rows.clone()].to_vec(),
            reset: self.reset[rows.clone()].to_vec(),
            doc_index: self.doc_index[rows.clone()].to_vec(),
            segment_index: self.segment_index[rows].to_vec(),
            epoch: self.epoch,
        }
    }

    /// Positions with a target (the loss's denominator); can be 0.
    pub fn num_targets(&self) -> usize {
        self.targets
            .iter()
            .flatten()
            .filter(|&&t| t != IGNORE_INDEX)
            .count()
    }

    /// Real input tokens.
    pub fn num_valid(&self) -> usize {
        self.valid.iter().flatten().filter(|&&v| v).count()
    }

    /// Input ids row-major as `i64` (`B·L`), for an integer tensor.
    pub fn input_ids_flat(&self) -> Vec<i64> {
        self.input_ids
            .iter()
            .flatten()
            .map(|&t| i64::from(t))
            .collect()
    }

    /// Targets row-major (`B·L`).
    pub fn targets_flat(&self) -> Vec<i64> {
        self.targets.iter().flatten().copied().collect()
    }

    /// [`SegmentBatch::recurs_in`] row-major (`B·L`).
    pub fn recurs_in_flat(&self) -> Vec<i64> {
        self.recurs_in.iter().flatten().copied().collect()
    }
}

/// Position of one row: its document and the next segment to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowState {
    /// Corpus index of the row's document; `None` when the row has none.
    pub doc: Option<usize>,
    /// Next segment of that document to emit.
    pub segment: usize,
}

/// Where a [`StreamBatcher`] stands; restoring it continues the exact sequence of batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// The configuration it was taken under.
    pub config: BatcherConfig,
    /// Cache key of the corpus.
    pub corpus_key: String,
    /// Documents in the corpus.
    pub num_docs: usize,
    /// Current epoch (the next one when `in_epoch` is false).
    pub epoch: usize,
    /// Whether an epoch is under way.
    pub in_epoch: bool,
    /// Whether every epoch is done.
    pub finished: bool,
    /// Position in the epoch's document order of the next document to hand to a row.
    pub next_doc: usize,
    /// Each row's position.
    pub rows: Vec<RowState>,
    /// Shuffle RNG state at the start of the current epoch (before its shuffle).
    pub epoch_rng: u64,
    /// Shuffle RNG state now.
    pub rng: u64,
    /// Batches emitted so far, all epochs.
    pub batches: u64,
}

/// Batches of `B` document streams over a [`TokenizedCorpus`] (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct StreamBatcher {
    corpus: Arc<TokenizedCorpus>,
    config: BatcherConfig,
    eligible: Vec<usize>,
    skipped: usize,
    order: Vec<usize>,
    epoch: usize,
    in_epoch: bool,
    finished: bool,
    next_doc: usize,
    rows: Vec<RowState>,
    epoch_rng: u64,
    rng: SplitMix64,
    batches: u64,
}

impl StreamBatcher {
    /// A batcher at the start of epoch 0. Documents shorter than `min_tokens` are skipped
    /// (counted in [`StreamBatcher::skipped`], with a warning); it is an error if none is left.
    pub fn new(corpus: Arc<TokenizedCorpus>, config: BatcherConfig) -> Result<Self> {
        config.validate()?;
        let eligible: Vec<usize> = corpus
            .docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.tokens.len() >= config.min_tokens)
            .map(|(i, _)| i)
            .collect();
        let skipped = corpus.len() - eligible.len();
        if eligible.is_empty() {
            return Err(DataError::BadConfig(format!(
                "no document of `{}` ({}) has at least min_tokens = {} tokens ({} documents)",
                corpus.spec,
                corpus.split,
                config.min_tokens,
                corpus.len()
            )));
        }
        if skipped > 0 {
            tracing::warn!(
                corpus = %corpus.spec, split = %corpus.split, skipped, total = corpus.len(),
                min_tokens = config.min_tokens,
                "skipped documents shorter than min_tokens"
            );
        }
        let rng = SplitMix64(config.seed);
        Ok(Self {
            rows: vec![
                RowState {
                    doc: None,
                    segment: 0
                };
                config.batch_size
            ],
            corpus,
            eligible,
            skipped,
            order: Vec::new(),
            epoch: 0,
            in_epoch: false,
            finished: false,
            next_doc: 0,
            epoch_rng: rng.0,
            rng,
            batches: 0,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// The corpus.
    pub fn corpus(&self) -> &Arc<TokenizedCorpus> {
        &self.corpus
    }

    /// Documents skipped as shorter than `min_tokens`.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Documents streamed each epoch.
    pub fn num_eligible(&self) -> usize {
        self.eligible.len()
    }

    /// Row-segments per epoch (`Σ count(n)` over streamed documents, `ceil(n / L)` for
    /// contiguous segments); an epoch has at least `ceil(segments / B)` batches.
    pub fn segments_per_epoch(&self) -> usize {
        let layout = self.config.layout();
        self.eligible
            .iter()
            .map(|&i| layout.count(self.corpus.docs[i].tokens.len()))
            .sum()
    }

    /// The current epoch (the next one between epochs).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Where the batcher stands.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            config: self.config.clone(),
            corpus_key: self.corpus.key.clone(),
            num_docs: self.corpus.len(),
            epoch: self.epoch,
            in_epoch: self.in_epoch,
            finished: self.finished,
            next_doc: self.next_doc,
            rows: self.rows.clone(),
            epoch_rng: self.epoch_rng,
            rng: self.rng.0,
            batches: self.batches,
        }
    }

    /// Continues from `state`, taken from a batcher over the same corpus and configuration
    /// (`epochs` may differ).
    pub fn restore(&mut self, state: &BatcherState) -> Result<()> {
        let bad = |m: String| Err(DataError::BadState(m));
        if !self.config.same_stream(&state.config) {
            return bad(format!(
                "expected configuration {:?}, found {:?}",
                self.config, state.config
            ));
        }
        if state.corpus_key != self.corpus.key || state.num_docs != self.corpus.len() {
            return bad(format!(
                "expected corpus key `{}` with {} documents, found key `{}` with {}",
                self.corpus.key,
                self.corpus.len(),
                state.corpus_key,
                state.num_docs
            ));
        }
        if state.rows.len() != self.config.batch_size {
            return bad(format!(
                "expected {} rows, found {}",
                self.config.batch_size,
                state.rows.len()
            ));
        }
        for (r, row) in state.rows.iter().enumerate() {
            if let Some(d) = row.doc
                && self.eligible.binary_search(&d).is_err()
            {
                return bad(format!("row {r} holds document {d}, which is not streamed"));
            }
        }
        if state.next_doc > self.eligible.len() {
            return bad(format!(
                "next document position {} is past the {} streamed documents",
                state.next_doc,
                self.eligible.len()
            ));
        }
        let mut rng = SplitMix64(state.epoch_rng);
        let order = if state.in_epoch {
            let order = self.epoch_order(&mut rng);
            if rng.0 != state.rng {
                return bad(format!(
                    "RNG state {} does not follow the epoch's shuffle from {} (found {})",
                    state.rng, state.epoch_rng, rng.0
                ));
            }
            order
        } else {
            Vec::new()
        };
        self.order = order;
        self.rng = SplitMix64(state.rng);
        self.epoch_rng = state.epoch_rng;
        self.epoch = state.epoch;
        self.in_epoch = state.in_epoch;
        self.finished = state.finished;
        self.next_doc = state.next_doc;
        self.rows = state.rows.clone();
        self.batches = state.batches;
        Ok(())
    }

    fn epoch_order(&self, rng: &mut SplitMix64) -> Vec<usize> {
        let mut order = self.eligible.clone();
        if self.config.shuffle {
            rng.shuffle(&mut order);
        }
        order
    }

    fn start_epoch(&mut self) {
        self.epoch_rng = self.rng.0;
        let mut rng = self.rng;
        self.order = self.epoch_order(&mut rng);
        self.rng = rng;
        self.next_doc = 0;
        self.rows.fill(RowState {
            doc: None,
            segment: 0,
        });
        self.in_epoch = true;
        tracing::debug!(
            epoch = self.epoch,
            documents = self.order.len(),
            "epoch starts"
        );
    }

    fn row_exhausted(&self, row: &RowState) -> bool {
        match row.doc {
            None => true,
            Some(d) => row.segment >= self.config.layout().count(self.corpus.docs[d].tokens.len()),
        }
    }

    fn next_batch(&mut self) -> Option<SegmentBatch> {
        loop {
            if self.finished {
                return None;
            }
            if !self.in_epoch {
                if self.config.epochs.is_some_and(|e| self.epoch >= e) {
                    self.finished = true;
                    return None;
                }
                self.start_epoch();
            }
            for r in 0..self.rows.len() {
                if self.row_exhausted(&self.rows[r]) {
                    self.rows[r] = match self.order.get(self.next_doc) {
                        Some(&d) => {
                            self.next_doc += 1;
                            RowState {
                                doc: Some(d),
                                segment: 0,
                            }
                        }
                        None => RowState {
                            doc: None,
                            segment: 0,
                        },
                    };
                }
            }
            if self.rows.iter().all(|r| r.doc.is_none()) {
                self.in_epoch = false;
                self.epoch += 1;
                continue;
            }
            return Some(self.emit());
        }
    }

    fn emit(&mut self) -> SegmentBatch {
        let (b, l, layout) = (
            self.config.batch_size,
            self.config.seq_len,
            self.config.layout(),
        );
        let mut batch = SegmentBatch {
            input_ids: Vec::with_capacity(b),
            targets: Vec::with_capacity(b),
            valid: Vec::with_capacity(b),
            recurs_in: Vec::with_capacity(b),
            reset: Vec::with_capacity(b),
            doc_index: Vec::with_capacity(b),
            segment_index: Vec::with_capacity(b),
            epoch: self.epoch,
        };
        for row in &mut self.rows {
            let seg = row
                .doc
                .and_then(|d| Segments::get(&self.corpus.docs[d].tokens, layout, row.segment));
            let padded = match seg {
                Some(s) => s.padded(l, self.config.pad_id),
                None => Segment {
                    index: 0,
                    start: 0,
                    prefix: None,
                    inputs: &[],
                    targets: &[],
                    later: &[],
                }
                .padded(l, self.config.pad_id),
            };
            batch.input_ids.push(padded.input_ids);
            batch.targets.push(padded.targets);
            batch.valid.push(padded.valid);
            batch.recurs_in.push(padded.recurs_in);
            batch.reset.push(row.doc.is_none() || row.segment == 0);
            batch.doc_index.push(row.doc);
            batch
                .segment_index
                .push(if row.doc.is_some() { row.segment } else { 0 });
            if row.doc.is_some() {
                row.segment += 1;
            }
        }
        self.batches += 1;
        batch
    }
}

impl Iterator for StreamBatcher {
    type Item = SegmentBatch;

    fn next(&mut self) -> Option<SegmentBatch> {
        self.next_batch()
    }
}
