//! Statistics of the evaluation report: confidence intervals, paired tests, multiple-testing
//! correction.
//!
//! Every function is a pure function of `f64` slices (plus a seed where it resamples), so the same
//! input gives bit-identical output. The reference values in `tests/stats.rs` come from scipy and
//! statsmodels (`scripts/stats_reference.py`).
//!
//! | function | reproduces |
//! |---|---|
//! | [`mean_ci_t`] | `scipy.stats.t.interval(level, n - 1, loc=mean, scale=sem)` |
//! | [`paired_t_test`] | `scipy.stats.ttest_rel(a, b)` (two-sided) |
//! | [`wilcoxon_signed_rank`] | `scipy.stats.wilcoxon(a, b)` with its defaults (`zero_method="wilcox"`, `correction=False`, `method="auto"`, two-sided), scipy 1.17 |
//! | [`holm`] | `statsmodels.stats.multitest.multipletests(p, method="holm")[1]` |
//! | [`bootstrap_mean_ci`], [`paired_bootstrap`], [`bootstrap_statistic`] | percentile bootstrap (Efron & Tibshirani 1993, ch. 13), seeded |
//!
//! # Random numbers
//! The bootstraps draw indices with [`rand::rngs::StdRng`] (ChaCha12 in rand 0.9) seeded by
//! [`rand::SeedableRng::seed_from_u64`], one `random_range(0..n)` per resampled element, resample
//! after resample. The stream is fixed for a given `rand` version (pinned by `Cargo.lock`); rand
//! does not promise that `StdRng` yields the same stream across its major versions.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Errors of the statistics functions (all are caller errors on the input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// No values were given.
    #[error("{what}: no values")]
    Empty {
        /// Which input was empty.
        what: &'static str,
    },
    /// Paired inputs of different lengths.
    #[error("paired samples differ in length: {a} vs {b}")]
    LengthMismatch {
        /// Length of the first sample.
        a: usize,
        /// Length of the second sample.
        b: usize,
    },
    /// Too few values for the statistic.
    #[error("{what}: needs at least {needed} values, got {found}")]
    TooFew {
        /// Which statistic.
        what: &'static str,
        /// The minimum.
        needed: usize,
        /// What was given.
        found: usize,
    },
    /// A NaN or infinite value in the input.
    #[error("{what}: value {index} is not finite ({value})")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Its position.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A confidence level outside (0, 1).
    #[error("confidence level must lie strictly between 0 and 1, got {0}")]
    Level(f64),
    /// Zero bootstrap resamples asked for.
    #[error("the bootstrap needs at least one resample")]
    NoResamples,
    /// A p-value outside [0, 1].
    #[error("p-value {index} is {value}, outside [0, 1]")]
    PValue {
        /// Its position.
        index: usize,
        /// The value.
        value: f64,
    },
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, StatsError>;

/// A point estimate with a two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The sample mean.
    pub mean: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// Which null distribution gave a p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestMethod {
    /// Student t with n − 1 degrees of freedom.
    StudentT,
    /// The exact null distribution of the Wilcoxon statistic (no ties, no zero differences).
    WilcoxonExact,
    /// All 2ⁿ sign flips of the differences enumerated (ties or zeros, n ≤ 13).
    WilcoxonPermutation,
    /// The normal approximation with tie correction, no continuity correction.
    WilcoxonNormal,
    /// Every difference was zero: no evidence either way, the p-value is 1 by definition here
    /// (scipy answers NaN).
    AllZero,
}

/// A test statistic and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The statistic (t for the t test; min(R⁺, R⁻) for Wilcoxon).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// How the p-value was computed.
    pub method: TestMethod,
}

/// A paired bootstrap comparison of two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// mean(a − b).
    pub mean_diff: f64,
    /// Percentile bootstrap interval of mean(a − b); `ci.mean == mean_diff`.
    pub ci: Interval,
    /// Two-sided bootstrap p-value for mean(a − b) = 0.
    pub p_value: f64,
}

