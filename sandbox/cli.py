"""``python -m sandbox`` (or ``cds sandbox`` from a checkout): start the HAPI sandbox, load data."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from sandbox.cohort import load_cohort
from sandbox.errors import SandboxError
from sandbox.launcher import DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT, HapiSandbox, build_launcher
from sandbox.loader import DEFAULT_BATCH_SIZE, expunge, load_bundles

__all__ = ["main"]


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Start a local HAPI FHIR R4 server (in-memory H2), optionally load data, print its base URL.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--url", help="attach to this FHIR base URL if it answers instead of starting a server")
    p.add_argument(
        "--load",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="Bundle JSON files or directories to load",
    )
    p.add_argument("--cohort", type=int, default=0, metavar="N", help="also load N synthetic patients")
    p.add_argument("--seed", type=int, default=0, help="seed for --cohort (default 0)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="entries per transaction")
    p.add_argument("--disk", action="store_true", help="keep the H2 database on disk (for more than ~10,000 patients)")
    p.add_argument("--reset", action="store_true", help="$expunge everything before loading")
    p.add_argument("--rebuild", action="store_true", help="run Maven even if the build looks current")
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT, help="start-up timeout in seconds")
    p.add_argument("--keep-running", action="store_true", help="keep the server running until Ctrl-C")
    return p


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _info(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None, prog: str = "python -m sandbox") -> int:
    """CLI entry point (``python -m sandbox``, ``cds sandbox``); returns the exit status.

    Standard output gets the FHIR base URL, then one ``Patient/<id>`` line per patient loaded with
    ``--load``; progress and the cohort summary go to standard error.
    """
    args = _parser(prog).parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so `with` still stops the server
    try:
        if args.rebuild:
            build_launcher(force=True)
        sandbox = HapiSandbox(args.port, base_url=args.url, startup_timeout=args.timeout, disk=args.disk)
        with sandbox:
            if sandbox.attached:
                _info(f"attached to the FHIR server at {sandbox.base_url}")
            else:
                _info(f"HAPI FHIR sandbox started in {sandbox.startup_seconds or 0:.1f} s (pid {sandbox.pid})")
            _out(sandbox.base_url)
            if args.reset:
                _info(f"expunged {expunge(sandbox.base_url)} rows")
            if args.load:
                ids = load_bundles(sandbox.base_url, args.load, batch_size=args.batch_size)
                _info(f"loaded {len(ids)} patients from {len(args.load)} input(s)")
                for pid in ids:
                    _out(f"Patient/{pid}")
            if args.cohort:
                started = time.monotonic()
                ids = load_cohort(sandbox.base_url, args.cohort, args.seed, batch_size=args.batch_size)
                _info(
                    f"loaded a cohort of {len(ids)} patients ({ids[0]} .. {ids[-1]}, seed {args.seed}) "
                    f"in {time.monotonic() - started:.1f} s"
                )
            if args.keep_running and not sandbox.attached:
                _info(f"running; log: {sandbox.log_path}; Ctrl-C to stop")
                while sandbox.running:
                    time.sleep(1)
                _info("the server exited on its own")
                return 1
        return 0
    except SandboxError as e:
        _info(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
