"""A cell's metrics are finite numbers or explicit ``None``: a NaN anywhere fails the cell.

NaN comes from bad input that slipped through (an infinite count, ``icm.alpha=nan``) or from a
bug; written to ``metrics.json`` it would look like a real number to the analysis (or be turned
into one). :func:`check_metrics_finite` is called before any result file of a cell is written.
"""

from __future__ import annotations

from plural_icm.errors import UserError
from plural_icm.utils.values import non_finite_metrics


class NonFiniteMetricError(UserError, ValueError):
    """A metric is NaN or infinite; the cell is not written as complete."""


def check_metrics_finite(metrics: dict, where: str = "cell") -> None:
    """Raise :class:`NonFiniteMetricError` naming the first few non-finite metrics."""
    bad = non_finite_metrics(metrics)
    if bad:
        raise NonFiniteMetricError(
            f"{where}: {len(bad)} metric(s) are NaN or infinite ({', '.join(bad[:5])}); the cell "
            f"is not written as complete. Check the input data and the config values that feed "
            f"them")


__all__ = ["check_metrics_finite", "non_finite_metrics", "NonFiniteMetricError"]
