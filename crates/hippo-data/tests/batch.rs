//! Stream batching: coverage, order, targets, masking, resets, row independence, resume.

use std::collections::BTreeMap;
use std::sync::Arc;

use hippo_data::{
    BatcherConfig, BatcherState, DataError, Document, IGNORE_INDEX, SegmentBatch, SegmentLayout,
    Segments, Split, StreamBatcher, Tokenize, TokenizedCorpus,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Text `"<doc> <len>"` becomes `len` distinct ids `doc·1000 + j`, so order is checkable.
struct Unique;

impl Tokenize for Unique {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        let mut it = text.split(' ').map(|s| s.parse::<u32>().unwrap_or(0));
        let (doc, len) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        Ok((0..len).map(|j| 1 + doc * 1000 + j).collect())
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok("unique".into())
    }
}

const LENS: [u32; 12] = [1, 4, 5, 8, 9, 13, 3, 20, 2, 6, 4, 17];

fn corpus(lens: &[u32]) -> Result<Arc<TokenizedCorpus>, DataError> {
    let docs: Vec<Document> = lens
        .iter()
        .enumerate()
        .map(|(i, n)| Document {
            id: format!("d{i}"),
            title: String::new(),
            text: format!("{i} {n}"),
            source: "synthetic".into(),
            url: None,
        })
        .collect();
    let mut c = TokenizedCorpus::build(&docs, &Unique, "synthetic", Split::Train)?;
    c.key = "k".into();
    Ok(Arc::new(c))
}

/// Checks one epoch's batches against the corpus; returns the documents in start order.
fn check_epoch(batches: &[SegmentBatch], c: &TokenizedCorpus, cfg: &BatcherConfig) -> Vec<usize> {
    let (b, l, layout) = (cfg.batch_size, cfg.seq_len, cfg.layout());
    let eligible: Vec<usize> = (0..c.len())
        .filter(|&i| c.docs[i].tokens.len() >= cfg.min_tokens)
        .collect();
    let mut seen: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut started = Vec::new();
    // Per row: (doc, last segment) of the previous batch.
    let mut prev: Vec<Option<(usize, usize)>> = vec![None; b];
    for (t, batch) in batches.iter().enumerate() {
        assert_eq!((batch.batch_size(), batch.seq_len()), (b, l));
        assert!(
            batch.doc_index.iter().any(Option::is_some),
            "batch {t} is all padding"
        );
        for (r, prev_r) in prev.iter_mut().enumerate() {
            let (inp, tgt, val) = (&batch.input_ids[r], &batch.targets[r], &batch.valid[r]);
            assert_eq!((inp.len(), tgt.len(), val.len()), (l, l, l));
            let Some(d) = batch.doc_index[r] else {
                assert!(batch.reset[r], "padding rows are reset");
                assert!(val.iter().all(|v| !v));
                assert!(tgt.iter().all(|&x| x == IGNORE_INDEX));
                assert!(inp.iter().all(|&x| x == cfg.pad_id));
                assert_eq!(batch.segment_index[r], 0);
                assert_eq!(
                    started.len(),
                    eligible.len(),
                    "padding only once all are taken"
                );
                *prev_r = None;
                continue;
            };
            let k = batch.segment_index[r];
            let toks = &c.docs[d].tokens;
            // Row independence: a row continues its own document until it is done.
            match *prev_r {
                Some((pd, pk)) if layout.count(c.docs[pd].tokens.len()) > pk + 1 => {
                    assert_eq!((d, k), (pd, pk + 1), "row {r} batch {t} must continue");
                    assert!(!batch.reset[r]);
                }
                _ => {
                    assert_eq!(k, 0, "row {r} batch {t} starts a document at segment 0");
                    assert!(batch.reset[r]);
                    started.push(d);
                }
            }
            *prev_r = Some((d, k));
            // Segment k: its BOS (later segments with a BOS layout), then document tokens from
            // `start`.
            let (start, prefix) = (layout.start(k), layout.prefix(k));
            let n_valid = val.iter().take_while(|&&v| v).count();
            assert_eq!(
                n_valid,
                prefix + (toks.len() - start).min(l - prefix),
                "valid prefix"
            );
            assert!(
                val[n_valid..].iter().all(|v| !v),
                "no padding inside a document"
            );
            if prefix == 1 {
                assert_eq!(Some(inp[0]), cfg.bos, "later segments begin with BOS");
                assert_eq!(tgt[0], IGNORE_INDEX, "the BOS has no target");
            }
            for i in prefix..l {
                let p = start + i - prefix;
                if p < toks.len() {
                    assert_eq!(inp[i], toks[p]);
                    let want = toks.get(p + 1).map_or(IGNORE_INDEX, |&x| i64::from(x));
                    assert_eq!(tgt[i], want, "target at doc {d} pos {p}");
                } else {
                    assert_eq!(inp[i], cfg.pad_id);
                    assert_eq!(tgt[i], IGNORE_INDEX);
                }
            }
            seen.entry(d)
                .or_default()
                .extend_from_slice(&inp[prefix..n_valid]);
        }
    }
    // Every token of every streamed document exactly once, in order; skipped ones never.
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), eligible);
    for (d, toks) in &seen {
        assert_eq!(toks, &c.docs[*d].tokens, "doc {d} reassembles exactly");
    }
    let mut sorted = started.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, eligible, "each document starts exactly once");
    started
}