fn check_finite(what: &'static str, values: &[f64]) -> Result<()> {
    if values.is_empty() {
        return Err(StatsError::Empty { what });
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(StatsError::NonFinite {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

fn check_min(what: &'static str, n: usize, needed: usize) -> Result<()> {
    if n < needed {
        return Err(StatsError::TooFew {
            what,
            needed,
            found: n,
        });
    }
    Ok(())
}

fn check_level(level: f64) -> Result<()> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(StatsError::Level(level))
    }
}

/// `a[i] − b[i]`, after checking both are non-empty, finite and of equal length.
fn differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_finite("first sample", a)?;
    check_finite("second sample", b)?;
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (ddof = 1), two-pass.
fn sample_sd(values: &[f64], m: f64) -> f64 {
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// Student t interval for the mean.
///
/// `mean ± t_{(1+level)/2, n−1} · s / √n`, with `s` the sample standard deviation (ddof = 1);
/// scipy: `stats.t.interval(level, n - 1, loc=mean, scale=stats.sem(values))`. Needs n ≥ 2; a
/// sample with zero spread gives the degenerate interval `[mean, mean]`.
pub fn mean_ci_t(values: &[f64], level: f64) -> Result<Interval> {
    check_finite("t interval", values)?;
    check_min("t interval", values.len(), 2)?;
    check_level(level)?;
    let n = values.len() as f64;
    let m = mean(values);
    let sem = sample_sd(values, m) / n.sqrt();
    let t = t_quantile(n - 1.0, 0.5 + level / 2.0);
    Ok(Interval {
        mean: m,
        lo: m - t * sem,
        hi: m + t * sem,
    })
}

fn t_quantile(df: f64, p: f64) -> f64 {
    // Infallible: df ≥ 1 and p ∈ (0.5, 1) are checked by the callers.
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| d.inverse_cdf(p))
}

fn t_sf(df: f64, x: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| d.sf(x))
}

fn normal_sf(x: f64) -> f64 {
    Normal::new(0.0, 1.0).map_or(f64::NAN, |d| d.sf(x))
}

/// Linear-interpolation quantile of a sorted slice (numpy's default `method="linear"`).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// `resamples` bootstrap means of `values` (each a mean of n draws with replacement).
fn bootstrap_means(values: &[f64], resamples: usize, seed: u64) -> Vec<f64> {
    let n = values.len();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..resamples)
        .map(|_| {
            let s: f64 = (0..n).map(|_| values[rng.random_range(0..n)]).sum();
            s / n as f64
        })
        .collect()
}

fn percentile_interval(mut means: Vec<f64>, level: f64, m: f64) -> Interval {
    means.sort_by(f64::total_cmp);
    let alpha = 1.0 - level;
    Interval {
        mean: m,
        lo: quantile_sorted(&means, alpha / 2.0),
        hi: quantile_sorted(&means, 1.0 - alpha / 2.0),
    }
}

/// Percentile bootstrap interval for the mean.
///
/// Draws `resamples` samples of size n with replacement (see the module doc for the RNG), takes
/// each one's mean, and returns the `(1 − level)/2` and `(1 + level)/2` quantiles of those means
/// (linear interpolation between order statistics, numpy's default). `mean` is the sample mean.
/// Needs n ≥ 2 and `resamples ≥ 1`.
pub fn bootstrap_mean_ci(
    values: &[f64],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    check_finite("bootstrap", values)?;
    check_min("bootstrap", values.len(), 2)?;
    check_level(level)?;
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    let m = mean(values);
    Ok(percentile_interval(
        bootstrap_means(values, resamples, seed),
        level,
        m,
    ))
}

/// Percentile bootstrap interval of any statistic of `n` units resampled together (e.g. a ratio
/// of sums over documents, where every scorer's numbers of one document move as a pair).
///
/// `stat(counts)` gets how often each unit was drawn (`counts[i]`, summing to `n`) and returns the
/// statistic of that resample; `mean` is `stat` of the sample itself (every count 1). Index draws
/// as in [`bootstrap_mean_ci`] (same seed ⇒ same draws). Resamples whose statistic is not finite
/// (e.g. a zero denominator) are dropped; none left is [`StatsError::TooFew`]. Needs n ≥ 2.
pub fn bootstrap_statistic(
    n: usize,
    stat: impl Fn(&[f64]) -> f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    check_min("bootstrap", n, 2)?;
    check_level(level)?;
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    let m = stat(&vec![1.0; n]);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = vec![0.0; n];
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0.0);
        for _ in 0..n {
            counts[rng.random_range(0..n)] += 1.0;
        }
        let v = stat(&counts);
        if v.is_finite() {
            draws.push(v);
        }
    }
    if draws.is_empty() {
        return Err(StatsError::TooFew {
            what: "bootstrap (finite resampled statistics)",
            needed: 1,
            found: 0,
        });
    }
    Ok(percentile_interval(draws, level, m))
}

