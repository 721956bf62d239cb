//! The paper's metrics on hand-made inputs whose values are computed by hand: the
//! content/function ratio, the smoothing kernel's autocorrelation on random input, buffer
//! priority on a small memory state, and the long-range benefit with its interval.
#![allow(missing_docs, clippy::unwrap_used)]

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use hippo_data::{ByteTokenizer, Document, SegmentLayout, Split, TokenizedCorpus};
use hippo_eval::metrics::{
    DocText, FUNCTION_WORDS, WordClass, buffer_priority, content_function_ratio, is_function_word,
    kernel_lag1_closed_form, kernel_lag1_on_noise, lag1_autocorrelation, long_range_benefit,
    snapshot, temporal_coherence, token_words, word_class,
};
use hippo_eval::{BufferSnapshot, Trace, report_from_trace};
use hippo_memory::MemoryState;

#[test]
fn the_function_word_list_is_nltks_and_normalises_words() {
    assert_eq!(FUNCTION_WORDS.len(), 179);
    let mut sorted = FUNCTION_WORDS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 179, "duplicates in the list");
    assert!(is_function_word("The,"));
    assert!(is_function_word("(don\u{2019}t)"));
    assert!(is_function_word("IS"));
    assert!(!is_function_word("cat"));
    assert_eq!(word_class("Hippocampus."), WordClass::Content);
    assert_eq!(word_class("1987"), WordClass::Other);
    assert_eq!(word_class("—"), WordClass::Other);
}

#[test]
fn tokens_map_to_the_word_of_their_first_visible_byte() {
    let text = "the  cat\nsat";
    // BOS, "the", " ", " cat", "\n", "sat" (with a token straddling "t\ns" too).
    let offsets = [(0, 0), (0, 3), (3, 4), (4, 8), (8, 9), (9, 12), (7, 10)];
    assert_eq!(
        token_words(text, &offsets),
        vec![None, Some(0), None, Some(1), None, Some(2), Some(1)]
    );
}

#[test]
fn content_function_ratio_by_hand() {
    let doc = DocText {
        text: "the cat sat on the mat".into(),
        offsets: vec![
            (0, 0),
            (0, 3),
            (3, 7),
            (7, 11),
            (11, 14),
            (14, 18),
            (18, 20),
            (20, 22),
        ],
    };
    // BOS unscored; "mat" is two tokens, 0.9 and 0.5 → 0.7.
    let sal = vec![vec![f64::NAN, 0.1, 0.8, 0.6, 0.2, 0.3, 0.9, 0.5]];
    let r = content_function_ratio(std::slice::from_ref(&doc), &sal)
        .unwrap()
        .unwrap();
    assert_eq!((r.content_words, r.function_words), (3, 3));
    assert!((r.content_mean - 0.7).abs() < 1e-12, "{}", r.content_mean);
    assert!((r.function_mean - 0.2).abs() < 1e-12, "{}", r.function_mean);
    assert!((r.ratio - 3.5).abs() < 1e-9, "{}", r.ratio);
    // Misaligned inputs are an error, not a silent zero.
    assert!(content_function_ratio(&[doc], &[]).is_err());
}

#[test]
fn the_moving_average_of_noise_has_lag1_autocorrelation_w_minus_1_over_w() {
    for w in 1..=5usize {
        let kernel = vec![1.0 / w as f64; w];
        let closed = kernel_lag1_closed_form(&kernel);
        let expected = (w as f64 - 1.0) / w as f64;
        assert!((closed - expected).abs() < 1e-12, "w {w}: {closed}");
        let measured = kernel_lag1_on_noise(&kernel, 4096, 16, 7).unwrap();
        assert!(
            (measured - expected).abs() < 0.02,
            "w {w}: measured {measured}, closed form {expected}"
        );
    }
    // A kernel that is not a moving average: Σ c_j c_{j+1} / Σ c_j² = 0.5·0.3 / (0.25 + 0.09).
    let c = [0.5, 0.3];
    assert!((kernel_lag1_closed_form(&c) - 0.15 / 0.34).abs() < 1e-12);
    // The estimator itself: an alternating sequence is perfectly anti-correlated (up to the
    // 1/n edge term), a constant one has no variance.
    let alt: Vec<f64> = (0..1000)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let r = lag1_autocorrelation(&[alt]).unwrap();
    assert!((r + 0.999).abs() < 1e-9, "{r}");
    assert_eq!(lag1_autocorrelation(&[vec![0.3; 10]]), None);
}

#[test]
fn temporal_coherence_reads_salience_within_segments() {
    // Two segments of 4: within each, a ramp (lag-1 = 0.25 by hand: centred −1.5,−0.5,0.5,1.5,
    // Σ products = 0.75 − 0.25 + 0.75 = 1.25, Σ squares = 5). Across the boundary nothing is
    // paired.
    let trace = Trace {
        layout: SegmentLayout::contiguous(4),
        nll: vec![vec![0.0; 7]],
        salience: vec![vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]],
        end_of_document: vec![None],
    };
    let t = temporal_coherence(&trace, &[0.5, 0.5], 3);
    assert_eq!(t.segments, 2);
    assert!((t.salience_lag1.unwrap() - 0.25).abs() < 1e-12);
    assert!((t.moving_average_closed_form - 0.5).abs() < 1e-12);
    assert!((t.kernel_closed_form - 0.5).abs() < 1e-12);
    assert!(t.kernel_on_random_input.is_some());
}

