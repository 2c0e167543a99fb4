"""The W&B view of what cells and reports write: metrics in the summary, predictions and report
tables as W&B Tables, figures as images, and the result files as an Artifact.

Artifact names are derived from the result paths, so they are readable and stable:
``cell-<run_tag>-<model>-<dataset>-<condition>-n<n>-fold<k>-seed<s>`` (type ``cell``) and
``report-<group>`` (type ``report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from plural_icm.tracking.wandb_run import NullJobRun, artifact_safe, start_job_run

#: Files of a cell directory logged as its Artifact (those that exist).
CELL_ARTIFACT_FILES = ("metrics.json", "predictions.jsonl", "examples.jsonl", "generations.jsonl",
                       "config.yaml", "COMPLETE.json")


def cell_artifact_name(cell_dir: str | Path, results_dir: str | Path) -> str:
    """``cell-`` + the cell's path under the results directory, joined with ``-``."""
    try:
        rel = Path(cell_dir).resolve().relative_to(Path(results_dir).resolve())
    except ValueError:
        rel = Path(Path(cell_dir).name)
    return artifact_safe("cell-" + "-".join(rel.parts))


def log_cell_result(wb: NullJobRun, cell_dir: str | Path, results_dir: str | Path,
                    metrics: Mapping[str, Any], predictions: Any) -> None:
    """A computed cell: its metrics (summary), predictions (Table) and files (Artifact)."""
    cell_dir = Path(cell_dir)
    wb.log_metrics(metrics)
    wb.log_table("predictions", predictions)
    wb.log_files_artifact(cell_artifact_name(cell_dir, results_dir), "cell",
                          [cell_dir / f for f in CELL_ARTIFACT_FILES],
                          metadata={"overall": dict(metrics.get("overall", {})),
                                    "meta": {k: v for k, v in dict(metrics.get("meta", {})).items()
                                             if not isinstance(v, (dict, list))}})


def log_report(written: Iterable[Path], *, outputs: str | Path, run_tag: str,
               group: str | None = None, project: str | None = None, entity: str | None = None,
               mode: str = "offline", wb_dir: str | Path | None = None) -> NullJobRun:
    """Log a built report to one run (``job_type=report``) of the sweep's group: every CSV table
    (ours beside the paper's where the table has them) as a W&B Table, every PNG figure as an
    image, ``report.md`` and all files as an Artifact. Returns the finished run."""
    import pandas as pd

    written = [Path(p) for p in written]
    cfg = {"logger": {"name": "wandb", "mode": mode, "project": project, "entity": entity,
                      "group": group or f"grid-{run_tag}",
                      "dir": str(wb_dir or outputs)},
           "run_tag": run_tag, "paths": {"output_dir": str(outputs)},
           "report": {"files": [p.name for p in written]}}
    wb = start_job_run(cfg, job_type="report", name=f"report/{run_tag}",
                        tags={"run_tag": run_tag}, hydra_choices={})
    try:
        for p in written:
            if p.suffix == ".csv":
                try:
                    df = pd.read_csv(p)
                except pd.errors.EmptyDataError:
                    continue
                if len(df.columns):
                    wb.log_table(f"report/{p.stem}", df)
        wb.log_images({f"figures/{p.stem}": p for p in written if p.suffix == ".png"})
        wb.log_files_artifact(f"report-{cfg['logger']['group']}", "report", written,
                              metadata={"run_tag": run_tag, "n_files": len(written)})
    except BaseException as exc:
        wb.finish(exit_code=1, error=exc)
        raise
    wb.finish(exit_code=0)
    return wb
