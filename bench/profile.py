"""Profile the engine on one benchmark record (cProfile): where does the time go?

python -m bench.profile typical            # non-lupus | typical | heavy | dense-1000 | dense-10000
python -m bench.profile heavy --sort tottime --top 30
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

from bench import records
from bench.serve import AS_OF

RECORDS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "non-lupus": records.non_lupus,
    "typical": records.typical,
    "heavy": lambda: records.grown(5000),
    "dense-1000": lambda: records.grown(1000, 0.0),
    "dense-10000": lambda: records.grown(10000, 0.0),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("record", choices=sorted(RECORDS))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime"))
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)

    from cds.engine import evaluate, units

    units.preload()
    resources = RECORDS[args.record]()
    pid = records.patient_id(resources)
    evaluate(resources, patient_id=pid, as_of=AS_OF)
    started = time.perf_counter()
    for _ in range(args.runs):
        evaluate(resources, patient_id=pid, as_of=AS_OF)
    per_run = (time.perf_counter() - started) / args.runs * 1000
    print(f"{args.record}: {len(resources)} resources, {per_run:.2f} ms per evaluation (unprofiled)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.runs):
        evaluate(resources, patient_id=pid, as_of=AS_OF)
    profiler.disable()
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