fn epochs_of(batches: Vec<SegmentBatch>) -> Vec<Vec<SegmentBatch>> {
    let mut out: Vec<Vec<SegmentBatch>> = Vec::new();
    for b in batches {
        if out.len() <= b.epoch {
            out.resize_with(b.epoch + 1, Vec::new);
        }
        out[b.epoch].push(b);
    }
    out
}

#[test]
fn every_token_once_in_order_with_next_token_targets_and_masks() -> TestResult {
    let c = corpus(&LENS)?;
    let contiguous = [(4, 3), (1, 1), (4, 1), (5, 12), (7, 2)]
        .map(|(l, b)| BatcherConfig::new(l, b).with_pad_id(9999));
    // Later segments begin with BOS 7777 (not a document token).
    let with_bos = [(4, 3), (2, 1), (4, 1), (5, 12), (7, 2)].map(|(l, b)| {
        BatcherConfig::new(l, b)
            .with_layout(SegmentLayout::with_bos(l, 7777))
            .with_pad_id(9999)
    });
    for cfg in contiguous.into_iter().chain(with_bos) {
        let (l, b) = (cfg.seq_len, cfg.batch_size);
        let batcher = StreamBatcher::new(c.clone(), cfg.clone())?;
        let skipped = LENS.iter().filter(|&&n| (n as usize) < l + 1).count();
        assert_eq!(batcher.skipped(), skipped);
        assert_eq!(batcher.num_eligible(), LENS.len() - skipped);
        let segs = batcher.segments_per_epoch();
        let batches: Vec<_> = batcher.collect();
        assert!(batches.len() >= segs.div_ceil(b));
        assert!(batches.iter().all(|x| x.epoch == 0));
        let order = check_epoch(&batches, &c, &cfg);
        // Every target once: the targets of an epoch are the documents' tokens but their BOS.
        let targets: usize = batches.iter().map(SegmentBatch::num_targets).sum();
        let expected_targets: usize = LENS
            .iter()
            .filter(|&&n| n as usize > l)
            .map(|&n| n as usize - 1)
            .sum();
        assert_eq!(targets, expected_targets, "{cfg:?}");
        let expected: Vec<usize> = (0..LENS.len()).filter(|&i| LENS[i] as usize > l).collect();
        assert_eq!(order, expected, "without shuffle, corpus order");
    }
    Ok(())
}

#[test]
fn last_segment_padding_and_document_end_targets() -> TestResult {
    // One document of 9 tokens, L = 4: segments of 4, 4, 1 inputs.
    let c = corpus(&[9])?;
    let cfg = BatcherConfig::new(4, 2);
    let batches: Vec<_> = StreamBatcher::new(c.clone(), cfg)?.collect();
    assert_eq!(batches.len(), 3);
    let t = &c.docs[0].tokens;
    let b0 = &batches[0];
    assert_eq!(b0.input_ids[0], t[0..4]);
    assert_eq!(
        b0.targets[0],
        t[1..5].iter().map(|&x| i64::from(x)).collect::<Vec<_>>()
    );
    assert_eq!(b0.reset, [true, true]);
    assert_eq!(b0.doc_index, [Some(0), None]);
    let b2 = &batches[2];
    assert_eq!(b2.input_ids[0], [t[8], 0, 0, 0]);
    assert_eq!(b2.valid[0], [true, false, false, false]);
    assert_eq!(b2.targets[0], [IGNORE_INDEX; 4]);
    assert_eq!(b2.num_targets(), 0, "the k·L+1 tail segment has no target");
    assert_eq!(b2.num_valid(), 1);
    assert_eq!(b2.reset, [false, true]);
    assert_eq!(batches[1].num_targets(), 4);
    assert_eq!(batches[1].input_ids_flat().len(), 8);
    assert_eq!(batches[1].targets_flat()[4..], [IGNORE_INDEX; 4]);
    Ok(())
}

