"""What happens when a job's searches first need the base model: the progress bar names the phase
(loading the model, then the first evaluation with its seed repair, counting prompts scored), the
prefix cache's budget is sized to the model, the machine and the searches and stated in one line
(plural_icm.pipeline.memory), and when the searches end the prompt counting is undone and the
prefix cache emptied, with a line saying what it held (the same backend may serve the cell's
inference next, whose prompts share nothing with the searches')."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Sequence

from plural_icm.pipeline.memory import release_prefix_cache, size_prefix_cache
from plural_icm.search.progress import SearchProgress, count_prompts, stop_counting

log = logging.getLogger(__name__)


def base_model_for_searches(get_base: Callable[[], Any], tasks: Sequence[Any],
                            progress: SearchProgress) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(the backend factory to hand the search store, the function that releases what it set
    up). The factory is called only when a search must be computed."""
    got: list[Any] = []

    def factory() -> Any:
        progress.starting()
        backend = get_base()
        budget = size_prefix_cache(backend, tasks)
        if budget:
            log.info("%s", budget)
        progress.starting("first evaluation (seed labels and their repair)")
        count_prompts(backend, progress.scored)
        got.append(backend)
        return backend

    def release() -> None:
        for backend in got:
            stop_counting(backend)
            held = release_prefix_cache(backend)
            # called from a finally: a stop (Ctrl-C) or failure prints its own line, not this one
            if held and sys.exc_info()[0] is None:
                log.info("%s", held)

    return factory, release
