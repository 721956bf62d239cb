"""Reference values for crates/hippo-eval/tests/stats.rs (scipy / statsmodels).

Run from the repo root with the dev venv:

    /work/venv/py/bin/python scripts/stats_reference.py

It prints one line per case, `name = value`, full precision (repr). The Rust test copies the
inputs below verbatim and the printed numbers as constants. Deterministic: no random numbers.
"""

import numpy as np
import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.multitest import multipletests

# Inputs (the Rust test has the same literals).
X = [2.31, 2.74, 2.05, 3.12, 2.66, 2.48, 2.93, 2.21]
A10 = [3.41, 3.18, 3.72, 2.95, 3.30, 3.64, 3.05, 3.27, 3.51, 3.12]
# A10 - B10 = [.06, -.02, .13, .04, .09, .11, -.03, .12, .07, .10]: no ties, no zeros.
B10 = [3.35, 3.20, 3.59, 2.91, 3.21, 3.53, 3.08, 3.15, 3.44, 3.02]
# Paired samples with tied |differences| (n = 10 -> permutation branch of method="auto").
TIE_A = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
TIE_B = [0.5, 2.5, 2.0, 3.0, 5.5, 4.0, 6.5, 6.0, 9.5, 8.0]
# A zero difference (n = 12 -> permutation branch).
ZERO_A = [5.1, 4.8, 6.2, 5.5, 4.9, 5.0, 6.1, 5.7, 4.4, 5.3, 5.9, 6.0]
ZERO_B = [4.6, 4.8, 5.1, 5.9, 4.2, 5.3, 5.2, 4.5, 4.1, 5.3, 5.6, 4.7]
# Holm input: ties, an already-monotone tail, and products above 1.
HOLM_P = [0.01, 0.04, 0.03, 0.04, 0.20, 0.50, 0.005]


def integer_pairs(n, mod_a, mul_a, mod_b, mul_b, scale):
    """a_i = ((i * mul_a) % mod_a) / scale, b_i likewise: exact in binary for scale = 4."""
    a = [((i * mul_a) % mod_a) / scale for i in range(1, n + 1)]
    b = [((i * mul_b) % mod_b) / scale for i in range(1, n + 1)]
    return a, b


def distinct_diffs(n):
    """d_i = ((i * 7919) % 211) - 50.25: distinct |d| (no r1 + r2 = 100.5), b = 0."""
    return [((i * 7919) % 211) - 50.25 for i in range(1, n + 1)], [0.0] * n


def show(name, value):
    print(f"{name} = {value!r}")


def main():
    print(f"# scipy {scipy.__version__}, statsmodels {statsmodels.__version__}, numpy {np.__version__}")
    x = np.array(X)
    for level in (0.95, 0.90):
        lo, hi = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        show(f"t_interval(X, {level}).mean", float(x.mean()))
        show(f"t_interval(X, {level}).lo", float(lo))
        show(f"t_interval(X, {level}).hi", float(hi))

    r = stats.ttest_rel(A10, B10)
    show("ttest_rel(A10, B10).statistic", float(r.statistic))
    show("ttest_rel(A10, B10).pvalue", float(r.pvalue))

    # Exact branch: n <= 50, no ties, no zeros.
    r = stats.wilcoxon(A10, B10)
    show("wilcoxon(A10, B10).statistic", float(r.statistic))
    show("wilcoxon(A10, B10).pvalue", float(r.pvalue))
    a, b = distinct_diffs(30)
    r = stats.wilcoxon(a, b)
    show("wilcoxon(distinct_diffs(30)).statistic", float(r.statistic))
    show("wilcoxon(distinct_diffs(30)).pvalue", float(r.pvalue))
    # Permutation branch: ties / zeros with n <= 13.
    r = stats.wilcoxon(TIE_A, TIE_B)
    show("wilcoxon(TIE_A, TIE_B).statistic", float(r.statistic))
    show("wilcoxon(TIE_A, TIE_B).pvalue", float(r.pvalue))
    r = stats.wilcoxon(ZERO_A, ZERO_B)
    show("wilcoxon(ZERO_A, ZERO_B).statistic", float(r.statistic))
    show("wilcoxon(ZERO_A, ZERO_B).pvalue", float(r.pvalue))
    # Normal branch: n > 50 without ties; ties and zeros with 13 < n <= 50 (zeros dropped,
    # tie correction).
    a, b = distinct_diffs(60)
    r = stats.wilcoxon(a, b)
    show("wilcoxon(distinct_diffs(60)).statistic", float(r.statistic))
    show("wilcoxon(distinct_diffs(60)).pvalue", float(r.pvalue))
    a, b = integer_pairs(40, 17, 5, 19, 3, 4.0)
    d = np.array(a) - np.array(b)
    print(f"# integer_pairs(40, 17, 5, 19, 3, 4.0): {int((d == 0).sum())} zero differences, "
          f"{len(np.unique(np.abs(d[d != 0])))} distinct non-zero |d| of {int((d != 0).sum())}")
    r = stats.wilcoxon(a, b)
    show("wilcoxon(integer_pairs(40, 17, 5, 19, 3, 4.0)).statistic", float(r.statistic))
    show("wilcoxon(integer_pairs(40, 17, 5, 19, 3, 4.0)).pvalue", float(r.pvalue))

    reject, adj, _, _ = multipletests(HOLM_P, method="holm")
    show("multipletests(HOLM_P, method='holm')[1]", [float(p) for p in adj])


if __name__ == "__main__":
    main()