#[test]
fn shuffle_is_seeded_and_differs_between_epochs() -> TestResult {
    let lens: Vec<u32> = (0..40).map(|i| 5 + (i * 7) % 23).collect();
    let c = corpus(&lens)?;
    let cfg = BatcherConfig::new(4, 3)
        .with_shuffle(42)
        .with_epochs(Some(3));
    let a: Vec<_> = StreamBatcher::new(c.clone(), cfg.clone())?.collect();
    let again: Vec<_> = StreamBatcher::new(c.clone(), cfg.clone())?.collect();
    assert_eq!(a, again, "same seed, same batches");
    let epochs = epochs_of(a);
    assert_eq!(epochs.len(), 3);
    let orders: Vec<Vec<usize>> = epochs.iter().map(|e| check_epoch(e, &c, &cfg)).collect();
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    assert_ne!(orders[0], (0..40).collect::<Vec<_>>());
    // Every epoch starts with all rows reset.
    for e in &epochs {
        assert!(e[0].reset.iter().all(|&r| r));
    }
    let other: Vec<_> = StreamBatcher::new(c.clone(), cfg.clone().with_shuffle(43))?.collect();
    let o = check_epoch(&epochs_of(other)[0], &c, &cfg);
    assert_ne!(o, orders[0], "another seed, another order");
    Ok(())
}

#[test]
fn resuming_mid_epoch_yields_the_identical_remaining_batches() -> TestResult {
    let lens: Vec<u32> = (0..25).map(|i| 2 + (i * 11) % 31).collect();
    let c = corpus(&lens)?;
    for cfg in [
        BatcherConfig::new(4, 3)
            .with_shuffle(7)
            .with_epochs(Some(3)),
        BatcherConfig::new(6, 2).with_epochs(Some(2)),
    ] {
        let full: Vec<_> = StreamBatcher::new(c.clone(), cfg.clone())?.collect();
        let n = full.len();
        let first_epoch2 = full.iter().position(|b| b.epoch == 1).ok_or("epoch 1")?;
        for k in [
            0,
            1,
            2,
            n / 3,
            first_epoch2 - 1,
            first_epoch2,
            first_epoch2 + 1,
            n - 1,
            n,
        ] {
            let mut run = StreamBatcher::new(c.clone(), cfg.clone())?;
            let head: Vec<_> = run.by_ref().take(k).collect();
            assert_eq!(head, full[..k]);
            // The state survives serialisation (a checkpoint file).
            let saved = serde_json::to_string(&run.state())?;
            let state: BatcherState = serde_json::from_str(&saved)?;
            let mut resumed = StreamBatcher::new(c.clone(), cfg.clone())?;
            resumed.restore(&state)?;
            let tail: Vec<_> = resumed.collect();
            assert_eq!(tail, full[k..], "resume after {k} of {n} batches");
            assert_eq!(run.collect::<Vec<_>>(), full[k..]);
        }
    }
    Ok(())
}

#[test]
fn restore_rejects_a_state_of_another_stream() -> TestResult {
    let c = corpus(&LENS)?;
    let cfg = BatcherConfig::new(4, 3).with_shuffle(1).with_epochs(None);
    let mut run = StreamBatcher::new(c.clone(), cfg.clone())?;
    run.by_ref().take(5).for_each(drop);
    let state = run.state();
    // Changing only the number of epochs is allowed.
    let mut more = StreamBatcher::new(c.clone(), cfg.clone().with_epochs(Some(9)))?;
    more.restore(&state)?;
    for other in [
        cfg.clone().with_shuffle(2),
        BatcherConfig::new(5, 3).with_shuffle(1),
        BatcherConfig::new(4, 2).with_shuffle(1),
    ] {
        let mut b = StreamBatcher::new(c.clone(), other)?;
        assert!(matches!(b.restore(&state), Err(DataError::BadState(_))));
    }
    let mut b = StreamBatcher::new(corpus(&LENS[..11])?, cfg.clone())?;
    assert!(matches!(b.restore(&state), Err(DataError::BadState(_))));
    let mut tampered = state.clone();
    tampered.rng ^= 1;
    let mut b = StreamBatcher::new(c.clone(), cfg)?;
    assert!(matches!(b.restore(&tampered), Err(DataError::BadState(_))));
    Ok(())
}

