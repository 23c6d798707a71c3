"""Screening partitions on Dask: one task per partition file, the hook's engine for every patient.

The same code runs at 1 worker and at N: a `distributed.LocalCluster` of N worker processes (one
thread each) by default, or an existing scheduler (`--scheduler tcp://host:8786`, whose workers must
see the run directory at the same path, e.g. a shared file system). A task reads one partition,
groups it by patient (`group_partition`) and evaluates each patient for the run's trial (by its
registry id, `cds.trials.get`) with `cds.engine.evaluate` exactly as `cds screen --trial` does; it
returns the report lines (compact JSON, `cds screen --format jsonl` shape) in patient id order, so
the output does not depend on the number of workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cds.engine import evaluate
from cds.population.partition import group_partition, load_medications
from cds.trials import DEFAULT_TRIAL, get


@dataclass(frozen=True, slots=True)
class ScreenJob:
    """Everything a task needs besides its partition (picklable)."""

    as_of: date
    searched: frozenset[str]
    incomplete: tuple[str, ...]
    medications_file: str
    trial: str = DEFAULT_TRIAL  # the registry id of the trial screened for (a string: picklable)


@dataclass(frozen=True, slots=True)
class PartitionResult:
    index: int
    lines: list[str]
    orphans: int  # resources whose patient has no Patient resource (not screened)
    resources: int


def screen_partition(index: int, path: str, job: ScreenJob) -> PartitionResult:
    medications = load_medications(Path(job.medications_file))
    patients, orphans = group_partition(Path(path), medications)
    lines: list[str] = []
    resources = 0
    trial = get(job.trial)
    patients.reverse()  # pop from the end, in patient id order, freeing each record once screened
    while patients:
        pid, records = patients.pop()
        resources += len(records)
        report = evaluate(
            records, patient_id=pid, as_of=job.as_of, searched=job.searched, incomplete=job.incomplete, trial=trial
        )
        lines.append(json.dumps(report.to_json(), ensure_ascii=False, separators=(",", ":")))
    return PartitionResult(index=index, lines=lines, orphans=orphans, resources=resources)


def group_only(index: int, path: str, job: ScreenJob) -> PartitionResult:
    """Read and group a partition without screening (the benchmark's floor)."""
    medications = load_medications(Path(job.medications_file))
    patients, orphans = group_partition(Path(path), medications)
    return PartitionResult(index=index, lines=[pid for pid, _ in patients], orphans=orphans, resources=0)


Task = Callable[[int, str, ScreenJob], PartitionResult]


def run_partitions(
    partitions: Sequence[Path],
    job: ScreenJob,
    *,
    workers: int,
    scheduler: str | None,
    on_result: Callable[[PartitionResult], None],
    task: Task = screen_partition,
) -> None:
    """Run `task` on every partition on Dask; `on_result` gets each result as it completes."""
    from distributed import Client, LocalCluster, as_completed

    with ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))  # type: ignore[no-untyped-call]
        else:
            cluster = stack.enter_context(
                LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never collide with another cluster
                    silence_logs=40,  # logging.ERROR
                )
            )
            client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        futures = [client.submit(task, i, str(p), job, pure=False) for i, p in enumerate(partitions)]
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            result: PartitionResult = future.result()
            future.release()
            on_result(result)
