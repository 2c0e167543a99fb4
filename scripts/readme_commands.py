"""The README's own commands, read from README.md so that CI runs exactly what a new user reads.

The "Quick start" section holds two fenced ``bash`` blocks: the install command (which creates
``.venv`` and runs the demo) and the test command. ``.ci/run`` executes them verbatim and
``tests/test_ci.py`` checks that it does.

    python scripts/readme_commands.py install     # prints the install command
    python scripts/readme_commands.py test        # prints the test command
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "Quick start"
KINDS = ("install", "test")  # the order of the blocks in the section


def quick_start_commands(text: str, source: str = "README.md") -> dict[str, str]:
    """``{"install": ..., "test": ...}`` from the fenced bash blocks of the Quick start section.

    Raises ValueError naming the file and what is missing when the section or a block is absent,
    or when a block holds more than one command line (CI runs each block as one command).
    """
    m = re.search(rf"^## {re.escape(SECTION)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if m is None:
        raise ValueError(f"{source}: no '## {SECTION}' section")
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", m.group(1), re.M | re.S)
    if len(blocks) < len(KINDS):
        raise ValueError(f"{source}: the '{SECTION}' section needs {len(KINDS)} fenced bash blocks "
                         f"({', '.join(KINDS)} command), found {len(blocks)}")
    out = {}
    for kind, block in zip(KINDS, blocks):
        lines = [l for l in block.strip().splitlines() if l.strip()]
        if len(lines) != 1:
            raise ValueError(f"{source}: the {kind} block of '{SECTION}' must be one command line, "
                             f"got {len(lines)} lines")
        out[kind] = lines[0].strip()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        print(f"usage: {Path(__file__).name} {{{'|'.join(KINDS)}}}", file=sys.stderr)
        return 2
    print(quick_start_commands(README.read_text(encoding="utf-8"), str(README))[argv[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
