"""``python -m srsoup.bench.child JOB.json``: one benchmark configuration in its own process (own peak RSS)."""

from __future__ import annotations

import sys

from srsoup.bench.execute import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