/// Paired bootstrap of `mean(a − b)`: interval and two-sided p-value.
///
/// The pairs are resampled together, i.e. the differences `dᵢ = aᵢ − bᵢ` are bootstrapped
/// (`resamples` means `m*₁ … m*_B` exactly as in [`bootstrap_mean_ci`], same seed ⇒ same draws).
/// - `ci` is the percentile interval of the `m*` at `level`.
/// - `p_value` tests `E[d] = 0` by the shifted-null bootstrap (Efron & Tibshirani 1993, §16.4):
///   the `m* − d̄` are draws of the statistic under a null centred at 0, so
///   `p = (1 + #{ |m*_k − d̄| ≥ |d̄| }) / (B + 1)`, which never reports 0 (the `+1` counts the
///   observed sample, Davison & Hinkley 1997, eq. 4.11).
///
/// Per-document use: `a` and `b` hold one number per document (e.g. mean NLL of the late
/// segments under the base model and under HippoFormer); the long-range benefit
/// `base − HippoFormer` with its interval is `paired_bootstrap(base, hippo, …)`.
///
/// Needs n ≥ 2 pairs and `resamples ≥ 1`.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<PairedTest> {
    let d = differences(a, b)?;
    check_min("paired bootstrap", d.len(), 2)?;
    check_level(level)?;
    if resamples == 0 {
        return Err(StatsError::NoResamples);
    }
    let m = mean(&d);
    let means = bootstrap_means(&d, resamples, seed);
    let extreme = means.iter().filter(|&&x| (x - m).abs() >= m.abs()).count();
    let p_value = (1 + extreme) as f64 / (resamples + 1) as f64;
    Ok(PairedTest {
        mean_diff: m,
        ci: percentile_interval(means, level, m),
        p_value,
    })
}

/// Paired Student t test (two-sided), as `scipy.stats.ttest_rel(a, b)`.
///
/// `t = d̄ / (s_d / √n)` with `dᵢ = aᵢ − bᵢ`, `s_d` the sample standard deviation (ddof = 1),
/// `p = 2 · P(T_{n−1} ≥ |t|)`. Needs n ≥ 2. When every difference is the same value `c`:
/// `c = 0` gives `t = 0, p = 1` (method [`TestMethod::AllZero`]; scipy answers NaN), `c ≠ 0`
/// gives `t = ±∞, p = 0` (as scipy).
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TestResult> {
    let d = differences(a, b)?;
    check_min("paired t test", d.len(), 2)?;
    let n = d.len() as f64;
    let m = mean(&d);
    let sd = sample_sd(&d, m);
    if sd == 0.0 {
        return Ok(if m == 0.0 {
            TestResult {
                statistic: 0.0,
                p_value: 1.0,
                method: TestMethod::AllZero,
            }
        } else {
            TestResult {
                statistic: f64::INFINITY.copysign(m),
                p_value: 0.0,
                method: TestMethod::StudentT,
            }
        });
    }
    let t = m / (sd / n.sqrt());
    Ok(TestResult {
        statistic: t,
        p_value: (2.0 * t_sf(n - 1.0, t.abs())).min(1.0),
        method: TestMethod::StudentT,
    })
}

/// Average ranks (1-based) of `values`, ties sharing the mean of their positions.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start+1 ..= end share their mean rank.
        let r = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = r;
        }
        start = end;
    }
    ranks
}

/// Counts of the subsets of {1, …, n} by their sum: the exact null distribution of R⁺ (times 2ⁿ).
fn wilcoxon_counts(n: usize) -> Vec<u64> {
    let max = n * (n + 1) / 2;
    let mut c = vec![0u64; max + 1];
    c[0] = 1;
    for k in 1..=n {
        for s in (k..=k * (k + 1) / 2).rev() {
            c[s] += c[s - k];
        }
    }
    c
}

