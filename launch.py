"""The one entry point: `python launch.py [overrides]`, `python launch.py -m <sweep>`.

Thin on purpose: compose the config (conf/), dispatch on `stage`, always close the W&B run.
"""

import hydra
from omegaconf import DictConfig

from plural_icm.config.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from plural_icm.pipeline.task import run_task

    return run_task(cfg)


if __name__ == "__main__":
    main()
