"""Annealing temperature.

Two log schedules exist in the sources: the published CODE's
``T = max(T_min, T0 / (1 + 2 ln(1 + n)))`` with ``n`` the number of ACCEPTED changes, and Wen et
al.'s paper text (Alg. 1) ``T = T0 / (1 + beta ln n)`` with ``beta = 0.99`` and ``n`` the
iteration (1, 2, ...). Both are ``schedule=log``: the constant is ``log_schedule_constant`` and the
index ``temperature_index`` (``accepted`` | ``iteration``); with the 0-based iteration ``i`` the
paper's ``ln n`` is ``ln(1 + i)``, so one formula serves both.
"""

from __future__ import annotations

import math

from plural_icm.choices import Schedule

INDEXES = ("accepted", "iteration")


def temperature(n: int, schedule: Schedule | str, initial: float, final: float,
                decay: float, log_constant: float = 2.0) -> float:
    """``log``: T = max(T_min, T0 / (1 + c ln(1 + n)))  (c = 2 in the published code);
    ``exp``: T = max(T_min, T0 * decay ** n). ``n`` comes from :func:`temperature_index`."""
    schedule = Schedule(schedule)
    if schedule is Schedule.log:
        t = initial / (1.0 + log_constant * math.log1p(n))
    else:
        t = initial * decay ** n
    return max(final, t)


def temperature_index(index: str, iteration: int, accepted: int) -> int:
    """The schedule's ``n``: accepted changes so far (the published code) or the 0-based
    iteration (Wen et al.'s Alg. 1, whose ``n`` counts from 1: ``ln n = ln(1 + iteration)``)."""
    if index == "accepted":
        return accepted
    if index == "iteration":
        return iteration
    raise ValueError(f"icm.temperature_index must be one of {INDEXES}, got {index!r}")
