"""The skips of a `pytest -rs` run of the GPU tests, judged for benchmarks/gpu_check.sh:

    python benchmarks/gpu_check_skips.py PYTEST_LOG

Lists every skip with its reason, and exits 1 when any was skipped for a reason other than
ALLOWED: on a GPU machine a skipped GPU test is a check that did not run, so the check is not
passed; only the tests that need more GPUs than the machine has may stay out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ALLOWED = "needs more GPUs than this machine has"
SKIP_LINE = re.compile(r"^SKIPPED \[(\d+)\] (.+?): (.*)$")  # pytest -rs: "SKIPPED [count] file:line: reason"


def skips(log: str) -> list[tuple[int, str, str]]:
    """(count, where, reason) of every skip line in pytest's short test summary."""
    return [(int(m[1]), m[2], m[3]) for line in log.splitlines() if (m := SKIP_LINE.match(line.strip()))]


def main(argv: list[str]) -> int:
    found = skips(Path(argv[1]).read_text(errors="replace"))
    refused = [(count, where, reason) for count, where, reason in found if not reason.startswith(ALLOWED)]
    for count, where, reason in found:
        verdict = "allowed" if (count, where, reason) not in refused else "NOT ALLOWED"
        print(f"gpu_check: skipped {count} at {where}: {reason} [{verdict}]")
    if refused:
        print(f"gpu_check: failed: {sum(c for c, _, _ in refused)} GPU test(s) skipped, not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