/// Wilcoxon signed-rank test of `a − b` (two-sided), as `scipy.stats.wilcoxon(a, b)` with its
/// defaults in scipy 1.17 (`zero_method="wilcox"`, `correction=False`, `method="auto"`).
///
/// Zero differences are dropped (Wilcoxon's rule); the remaining `|dᵢ|` are ranked, ties taking
/// the average rank; `R⁺`/`R⁻` sum the ranks of positive/negative differences and the statistic
/// is `min(R⁺, R⁻)`. The p-value follows scipy's `method="auto"`, where n counts every pair
/// (zeros included):
/// - n ≤ 50, no ties and no zeros: the exact null distribution of R⁺ (all 2ⁿ sign patterns),
///   `p = min(1, 2 · min(P(R⁺ ≥ r), P(R⁺ ≤ r)))` ([`TestMethod::WilcoxonExact`]);
/// - n ≤ 13 with ties or zeros: the exact permutation distribution of R⁺ over all 2ⁿ sign flips
///   of the differences with their average ranks, `p = min(1, 2 · min(#{≥ r}, #{≤ r}) / 2ⁿ)`
///   ([`TestMethod::WilcoxonPermutation`]; scipy's `permutation_test` enumerates the same set);
/// - otherwise the normal approximation on the m non-zero differences:
///   `z = (R⁺ − m(m+1)/4) / σ`, `σ² = (m(m+1)(2m+1) − Σ(t³ − t)/2) / 24` over tie groups of size
///   t, no continuity correction, `p = 2 · P(Z ≥ |z|)` ([`TestMethod::WilcoxonNormal`]).
///
/// All differences zero gives statistic 0 and p = 1 ([`TestMethod::AllZero`]; scipy answers
/// NaN).
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Result<TestResult> {
    let d = differences(a, b)?;
    let n = d.len();
    let nonzero: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    let zeros = n - nonzero.len();
    if nonzero.is_empty() {
        return Ok(TestResult {
            statistic: 0.0,
            p_value: 1.0,
            method: TestMethod::AllZero,
        });
    }
    let m = nonzero.len();
    let abs: Vec<f64> = nonzero.iter().map(|x| x.abs()).collect();
    let ranks = average_ranks(&abs);
    let r_plus: f64 = nonzero
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (m * (m + 1)) as f64 / 2.0;
    let r_minus = total - r_plus;
    let statistic = r_plus.min(r_minus);
    // Tie groups of the absolute non-zero differences.
    let mut sorted = abs.clone();
    sorted.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut has_ties = false;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        if j - i > 1 {
            has_ties = true;
        }
        tie_term += t * t * t - t;
        i = j;
    }
    let (p_value, method) = if n <= 50 && !has_ties && zeros == 0 {
        let counts = wilcoxon_counts(m);
        // Ranks are the integers 1..=m here, so R⁺ is an integer.
        let r = r_plus.round() as usize;
        let total = 2f64.powi(m as i32);
        let upper: u64 = counts[r..].iter().sum();
        let lower: u64 = counts[..=r].iter().sum();
        let p = 2.0 * (upper.min(lower) as f64 / total);
        (p.min(1.0), TestMethod::WilcoxonExact)
    } else if n <= 13 {
        // Ranks are multiples of 1/2: work in half-ranks to compare exactly.
        let half: Vec<u64> = ranks.iter().map(|r| (2.0 * r).round() as u64).collect();
        let observed = (2.0 * r_plus).round() as u64;
        let (mut ge, mut le) = (0u64, 0u64);
        for mask in 0u32..(1u32 << m) {
            let s: u64 = half
                .iter()
                .enumerate()
                .filter(|(k, _)| mask & (1 << k) != 0)
                .map(|(_, h)| h)
                .sum();
            ge += u64::from(s >= observed);
            le += u64::from(s <= observed);
        }
        let p = 2.0 * ge.min(le) as f64 / 2f64.powi(m as i32);
        (p.min(1.0), TestMethod::WilcoxonPermutation)
    } else {
        let mf = m as f64;
        let mean = mf * (mf + 1.0) / 4.0;
        let var = (mf * (mf + 1.0) * (2.0 * mf + 1.0) - tie_term / 2.0) / 24.0;
        let z = (r_plus - mean) / var.sqrt();
        (
            (2.0 * normal_sf(z.abs())).min(1.0),
            TestMethod::WilcoxonNormal,
        )
    };
    Ok(TestResult {
        statistic,
        p_value,
        method,
    })
}

/// Holm's step-down adjusted p-values, in the input order, as statsmodels
/// `multipletests(p, method="holm")[1]`.
///
/// With the p-values sorted ascending `p₍₁₎ ≤ … ≤ p₍ₘ₎`:
/// `p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1) · p₍ⱼ₎)`. Ties keep their input order (a stable sort),
/// which does not change the adjusted values. An empty input gives an empty output.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>> {
    if let Some(index) = p_values
        .iter()
        .position(|p| !(0.0..=1.0).contains(p) || p.is_nan())
    {
        return Err(StatsError::PValue {
            index,
            value: p_values[index],
        });
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max((m - rank) as f64 * p_values[i]).min(1.0);
        adjusted[i] = running;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilcoxon_counts_small_n() {
        // n = 3: subsets of {1,2,3} by sum: 0:{}, 1:{1}, 2:{2}, 3:{3},{1,2}, 4:{1,3}, 5:{2,3}, 6:{1,2,3}.
        assert_eq!(wilcoxon_counts(3), vec![1, 1, 1, 2, 1, 1, 1]);
        assert_eq!(wilcoxon_counts(10).iter().sum::<u64>(), 1 << 10);
    }

    #[test]
    fn average_ranks_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 1.0, 2.0]),
            vec![4.0, 1.5, 1.5, 3.0]
        );
    }
}
