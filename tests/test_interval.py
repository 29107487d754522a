"""The 95% interval of evaluation means (`robolearn eval` / `compare`): Student's t, not the normal 1.96, so that
the few-episode intervals are not overconfident. Checked against published t-table values and closed forms."""

from __future__ import annotations

import math
import statistics

import pytest

from robolearn.learn.eval_run import ci95, t_critical

# Two-sided 95% critical values t_{0.975, df} as printed in t tables (3 decimals).
T_TABLE_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 9: 2.262, 10: 2.228, 15: 2.131,
              20: 2.086, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def test_t_critical_matches_the_t_table():
    for df, t in T_TABLE_95.items():
        assert t_critical(df) == pytest.approx(t, abs=5e-4), df
    assert t_critical(9, 0.99) == pytest.approx(3.250, abs=5e-4)  # t_{0.995, 9}
    assert t_critical(4, 0.90) == pytest.approx(2.132, abs=5e-4)  # t_{0.95, 4}


def test_t_critical_closed_forms_and_the_normal_limit():
    # df = 1 (Cauchy): t = tan(0.95 pi / 2); df = 2: P(|T| <= t) = t / sqrt(2 + t^2)  ->  t = 0.95 sqrt(2 / 0.0975)
    assert t_critical(1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-12)
    assert t_critical(2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-12)
    z = statistics.NormalDist().inv_cdf(0.975)  # 1.959964
    assert t_critical(10**7) == pytest.approx(z, abs=1e-6)
    # exact sum (<= 1000) and the large-df expansion (> 1000) agree where they meet; t decreases with df
    assert t_critical(1000) == pytest.approx(t_critical(1001), abs=1e-5) and t_critical(1000) > t_critical(1001)
    values = [t_critical(df) for df in (1, 2, 3, 5, 10, 30, 100, 1000, 5000)]
    assert values == sorted(values, reverse=True) and values[-1] > z
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t_critical(bad)


def test_t_critical_equals_scipy_where_available():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 11, 50, 333, 999, 1000, 1001, 4000):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10), df


def test_ci95_uses_student_t_for_small_n():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # n = 5: s = sqrt(2.5), t_{0.975, 4} = 2.776
    assert ci95(values) == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert ci95(values) == pytest.approx(1.9632, abs=1e-4)  # 1.96 would give 1.386: 30% too narrow
    assert ci95([3.0, 5.0]) == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=1e-3)  # n = 2: t = 12.706
    big = [float(i % 7) for i in range(2000)]
    assert ci95(big) == pytest.approx(1.9612 * statistics.stdev(big) / math.sqrt(2000), rel=1e-4)
    assert math.isnan(ci95([1.0])) and ci95([2.0, 2.0, 2.0]) == 0.0