#[test]
fn endless_epochs_keep_going() -> TestResult {
    let c = corpus(&[10, 7])?;
    let cfg = BatcherConfig::new(4, 2).with_epochs(None);
    let batches: Vec<_> = StreamBatcher::new(c, cfg)?.take(30).collect();
    assert_eq!(batches.len(), 30);
    assert_eq!(batches[29].epoch, 9, "3 batches per epoch");
    Ok(())
}

#[test]
fn bad_configs_and_all_short_corpora_are_errors() -> TestResult {
    let c = corpus(&[3, 4])?;
    for cfg in [
        BatcherConfig::new(0, 1),
        BatcherConfig::new(4, 0),
        BatcherConfig::new(4, 1).with_min_tokens(1),
        BatcherConfig::new(4, 1),
    ] {
        assert!(matches!(
            StreamBatcher::new(c.clone(), cfg),
            Err(DataError::BadConfig(_))
        ));
    }
    let b = StreamBatcher::new(c, BatcherConfig::new(4, 1).with_min_tokens(2))?;
    assert_eq!(b.skipped(), 0);
    Ok(())
}

#[test]
fn segments_walk_one_document() -> TestResult {
    let ids: Vec<u32> = (10..21).collect(); // 11 tokens
    let four = SegmentLayout::contiguous(4);
    let segs: Vec<_> = Segments::of_document(&ids, four).collect();
    assert_eq!(segs.len(), 3);
    assert_eq!(four.count(ids.len()), 3);
    assert!(segs[0].is_first() && !segs[1].is_first());
    assert_eq!(segs[0].inputs, &ids[0..4]);
    assert_eq!(segs[0].targets, &ids[1..5]);
    assert_eq!(segs[2].start, 8);
    assert_eq!(segs[2].inputs, &ids[8..11]);
    assert_eq!(segs[2].targets, &ids[9..11]);
    let joined: Vec<u32> = segs.iter().flat_map(|s| s.inputs.iter().copied()).collect();
    assert_eq!(joined, ids);
    let p = segs[2].padded(4, 7);
    assert_eq!(p.input_ids, [18, 19, 20, 7]);
    assert_eq!(p.targets, [19, 20, IGNORE_INDEX, IGNORE_INDEX]);
    assert_eq!(p.valid, [true, true, true, false]);
    assert_eq!(
        Segments::of_document(&ids, SegmentLayout::contiguous(0)).count(),
        0
    );
    assert_eq!(Segments::of_document(&[], four).count(), 0);
    assert_eq!(
        Segments::of_document(&ids, SegmentLayout::contiguous(11)).count(),
        1
    );
    // With BOS: 0..4, then BOS + 3 tokens: 4..7, 7..10, 10..11.
    let bos = SegmentLayout::with_bos(4, 2);
    let segs: Vec<_> = Segments::of_document(&ids, bos).collect();
    assert_eq!(segs.len(), 4);
    assert_eq!((segs[0].prefix, segs[0].inputs), (None, &ids[0..4]));
    assert_eq!((segs[1].prefix, segs[1].inputs), (Some(2), &ids[4..7]));
    assert_eq!(segs[1].targets, &ids[5..8]);
    assert_eq!(segs[3].row_ids(), vec![2, 20]);
    assert!(segs[3].targets.is_empty());
    let p = segs[1].padded(4, 7);
    assert_eq!(p.input_ids, [2, 14, 15, 16]);
    assert_eq!(p.targets, [IGNORE_INDEX, 15, 16, 17]);
    assert_eq!(p.valid, [true; 4]);
    let p = segs[3].padded(4, 7);
    assert_eq!(p.input_ids, [2, 20, 7, 7]);
    assert_eq!(p.targets, [IGNORE_INDEX; 4]);
    assert_eq!(p.valid, [true, true, false, false]);
    // A BOS layout needs room for one document token after the BOS.
    let c = corpus(&[5])?;
    assert!(matches!(
        StreamBatcher::new(
            c,
            BatcherConfig::new(1, 1).with_layout(SegmentLayout::with_bos(1, 2))
        ),
        Err(DataError::BadConfig(_))
    ));
    Ok(())
}

