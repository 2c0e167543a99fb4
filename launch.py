"""The one entry point: `python launch.py [overrides]`, `python launch.py -m <sweep>`.

Thin on purpose: check the command line (unknown `+` keys, secrets, quoting) and that the output
folder can be written, before Hydra writes anything; compose the config (conf/), dispatch on
`stage`, always close the W&B run. Errors of bad input (plural_icm.errors.UserError) print as
their message alone; HYDRA_FULL_ERROR=1 shows the stack trace. Ctrl-C prints one line saying what was kept (exit status 130), never a trace.
"""

import os
import sys


def _quiet_interrupt(kind, value, tb, _default=sys.excepthook):
    """Ctrl-C before the run starts (while importing): one line, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print("plural_icm: stopped by SIGINT (Ctrl-C) before anything ran", file=sys.stderr)
        return
    _default(kind, value, tb)


if __name__ == "__main__":
    sys.excepthook = _quiet_interrupt

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from plural_icm.config.schema import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from plural_icm.pipeline.task import run_task

    return run_task(cfg)


if __name__ == "__main__":
    from plural_icm.config.guard import command_line_error, output_folder_error

    problem = command_line_error(sys.argv[1:])
    if problem:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            from plural_icm.errors import ConfigError

            raise ConfigError(problem)
        sys.exit(f"error: {problem}")
    problem = output_folder_error()
    if problem:
        sys.exit(f"error: {problem}")
    try:
        main()
    except KeyboardInterrupt:
        # Ctrl-C: no traceback. A search that was running printed what it kept
        # (plural_icm.utils.stop); elsewhere (loading a model, scoring a cell) say it here.
        from plural_icm.utils.stop import stop_was_reported

        if not stop_was_reported():
            print("plural_icm: stopped by SIGINT (Ctrl-C); every finished search and cell is kept "
                  "on disk; run the same command again to continue", file=sys.stderr, flush=True)
        sys.exit(130)
