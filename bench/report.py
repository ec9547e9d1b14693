"""What the benchmarks share: printing medians and ratios to a baseline.

Imported by the scripts next to it (``python bench/asgi.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import argparse
import statistics


def request_args(description: str | None) -> argparse.Namespace:
    """``--rounds`` and ``--requests``: the arguments of the app benchmarks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=5000, help="requests per app per round")
    return parser.parse_args()


def print_ratios(samples: dict[str, list[float]], baseline: str, *, label: str, unit: str, ratio: str) -> None:
    """One line per case: the median of its rounds and its ratio to ``baseline``'s median."""
    base = statistics.median(samples[baseline])
    width = max(len(label), *(len(name) for name in samples)) + 2
    print(f"{label:{width}} {unit:>11} {ratio:>10}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:{width}} {median:11.2f} {median / base:10.3f}")
