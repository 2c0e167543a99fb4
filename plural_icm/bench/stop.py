"""How long a stop takes to keep its work: ``python -m plural_icm.bench.stop [--signal TERM|INT]``.

Runs the demo cell (``launch.py``: packaged SmolLM2, ``condition=icm``) in a fresh output folder,
waits until its first search has written a checkpoint (or ``--after`` seconds after the searches
took their claims), sends the signal and prints: per search the checkpoint written after the
signal (iteration, seconds after it), seconds to the process's exit, claim files left, the exit
status and the line the run printed. ``--resume``
relaunches and reports whether the resumed labels equal those of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sigint_default() -> None:
    """In a child before it runs (``preexec_fn``): SIGINT at its default action, as in a
    terminal's foreground job. Started in the background (`cmd &`, nohup), a parent passes SIGINT
    on ignored, and a process that starts with it ignored keeps ignoring it (Python and
    StopRequest alike)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _launch(out: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PLURAL_ICM_OUTPUT": str(out), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "launch.py", "logger=none", "progress=false", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)


def _labels(out: Path) -> dict:
    return {str(f.parent.relative_to(out)): f.read_text()
            for f in sorted((out / "searches").rglob("labels.jsonl"))}


def measure(sig: int, extra: list[str], resume: bool, after: float | None,
            timeout: float = 1800, output: str | None = None) -> dict:
    out = Path(output) if output else Path(tempfile.mkdtemp(prefix="plural_icm-stop-"))
    proc = _launch(out, extra)
    t0 = time.time()
    claimed = None
    while time.time() - t0 < timeout and proc.poll() is None:
        searches = out / "searches"
        if claimed is None and searches.exists() and list(searches.rglob(".claim")):
            claimed = time.time()
        if searches.exists() and list(searches.rglob("checkpoint.json")) and not output:
            break
        if after is not None and claimed is not None and time.time() - claimed >= after:
            break
        time.sleep(0.05)
    if proc.poll() is not None or claimed is None:
        proc.kill()
        raise SystemExit(f"the search never started (rc {proc.poll()}): {proc.stderr.read()[-2000:]}")
    search_dirs = sorted({c.parent for c in (out / "searches").rglob(".claim")})
    before = {d: (d / "checkpoint.json").stat().st_mtime_ns if (d / "checkpoint.json").exists()
              else None for d in search_dirs}
    sent = time.time()
    proc.send_signal(sig)
    while proc.poll() is None:
        time.sleep(0.01)
    exited = time.time()
    _, err = proc.communicate()
    lines = [ln for ln in err.splitlines() if ln.startswith("plural_icm: stopped")]
    saved = {}
    for d in search_dirs:
        ck = d / "checkpoint.json"
        if ck.exists() and ck.stat().st_mtime_ns != before[d]:
            saved[d.parent.name] = {"iteration": json.loads(ck.read_text()).get("iteration"),
                                    "s_after_signal": round(ck.stat().st_mtime - sent, 3)}
    row = {"signal": signal.Signals(sig).name, "signal_after_search_start_s": round(sent - claimed, 1),
           "checkpoints_written_after_signal": saved,
           "signal_to_exit_s": round(exited - sent, 3), "returncode": proc.returncode,
           "claims_left": sum(bool(list(d.glob(".claim*"))) for d in search_dirs),
           "traceback": "Traceback" in err, "stop_lines": lines, "output": str(out)}
    if resume:
        r = _launch(out, extra)
        r.communicate()
        resumed = _labels(out)
        ref_out = Path(tempfile.mkdtemp(prefix="plural_icm-stop-ref-"))
        _launch(ref_out, extra).communicate()
        row["resume_returncode"] = r.returncode
        row["resumed_labels_equal_uninterrupted"] = resumed == _labels(ref_out) and bool(resumed)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signal", default="TERM", choices=["TERM", "INT", "USR2"])
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--after", type=float, default=None,
                    help="send the signal this many seconds after the searches took their claims "
                         "(default: at their first checkpoint)")
    ap.add_argument("--output", default=None,
                    help="an output folder of an earlier (stopped) run: its searches resume, so "
                         "a stop has an iteration to keep at once (with --after)")
    ap.add_argument("overrides", nargs="*", help="extra launch.py overrides")
    args = ap.parse_args(argv)
    row = measure(getattr(signal, f"SIG{args.signal}"), args.overrides, args.resume, args.after,
                  output=args.output)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
