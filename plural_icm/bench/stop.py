"""How long a stop takes to keep its work: ``python -m plural_icm.bench.stop [--signal TERM|INT]``.

Runs the demo cell (``launch.py``: packaged SmolLM2, ``condition=icm``) in a fresh output folder,
waits until its first search has written a checkpoint (so it is mid-search), sends the signal and
prints: seconds from the signal to the new checkpoint on disk, to the process's exit, whether the
search's claim file is gone, the exit status and the last line the run printed. ``--resume``
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


def _launch(out: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PLURAL_ICM_OUTPUT": str(out), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "launch.py", "logger=none", "progress=false", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _labels(out: Path) -> dict:
    return {str(f.parent.relative_to(out)): f.read_text()
            for f in sorted((out / "searches").rglob("labels.jsonl"))}


def measure(sig: int, extra: list[str], resume: bool, timeout: float = 900) -> dict:
    out = Path(tempfile.mkdtemp(prefix="plural_icm-stop-"))
    proc = _launch(out, extra)
    t0 = time.time()
    ck = None
    while time.time() - t0 < timeout and proc.poll() is None:
        found = list((out / "searches").rglob("checkpoint.json")) if (out / "searches").exists() else []
        if found:
            ck = found[0]
            break
        time.sleep(0.05)
    if ck is None:
        proc.kill()
        raise SystemExit(f"no checkpoint appeared (rc {proc.poll()}): {proc.stderr.read()[-2000:]}")
    before = ck.stat().st_mtime_ns
    sent = time.time()
    proc.send_signal(sig)
    saved_at = None
    while proc.poll() is None:
        if saved_at is None and ck.exists() and ck.stat().st_mtime_ns != before:
            saved_at = time.time()
        time.sleep(0.01)
    exited = time.time()
    if saved_at is None and ck.exists() and ck.stat().st_mtime_ns != before:
        saved_at = exited
    _, err = proc.communicate()
    lines = [ln for ln in err.splitlines() if ln.startswith("plural_icm: stopped")]
    state = json.loads(ck.read_text()) if ck.exists() else {}
    row = {"signal": signal.Signals(sig).name, "signal_to_checkpoint_s":
           round(saved_at - sent, 3) if saved_at else None,
           "signal_to_exit_s": round(exited - sent, 3), "returncode": proc.returncode,
           "checkpoint_iteration": state.get("iteration"),
           "claim_left": bool(list(ck.parent.glob(".claim*"))),
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
    ap.add_argument("overrides", nargs="*", help="extra launch.py overrides")
    args = ap.parse_args(argv)
    row = measure(getattr(signal, f"SIG{args.signal}"), args.overrides, args.resume)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
