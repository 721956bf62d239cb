//! The statistics functions against scipy / statsmodels.
//!
//! Every expected constant below was printed by `scripts/stats_reference.py` (run as
//! `/work/venv/py/bin/python scripts/stats_reference.py`, scipy 1.17.1, statsmodels 0.15.0,
//! numpy 2.4.6); the comment above each names the exact call. The inputs are the script's
//! literals, copied verbatim.

use hippo_eval::stats::{
    StatsError, TestMethod, bootstrap_mean_ci, holm, mean_ci_t, paired_bootstrap, paired_t_test,
    wilcoxon_signed_rank,
};

const X: [f64; 8] = [2.31, 2.74, 2.05, 3.12, 2.66, 2.48, 2.93, 2.21];
const A10: [f64; 10] = [3.41, 3.18, 3.72, 2.95, 3.30, 3.64, 3.05, 3.27, 3.51, 3.12];
const B10: [f64; 10] = [3.35, 3.20, 3.59, 2.91, 3.21, 3.53, 3.08, 3.15, 3.44, 3.02];
const TIE_A: [f64; 10] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
const TIE_B: [f64; 10] = [0.5, 2.5, 2.0, 3.0, 5.5, 4.0, 6.5, 6.0, 9.5, 8.0];
const ZERO_A: [f64; 12] = [5.1, 4.8, 6.2, 5.5, 4.9, 5.0, 6.1, 5.7, 4.4, 5.3, 5.9, 6.0];
const ZERO_B: [f64; 12] = [4.6, 4.8, 5.1, 5.9, 4.2, 5.3, 5.2, 4.5, 4.1, 5.3, 5.6, 4.7];
const HOLM_P: [f64; 7] = [0.01, 0.04, 0.03, 0.04, 0.20, 0.50, 0.005];

/// The script's `integer_pairs(n, mod_a, mul_a, mod_b, mul_b, scale)`.
fn integer_pairs(
    n: usize,
    mod_a: usize,
    mul_a: usize,
    mod_b: usize,
    mul_b: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let a = (1..=n).map(|i| ((i * mul_a) % mod_a) as f64 / scale);
    let b = (1..=n).map(|i| ((i * mul_b) % mod_b) as f64 / scale);
    (a.collect(), b.collect())
}

/// The script's `distinct_diffs(n)`.
fn distinct_diffs(n: usize) -> (Vec<f64>, Vec<f64>) {
    let a = (1..=n).map(|i| ((i * 7919) % 211) as f64 - 50.25).collect();
    (a, vec![0.0; n])
}

#[track_caller]
fn close(found: f64, expected: f64, rel: f64) {
    let tol = rel * expected.abs().max(1e-300);
    assert!(
        (found - expected).abs() <= tol,
        "found {found:e}, expected {expected:e} (rel tol {rel:e})"
    );
}

#[test]
fn t_interval_matches_scipy() {
    // stats.t.interval(0.95, 7, loc=X.mean(), scale=stats.sem(X))
    let ci = mean_ci_t(&X, 0.95).expect("valid input");
    close(ci.mean, 2.5625, 1e-15);
    close(ci.lo, 2.255431959078509, 1e-12);
    close(ci.hi, 2.869568040921491, 1e-12);
    // stats.t.interval(0.90, 7, loc=X.mean(), scale=stats.sem(X))
    let ci = mean_ci_t(&X, 0.90).expect("valid input");
    close(ci.lo, 2.3164716763689244, 1e-12);
    close(ci.hi, 2.8085283236310756, 1e-12);
}

#[test]
fn paired_t_matches_scipy() {
    // stats.ttest_rel(A10, B10)
    let r = paired_t_test(&A10, &B10).expect("valid input");
    close(r.statistic, 3.79786482413744, 1e-12);
    close(r.p_value, 0.004231217188099812, 1e-9);
    assert_eq!(r.method, TestMethod::StudentT);
    // Swapping the samples flips the sign only.
    let s = paired_t_test(&B10, &A10).expect("valid input");
    close(s.statistic, -3.79786482413744, 1e-12);
    close(s.p_value, r.p_value, 1e-14);
}

