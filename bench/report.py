"""Write the benchmark report: ``report.json``, ``report.md`` and ``latency_vs_size.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (id, text, limit): checked by `targets`
TARGETS = (
    ("prefetch-typical-ratio", "prefetch, typical SLE record: p50 <= 2x the floor", 2.0),
    ("prefetch-nonlupus-ratio", "prefetch, non-lupus patient: p50 <= 1.2x the floor", 1.2),
    ("prefetch-typical-p95", "prefetch, typical SLE record: p95 < 100 ms", 100.0),
    ("fetch-ratio", "fetch, typical SLE record: p50 <= 1.25x the direct-query floor", 1.25),
    ("fetch-typical-p95", "fetch, typical SLE record: p95 < 500 ms", 500.0),
    ("scaling-linear", "engine time ~linear in the record (log-log exponent <= 1.2, 1k -> 10k)", 1.2),
)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(tid: str, variant: str, value: Any, unit: str = "x") -> None:
        text, limit = next((t, lim) for i, t, lim in TARGETS if i == tid)
        ok = None if value is None else value <= limit if unit == "x" or tid == "scaling-linear" else value < limit
        rows.append({"id": tid, "target": text, "variant": variant, "value": value, "unit": unit, "met": ok})

    pre = report.get("prefetch", {})
    for variant in ("service", "service+changes"):
        add("prefetch-typical-ratio", variant, _get(pre, "ratios", variant, "typical", "p50"))
        add("prefetch-nonlupus-ratio", variant, _get(pre, "ratios", variant, "non-lupus", "p50"))
        add("prefetch-typical-p95", variant, _get(pre, "results", variant, "typical", "p95_ms"), "ms")
    fetch = report.get("fetch", {})
    add("fetch-ratio", "service (template queries)", _get(fetch, "ratios", "service", "typical", "p50"))
    add("fetch-ratio", "service+changes (narrowed queries)", _get(fetch, "ratios", "service+changes", "typical", "p50"))
    add("fetch-typical-p95", "service", _get(fetch, "results", "service", "typical", "p95_ms"), "ms")
    add("fetch-typical-p95", "service+changes", _get(fetch, "results", "service+changes", "typical", "p95_ms"), "ms")
    for shape in ("history", "dense"):
        exponent = _get(report, "scaling", "shapes", shape, "fit", "loglog_exponent")
        add("scaling-linear", f"engine, {shape}", exponent, "")
    return rows


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{v}{unit}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmark report",
        "",
        f"- date: {m['date']}; mode: {report['mode']}; duration: {report.get('duration_s')} s",
        f"- machine: {m['cores']} cores ({m['cpu'] or 'cpu unknown'}), {m['ram_gb']} GB RAM; Python {m['python']}; "
        f"{m['platform']}",
        f"- git commit: `{m['git_commit'] or '?'}`{' (uncommitted changes)' if m['git_dirty'] else ''}",
        f"- uvicorn: 1 worker, loop {m['uvicorn_loop']}, http {m['uvicorn_http']}; as-of date {report['as_of']}",
        "- command: `.venv/bin/python -m bench` (`--quick` for a short run)",
        f"- load average (1, 5, 15 min) at start {report.get('loadavg_at_start')}, at end "
        f"{report.get('loadavg_at_end')} (other work on the machine makes the figures noisy)",
        "",
        "## Targets",
        "",
        "| target | variant | measured | met |",
        "|---|---|---|---|",
    ]
    for t in targets(report):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        unit = " ms" if t["unit"] == "ms" else ("x" if t["unit"] == "x" else "")
        lines.append(f"| {t['target']} | {t['variant']} | {_fmt(t['value'], unit)} | {met} |")
    lines += [
        "",
        "`service` is the service as it is in the working tree; `service+changes` adds the recommended "
        "service-side changes (emulated in `bench/serve.py`, see `bench/README.md`). The engine changes are in both.",
        "",
    ]

    pre = report.get("prefetch")
    if pre:
        lines += [
            "## Prefetch path (hook latency over loopback HTTP, sequential requests)",
            "",
            "| record | resources | body | " + " | ".join(f"{v} p50 / p95 / p99 ms" for v in pre["results"]) + " |",
            "|---|---|---|" + "---|" * len(pre["results"]),
        ]
        for name, info in pre["requests"].items():
            cells = []
            for v in pre["results"]:
                s = pre["results"][v][name]
                cells.append(f"{_fmt(s['p50_ms'])} / {_fmt(s['p95_ms'])} / {_fmt(s['p99_ms'])}")
            lines.append(f"| {name} | {info['resources']} | {info['bytes'] / 1e6:.2f} MB | " + " | ".join(cells) + " |")
        lines += ["", "Ratio to the floor (p50 / p95):", "", "| record | " + " | ".join(pre["ratios"]) + " |"]
        lines.append("|---|" + "---|" * len(pre["ratios"]))
        for name in pre["requests"]:
            lines.append(
                f"| {name} | "
                + " | ".join(f"{r[name]['p50']}x / {r[name]['p95']}x" for r in pre["ratios"].values())
                + " |"
            )
        side = pre.get("server_side_median_ms") or {}
        if side:
            lines += [
                "",
                "The service's own timings (its `hook call` log, median ms; `totalMs` starts after the JWT check "
                "and covers reading + decoding the body, prefetch handling, the engine and the card):",
                "",
                "| variant | record | fetchMs (read, decode, prefetch) | evaluateMs (engine) | totalMs |",
                "|---|---|---|---|---|",
            ]
            for v, per in side.items():
                for name, row in per.items():
                    lines.append(
                        f"| {v} | {name} | {_fmt(row.get('fetchMs'))} | {_fmt(row.get('evaluateMs'))} | "
                        f"{_fmt(row.get('totalMs'))} |"
                    )
        thr = " | ".join(f"{_fmt(pre['results'][v]['typical']['throughput_rps'])}" for v in pre["results"])
        lines += ["", f"Sequential throughput, typical record (req/s): {thr} ({', '.join(pre['results'])}).", ""]

    comp = report.get("components")
    if comp:
        keys = list(next(iter(comp.values())))
        lines += [
            "## Where the time goes (in process, median ms)",
            "",
            "| record | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for name, row in comp.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
        auth = report.get("auth") or {}
        if "verify_ms_median" in auth:
            lines += ["", f"JWT check of one hook call (ES384, in process): {auth['verify_ms_median']} ms median."]
        elif auth:
            lines += ["", f"JWT check not measured: {auth.get('unavailable')}"]
        lines.append("")

    fetch = report.get("fetch")
    if fetch and "results" in fetch:
        lines += [
            "## Fetch path (no prefetch; fhirServer = local HAPI FHIR)",
            "",
            f"HAPI started in {fetch['hapi_startup_s']} s, loaded in {fetch['hapi_load_s']} s; page size "
            f"{fetch['limits']['page_size']}, at most {fetch['limits']['max_pages']} pages per search.",
            "",
            "| variant | record | p50 ms | p95 ms | p99 ms | FHIR requests per hook |",
            "|---|---|---|---|---|---|",
        ]
        for variant, per in fetch["results"].items():
            for name, s in per.items():
                trunc = " (truncated)" if s.get("truncated") else ""
                lines.append(
                    f"| {variant} | {name} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | {_fmt(s['p99_ms'])} | "
                    f"{s['fhir_requests_per_hook']}{trunc} |"
                )
        lines += ["", "Ratios (p50 / p95):", "", "| comparison | " + " | ".join(fetch["ratios"]["service"]) + " |"]
        lines.append("|---|" + "---|" * len(fetch["ratios"]["service"]))
        for comp_name, per in fetch["ratios"].items():
            lines.append(f"| {comp_name} | " + " | ".join(f"{r['p50']}x / {r['p95']}x" for r in per.values()) + " |")
        lines.append("")
    elif fetch:
        lines += ["## Fetch path", "", f"Skipped: {fetch.get('skipped')}", ""]

    sc = report.get("scaling")
    if sc:
        lines += ["## Scaling (engine only, one patient, in process)", ""]
        for shape, data in sc["shapes"].items():
            f = data["fit"]
            lines += [
                f"**{shape}**: {data['about']}. Fitted slope {f['slope_us_per_resource']} us per resource, "
                f"intercept {f['intercept_ms']} ms, log-log exponent (1k -> 10k) {f['loglog_exponent']} "
                f"({f.get('loglog_exponent_gc_disabled')} with the garbage collector off for the 10k run).",
                "",
                "| Observations | resources | engine ms | us / resource | peak MB (tracemalloc) | verdict |",
                "|---|---|---|---|---|---|",
            ]
            for r in data["rows"]:
                lines.append(
                    f"| {r['observations']} | {r['resources']} | {_fmt(r['engine_ms'])} | "
                    f"{_fmt(r['us_per_resource'])} | {_fmt(r['peak_mb'])} | {r['verdict']} |"
                )
            lines.append("")

    conc = report.get("concurrency")
    if conc:
        lines += [
            f"## Concurrency ({conc['record']} record, prefetch, service in its own process, 1 uvicorn worker)",
            "",
            "| variant | clients | throughput req/s | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for variant, per in conc["results"].items():
            for c, s in per.items():
                lines.append(
                    f"| {variant} | {c} | {_fmt(s['throughput_rps'])} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | "
                    f"{_fmt(s['p99_ms'])} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    pre = report.get("prefetch")
    if pre:
        order = sorted(pre["requests"], key=lambda n: pre["requests"][n]["resources"])
        xs = [pre["requests"][n]["resources"] for n in order]
        for variant, style in zip(pre["results"], ("k--", "C0-o", "C2-s", "C1-^"), strict=False):
            ax1.plot(xs, [pre["results"][variant][n]["p50_ms"] for n in order], style, label=f"{variant} p50")
        ax1.plot(xs, [pre["results"]["service"][n]["p95_ms"] for n in order], "C0:", label="service p95")
        comp = report.get("components")
        if comp:
            ax1.plot(xs, [comp[n]["engine"] for n in order], "C3-x", label="engine alone (in process)")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel("resources in the request (prefetch)")
        ax1.set_ylabel("latency, ms")
        ax1.set_title("Prefetch path: hook latency vs record size")
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend(fontsize=8)
    sc = report.get("scaling")
    if sc:
        for shape, style in zip(sc["shapes"], ("C0-o", "C3-s"), strict=False):
            rows = sc["shapes"][shape]["rows"]
            ax2.plot([r["resources"] for r in rows], [r["engine_ms"] for r in rows], style, label=f"engine, {shape}")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("resources in the record")
        ax2.set_ylabel("engine time per patient, ms")
        ax2.set_title("Engine scaling")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"{m['date'][:10]}, {m['cores']} cores, {m['ram_gb']} GB, Python {m['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    report["targets"] = targets(report)
    paths = [out / "report.json", out / "report.md"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(report) + "\n", encoding="utf-8")
    png = out / "latency_vs_size.png"
    if plot(report, png):
        paths.append(png)
    return paths
