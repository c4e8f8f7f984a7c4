"""`srsoup report`: Pareto fronts, hypervolume and image grids from run and sweep dirs."""

from __future__ import annotations

import argparse
import sys

# pandas, matplotlib and moocore load inside the functions that need them, so that importing
# the CLI (and `srsoup run`) does not pay for them.
__all__ = ["build_report", "main"]


def build_report(*args, **kwargs):
    """See `srsoup.report.build.build_report`; re-exported without importing pandas eagerly."""
    from .build import build_report as _build_report

    return _build_report(*args, **kwargs)


def _parse_ref(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid reference point {text!r}: expected R1,R2,...") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, no usage block: the contract for bad input across srsoup's commands.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="srsoup report",
        description="Per-weight mean rewards (95% Student-t CI), non-dominated fronts, "
        "hypervolume (moocore) and image grids of run dirs or Hydra multirun sweep dirs.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run dir or multirun sweep dir")
    parser.add_argument("--out", help="output dir (default: report/ inside the first DIR)")
    parser.add_argument(
        "--ref",
        type=_parse_ref,
        metavar="R1,R2,...",
        help="hypervolume reference point, one value per guided reward in w_ column order "
        "(default: per-reward minimum over all compared points minus --margin × range)",
    )
    parser.add_argument(
        "--margin", type=float, default=0.05, help="margin of the default reference point (default 0.05)"
    )
    parser.add_argument("--grid-rows", type=int, default=8, help="prompt×seed rows per image grid (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `srsoup report`; returns the exit code (2 on bad input)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # the parser printed its one-line error (or --help)
        return int(exit_.code or 0)
    from .load import ReportError

    try:
        report = build_report(args.dirs, args.out, args.ref, args.margin, args.grid_rows)
    except ReportError as err:
        print(f"srsoup report: error: {err}", file=sys.stderr)
        return 2
    for rec in report.hv_table.itertuples(index=False):
        if rec.status == "failed":
            print(f"{rec.run:<24} FAILED: {rec.note}")
        else:
            note = f"  ({rec.note})" if rec.note else ""
            print(
                f"{rec.run:<24} {rec.method:<13} {rec.status:<9} queries={rec.reward_queries} "
                f"HV={rec.hypervolume:.6g}{note}"
            )
    print(f"reference point: {report.hv_table['ref_point'].iloc[0]} ({report.ref_source})")
    print(f"wrote {report.files[-1]}")
    return 0