#[test]
fn wilcoxon_exact_branch_matches_scipy() {
    // stats.wilcoxon(A10, B10): n = 10, no ties, no zeros -> exact.
    let r = wilcoxon_signed_rank(&A10, &B10).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonExact);
    assert_eq!(r.statistic, 3.0);
    close(r.p_value, 0.009765625, 1e-12);
    // stats.wilcoxon(a, b) with (a, b) = distinct_diffs(30): exact, n = 30.
    let (a, b) = distinct_diffs(30);
    let r = wilcoxon_signed_rank(&a, &b).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonExact);
    assert_eq!(r.statistic, 56.0);
    close(r.p_value, 0.00011058151721954346, 1e-10);
}

#[test]
fn wilcoxon_permutation_branch_matches_scipy() {
    // stats.wilcoxon(TIE_A, TIE_B): tied |d|, n = 10 -> exact permutation test.
    let r = wilcoxon_signed_rank(&TIE_A, &TIE_B).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonPermutation);
    assert_eq!(r.statistic, 9.0);
    close(r.p_value, 0.060546875, 1e-12);
    // stats.wilcoxon(ZERO_A, ZERO_B): two zero differences, n = 12 -> permutation test.
    let r = wilcoxon_signed_rank(&ZERO_A, &ZERO_B).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonPermutation);
    assert_eq!(r.statistic, 5.0);
    close(r.p_value, 0.01953125, 1e-12);
}

#[test]
fn wilcoxon_normal_branch_matches_scipy() {
    // stats.wilcoxon(a, b) with (a, b) = distinct_diffs(60): n > 50 -> normal approximation.
    let (a, b) = distinct_diffs(60);
    let r = wilcoxon_signed_rank(&a, &b).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonNormal);
    assert_eq!(r.statistic, 225.0);
    close(r.p_value, 3.784174323743986e-07, 1e-9);
    // stats.wilcoxon(a, b) with (a, b) = integer_pairs(40, 17, 5, 19, 3, 4.0): 2 zeros and ties,
    // n = 40 -> normal approximation with zeros dropped and the tie correction.
    let (a, b) = integer_pairs(40, 17, 5, 19, 3, 4.0);
    let r = wilcoxon_signed_rank(&a, &b).expect("valid input");
    assert_eq!(r.method, TestMethod::WilcoxonNormal);
    assert_eq!(r.statistic, 340.5);
    close(r.p_value, 0.6632552199200221, 1e-9);
}

#[test]
fn wilcoxon_all_zero_differences_is_p_one() {
    let r = wilcoxon_signed_rank(&X, &X).expect("valid input");
    assert_eq!(r.method, TestMethod::AllZero);
    assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
}

#[test]
fn holm_matches_statsmodels() {
    // multipletests(HOLM_P, method='holm')[1]
    let expected = [0.06, 0.16, 0.15, 0.16, 0.4, 0.5, 0.035];
    let adj = holm(&HOLM_P).expect("valid p-values");
    assert_eq!(adj.len(), expected.len());
    for (f, e) in adj.iter().zip(expected) {
        close(*f, e, 1e-12);
    }
    // Clipped at 1.
    assert_eq!(holm(&[0.6, 0.7]).expect("valid"), vec![1.0, 1.0]);
    assert!(holm(&[]).expect("empty is fine").is_empty());
    assert!(matches!(
        holm(&[0.1, 1.5]),
        Err(StatsError::PValue { index: 1, .. })
    ));
    assert!(matches!(
        holm(&[f64::NAN]),
        Err(StatsError::PValue { index: 0, .. })
    ));
}