#[test]
fn buffer_priority_equals_a_hand_computation() {
    let device = Device::flex();
    // Row 0: P = 2, 3, 4 at ages 0, 1, 2, one empty slot; row 1: P = 1 at age 3.
    let f2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, 4]), &device);
    let state = MemoryState {
        states: Tensor::zeros([2, 4, 3], &device),
        priorities: f2(vec![2.0, 3.0, 4.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
        ages: f2(vec![0.0, 1.0, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0]),
        valid: Tensor::<2, Bool>::from_data(
            TensorData::new(
                vec![true, true, true, false, true, false, false, false],
                [2, 4],
            ),
            &device,
        ),
        accepted_writes: Tensor::<1, Int>::zeros([2], &device),
        next_tokens: Tensor::<2, Int>::full([2, 4], hippo_memory::NO_NEXT_TOKEN, &device),
        positions: Tensor::zeros([2, 4], &device),
        payload: None,
    };
    let decay = 0.5;
    let eff: Vec<f64> = state
        .effective_priorities(decay)
        .into_data()
        .iter::<f32>()
        .map(f64::from)
        .collect();
    let valid: Vec<bool> = state.valid.clone().into_data().iter::<bool>().collect();
    // Row 0: 2·1, 3·0.5, 4·0.25 → mean 1.5. Row 1: 1·0.125.
    let s0 = snapshot(&eff[..4], &valid[..4]);
    let s1 = snapshot(&eff[4..], &valid[4..]);
    assert_eq!(s0.entries, 3);
    assert!((s0.mean_effective_priority.unwrap() - 1.5).abs() < 1e-6);
    assert_eq!(s1.entries, 1);
    assert!((s1.mean_effective_priority.unwrap() - 0.125).abs() < 1e-6);
    let empty = snapshot(&[0.0; 4], &[false; 4]);
    assert_eq!(
        empty,
        BufferSnapshot {
            entries: 0,
            mean_effective_priority: None
        }
    );
    let trace = Trace {
        layout: SegmentLayout::contiguous(4),
        nll: vec![Vec::new(); 3],
        salience: vec![Vec::new(); 3],
        end_of_document: vec![Some(s0), Some(s1), Some(empty)],
    };
    let b = buffer_priority(&trace).unwrap();
    assert_eq!((b.documents, b.documents_with_entries), (3, 2));
    assert!((b.mean - 0.8125).abs() < 1e-6, "{}", b.mean);
    assert!((b.mean_entries - 4.0 / 3.0).abs() < 1e-12);
    // 95 % Student t interval, n = 2: s = |1.5 − 0.125| / √2, half-width
    // t(0.975, 1)·s/√2 = 12.706204736·0.6875 = 8.735515756 (scipy.stats.t.ppf(0.975, 1)).
    assert!(
        (b.hi - b.mean - 8.735515756).abs() < 1e-5,
        "{}",
        b.hi - b.mean
    );
    assert!((b.mean - b.lo - 8.735515756).abs() < 1e-5);
    assert!(buffer_priority(&Trace::default()).is_none());
}

fn doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        title: id.into(),
        text: text.into(),
        source: "test".into(),
        url: None,
    }
}

#[test]
fn long_range_benefit_against_the_base_by_hand() {
    // Two documents of 6 targets in segments of 2: late = segment 2 (targets 4 and 5).
    let docs = vec![doc("a", "abcdef"), doc("b", "ghijkl")];
    let c = TokenizedCorpus::build(&docs, &ByteTokenizer, "t", Split::Test).unwrap();
    let tr = |nll: Vec<Vec<f64>>| Trace {
        layout: SegmentLayout::contiguous(2),
        nll,
        salience: vec![Vec::new(); 2],
        end_of_document: vec![None; 2],
    };
    let base = report_from_trace(&c, &tr(vec![vec![1.0; 6], vec![2.0; 6]]), false);
    let hippo = report_from_trace(
        &c,
        &tr(vec![
            vec![9.0, 9.0, 1.0, 1.0, 0.5, 0.5],
            vec![2.0, 2.0, 2.0, 2.0, 1.8, 1.6],
        ]),
        false,
    );
    let b = long_range_benefit(&base, &hippo, 2).unwrap().unwrap();
    // Per document: 1 − 0.5 = 0.5 and 2 − 1.7 = 0.3 (early segments ignored).
    assert_eq!(b.documents, 2);
    assert_eq!(b.tokens, 4);
    assert!((b.per_document[0] - 0.5).abs() < 1e-12 && (b.per_document[1] - 0.3).abs() < 1e-12);
    assert!((b.mean - 0.4).abs() < 1e-12);
    // s = 0.1·√2, half-width = t(0.975, 1)·s/√2 = 12.706204736·0.1 = 1.2706204736.
    assert!(
        (b.hi - 1.6706204736).abs() < 1e-9 && (b.lo + 0.8706204736).abs() < 1e-9,
        "{b:?}"
    );
    assert!((b.pooled_base_nll - 1.5).abs() < 1e-12);
    assert!((b.pooled_hippo_nll - 1.1).abs() < 1e-12);
    // Nothing reaches segment 3; mismatched streams are an error.
    assert!(long_range_benefit(&base, &hippo, 3).unwrap().is_none());
    let short = report_from_trace(&c, &tr(vec![vec![1.0; 5], vec![2.0; 6]]), false);
    assert!(long_range_benefit(&base, &short, 2).is_err());
}
