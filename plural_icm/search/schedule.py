"""Annealing temperature, indexed by the number of ACCEPTED changes (as published)."""

from __future__ import annotations

import math

from plural_icm.config.schema import Schedule


def temperature(n_accepted: int, schedule: Schedule | str, initial: float, final: float,
                decay: float, log_constant: float = 2.0) -> float:
    """``log``: T = max(T_min, T0 / (1 + c ln(1 + n)))  (c = 2 in the published code);
    ``exp``: T = max(T_min, T0 * decay ** n)."""
    schedule = Schedule(schedule)
    if schedule is Schedule.log:
        t = initial / (1.0 + log_constant * math.log1p(n_accepted))
    else:
        t = initial * decay ** n_accepted
    return max(final, t)