/// A deterministic normal-ish sample: sums of 12 uniforms from an LCG, minus 6 (Irwin–Hall),
/// scaled by `sd` and shifted by `mu`.
fn normalish(n: usize, mu: f64, sd: f64, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let mut u = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| mu + sd * ((0..12).map(|_| u()).sum::<f64>() - 6.0))
        .collect()
}

#[test]
fn bootstrap_is_seeded_and_sane() {
    let xs = normalish(40, 3.0, 0.5, 1);
    let a = bootstrap_mean_ci(&xs, 0.95, 2000, 7).expect("valid");
    let b = bootstrap_mean_ci(&xs, 0.95, 2000, 7).expect("valid");
    assert_eq!(a, b, "same seed, same interval");
    let c = bootstrap_mean_ci(&xs, 0.95, 2000, 8).expect("valid");
    assert_ne!(a, c, "another seed draws other resamples");
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    assert_eq!(a.mean, mean);
    assert!(a.lo < mean && mean < a.hi, "{a:?}");
    // A wider level gives a wider interval from the same draws.
    let w = bootstrap_mean_ci(&xs, 0.99, 2000, 7).expect("valid");
    assert!(w.lo < a.lo && a.hi < w.hi, "{w:?} vs {a:?}");
    // Four times the data: about half the width.
    let big = normalish(160, 3.0, 0.5, 1);
    let d = bootstrap_mean_ci(&big, 0.95, 2000, 7).expect("valid");
    let ratio = (d.hi - d.lo) / (a.hi - a.lo);
    assert!((0.35..0.7).contains(&ratio), "width ratio {ratio}");
}

#[test]
fn bootstrap_agrees_with_t_on_a_large_sample() {
    let xs = normalish(2000, 10.0, 2.0, 3);
    let t = mean_ci_t(&xs, 0.95).expect("valid");
    let b = bootstrap_mean_ci(&xs, 0.95, 4000, 11).expect("valid");
    let half = (t.hi - t.lo) / 2.0;
    assert!(
        (b.lo - t.lo).abs() < 0.1 * half && (b.hi - t.hi).abs() < 0.1 * half,
        "bootstrap {b:?} vs t {t:?}"
    );
}

#[test]
fn paired_bootstrap_detects_a_shift_and_not_noise() {
    let base = normalish(50, 3.0, 0.4, 5);
    let noise = normalish(50, 0.0, 0.05, 9);
    // b = base − 0.1 + noise: a − b ≈ +0.1, clearly non-zero.
    let shifted: Vec<f64> = base.iter().zip(&noise).map(|(x, e)| x - 0.1 + e).collect();
    let r = paired_bootstrap(&base, &shifted, 0.95, 2000, 1).expect("valid");
    assert!(r.ci.lo > 0.0 && r.ci.hi < 0.2, "{r:?}");
    assert_eq!(r.ci.mean, r.mean_diff);
    // Floor of the shifted-null p-value: 1 / (B + 1).
    assert_eq!(r.p_value, 1.0 / 2001.0);
    // Pure noise: the interval covers 0, the p-value is not small.
    let jitter: Vec<f64> = base.iter().zip(&noise).map(|(x, e)| x + e).collect();
    let r = paired_bootstrap(&base, &jitter, 0.95, 2000, 1).expect("valid");
    assert!(r.ci.lo < 0.0 && 0.0 < r.ci.hi, "{r:?}");
    assert!(r.p_value > 0.05, "{r:?}");
    assert_eq!(
        r,
        paired_bootstrap(&base, &jitter, 0.95, 2000, 1).expect("valid")
    );
    // Same draws as the one-sample bootstrap of the differences.
    let d: Vec<f64> = base.iter().zip(&jitter).map(|(x, y)| x - y).collect();
    assert_eq!(r.ci, bootstrap_mean_ci(&d, 0.95, 2000, 1).expect("valid"));
}

