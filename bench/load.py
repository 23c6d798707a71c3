"""A bounded HTTP load generator (one pooled httpx.AsyncClient) and latency statistics."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Stats:
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_rps: float  # completed requests per second of wall time
    concurrency: int = 1
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def summarise(latencies_s: list[float], wall_s: float, concurrency: int = 1, errors: int = 0) -> Stats:
    ms = sorted(x * 1000 for x in latencies_s)
    return Stats(
        n=len(ms),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=statistics.fmean(ms) if ms else float("nan"),
        min_ms=ms[0] if ms else float("nan"),
        max_ms=ms[-1] if ms else float("nan"),
        throughput_rps=len(ms) / wall_s if wall_s > 0 else float("nan"),
        concurrency=concurrency,
        errors=errors,
    )


class BadResponse(RuntimeError):
    pass


async def post_load(
    url: str,
    body: bytes,
    *,
    concurrency: int = 1,
    requests: int = 100,
    max_seconds: float = 20.0,
    warmup: int = 3,
    check: Callable[[httpx.Response], None] | None = None,
    tokens: Iterator[str] | None = None,
) -> Stats:
    """POST `body` to `url` from `concurrency` clients back to back, until `requests` have been
    sent or `max_seconds` have passed. Every response must be 200 (and pass `check`). `tokens`:
    one pre-minted bearer token per request (warm-up included)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60.0, limits=limits, trust_env=False) as client:

        async def one() -> None:
            headers = {"Content-Type": "application/json"}
            if tokens is not None:
                headers["Authorization"] = f"Bearer {next(tokens)}"
            r = await client.post(url, content=body, headers=headers)
            if r.status_code != 200:
                raise BadResponse(f"HTTP {r.status_code}: {r.text[:300]}")
            if check is not None:
                check(r)

        for _ in range(warmup):
            await one()
        return await timed(one, concurrency=concurrency, requests=requests, max_seconds=max_seconds)


async def timed(one: Callable[[], Awaitable[Any]], *, concurrency: int, requests: int, max_seconds: float) -> Stats:
    """Run `one()` from `concurrency` workers until `requests` calls or `max_seconds`."""
    latencies: list[float] = []
    sent = 0
    started = time.perf_counter()
    stop_at = started + max_seconds

    async def worker() -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < stop_at:
            sent += 1
            t0 = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(latencies, time.perf_counter() - started, concurrency)