#[test]
fn recurrence_labels_count_later_targets_by_hand() {
    // Contiguous segments of 4 over [1, 5, 6, 5, 7, 6, 8, 5, 9, 6].
    let ids = [1u32, 5, 6, 5, 7, 6, 8, 5, 9, 6];
    let segs: Vec<_> = Segments::of_document(&ids, SegmentLayout::contiguous(4)).collect();
    // Segment 0: targets [5, 6, 5, 7]; later targets [6, 8, 5, 9, 6].
    assert_eq!(segs[0].later, &ids[5..]);
    assert_eq!(segs[0].padded(4, 0).recurs_in, [2, 0, 2, -1]);
    // Segment 1: targets [6, 8, 5, 9]; later [6]. Segment 2 is the last: nothing later.
    assert_eq!(segs[1].padded(4, 0).recurs_in, [0, -1, -1, -1]);
    assert!(segs[2].later.is_empty());
    assert_eq!(segs[2].padded(4, 0).recurs_in, [-1; 4]);
    // With BOS: segment 1 is BOS + [7, 6, 8] with targets [6, 8, 5], later [9, 6]; the BOS
    // position has no target and no label.
    let segs: Vec<_> = Segments::of_document(&ids, SegmentLayout::with_bos(4, 2)).collect();
    assert_eq!(segs[0].padded(4, 0).recurs_in, [2, 0, 2, -1]);
    assert_eq!(segs[1].padded(4, 0).recurs_in, [-1, 1, -1, -1]);
    // A position whose target is inside its own segment again only counts later segments.
    let ids = [3u32, 4, 4, 4, 9];
    let segs: Vec<_> = Segments::of_document(&ids, SegmentLayout::contiguous(2)).collect();
    // Segment 0: targets [4, 4], later [4, 9]: both at 0. Segment 1: targets [4, 9], later [].
    assert_eq!(segs[0].padded(2, 0).recurs_in, [0, 0]);
    assert_eq!(segs[1].padded(2, 0).recurs_in, [-1, -1]);
}

/// Text `"<len>"` becomes `len` ids `1 + j² mod 7`: every id recurs, at irregular distances.
struct Squares;

impl Tokenize for Squares {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        let n: u32 = text.parse().unwrap_or(0);
        Ok((0..n).map(|j| 1 + (j * j) % 7).collect())
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok("squares".into())
    }
}

#[test]
fn batched_recurrence_labels_match_a_brute_force_search_of_the_document() -> TestResult {
    let docs: Vec<Document> = [23u32, 9, 31]
        .iter()
        .enumerate()
        .map(|(i, n)| Document {
            id: format!("d{i}"),
            title: String::new(),
            text: n.to_string(),
            source: "synthetic".into(),
            url: None,
        })
        .collect();
    let mut c = TokenizedCorpus::build(&docs, &Squares, "synthetic", Split::Train)?;
    c.key = "k".into();
    let c = Arc::new(c);
    let layout = SegmentLayout::with_bos(5, 99);
    let cfg = BatcherConfig::new(5, 2)
        .with_layout(layout)
        .with_epochs(Some(1));
    let (mut labelled, mut never) = (0, 0);
    for batch in StreamBatcher::new(c.clone(), cfg)? {
        for r in 0..batch.batch_size() {
            let Some(d) = batch.doc_index[r] else {
                assert!(batch.recurs_in[r].iter().all(|&x| x == -1));
                continue;
            };
            let ids = &c.docs[d].tokens;
            let k = batch.segment_index[r];
            let range = layout.range(k, ids.len());
            let later = (range.end + 1).min(ids.len());
            for p in 0..5 {
                let t = batch.targets[r][p];
                let want = if t == IGNORE_INDEX {
                    -1
                } else {
                    ids[later..]
                        .iter()
                        .position(|&x| i64::from(x) == t)
                        .map_or(-1, |j| j as i64)
                };
                assert_eq!(
                    batch.recurs_in[r][p], want,
                    "doc {d} segment {k} position {p}"
                );
                if want >= 0 {
                    labelled += 1;
                } else if t != IGNORE_INDEX {
                    never += 1;
                }
            }
        }
    }
    assert!(
        labelled > 10 && never > 0,
        "{labelled} labelled, {never} never"
    );
    Ok(())
}