#[test]
fn bad_input_is_a_clear_error() {
    assert!(matches!(
        mean_ci_t(&[], 0.95),
        Err(StatsError::Empty { .. })
    ));
    assert!(matches!(
        mean_ci_t(&[1.0], 0.95),
        Err(StatsError::TooFew {
            needed: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(mean_ci_t(&X, 1.0), Err(StatsError::Level(_))));
    assert!(matches!(
        mean_ci_t(&[1.0, f64::NAN], 0.9),
        Err(StatsError::NonFinite { index: 1, .. })
    ));
    assert!(matches!(
        paired_t_test(&A10, &X),
        Err(StatsError::LengthMismatch { a: 10, b: 8 })
    ));
    assert!(matches!(
        wilcoxon_signed_rank(&[], &[]),
        Err(StatsError::Empty { .. })
    ));
    assert!(matches!(
        bootstrap_mean_ci(&X, 0.95, 0, 1),
        Err(StatsError::NoResamples)
    ));
    assert!(matches!(
        paired_bootstrap(&[1.0], &[2.0], 0.95, 10, 1),
        Err(StatsError::TooFew { .. })
    ));
    let msg = paired_t_test(&A10, &X).expect_err("mismatch").to_string();
    assert!(msg.contains("10 vs 8"), "{msg}");
}

#[test]
fn paired_t_degenerate_differences() {
    let r = paired_t_test(&X, &X).expect("valid");
    assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
    let shifted: Vec<f64> = X.iter().map(|x| x + 0.5).collect();
    let r = paired_t_test(&shifted, &X).expect("valid");
    // Differences are 0.5 up to rounding; the t statistic is huge and p tiny either way.
    assert!(r.p_value < 1e-10, "{r:?}");
}

#[test]
fn results_round_trip_through_json() {
    let r = paired_bootstrap(&A10, &B10, 0.95, 500, 3).expect("valid");
    let back: hippo_eval::stats::PairedTest =
        serde_json::from_str(&serde_json::to_string(&r).expect("serialise")).expect("parse");
    // serde_json without its `float_roundtrip` feature may parse the last bit differently.
    for (f, e) in [
        (back.mean_diff, r.mean_diff),
        (back.ci.mean, r.ci.mean),
        (back.ci.lo, r.ci.lo),
        (back.ci.hi, r.ci.hi),
        (back.p_value, r.p_value),
    ] {
        close(f, e, 1e-15);
    }
    let w = wilcoxon_signed_rank(&A10, &B10).expect("valid");
    let json = serde_json::to_string(&w).expect("serialise");
    assert!(json.contains("\"wilcoxon_exact\""), "{json}");
    let back: hippo_eval::stats::TestResult = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, w);
}

#[test]
fn bootstrap_of_a_statistic_draws_like_the_mean_bootstrap() {
    let x = [1.0, 4.0, 2.5, 8.0, 3.0, 0.5];
    let mean =
        |c: &[f64]| c.iter().zip(&x).map(|(w, v)| w * v).sum::<f64>() / c.iter().sum::<f64>();
    let a = hippo_eval::stats::bootstrap_statistic(x.len(), mean, 0.9, 500, 11).expect("bootstrap");
    let b = hippo_eval::stats::bootstrap_mean_ci(&x, 0.9, 500, 11).expect("bootstrap");
    assert!((a.mean - b.mean).abs() < 1e-12);
    assert!(
        (a.lo - b.lo).abs() < 1e-12 && (a.hi - b.hi).abs() < 1e-12,
        "{a:?} vs {b:?}"
    );
    // A ratio of sums; non-finite resamples are dropped, none finite is an error.
    let r = hippo_eval::stats::bootstrap_statistic(3, |c| c[0] / c[1], 0.95, 200, 1)
        .expect("bootstrap");
    assert!(r.lo.is_finite() && r.hi.is_finite() && r.lo <= r.mean.max(r.lo));
    assert!(hippo_eval::stats::bootstrap_statistic(3, |_| f64::NAN, 0.95, 50, 1).is_err());
    assert!(hippo_eval::stats::bootstrap_statistic(1, mean, 0.95, 50, 1).is_err());
}
