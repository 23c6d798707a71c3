"""Command line: `cds screen`, `cds population`, `cds serve`, `cds db`, `cds demo`, `cds sandbox`, `cds criteria`.

`--trial ID` (any registered trial, `cds.trials.REGISTERED`, any case) chooses the trial of `cds screen`,
`cds criteria` and `cds population`; the default of every command is `cds.trials.DEFAULT_TRIAL`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cards.verdict import verdict_label
from cds.bundles import InputError, read_inputs, skipped_summary
from cds.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, SettingsError, load_settings
from cds.engine import evaluate
from cds.engine.model import Report, Status
from cds.trials import DEFAULT_TRIAL, REGISTERED, UnknownTrial, normalize

if TYPE_CHECKING:
    from cds.engine.trial import Trial
from cds.fhirjson import parse_instant, span

_SYMBOL = {Status.MET: "met", Status.NOT_MET: "NOT MET", Status.UNKNOWN: "unknown"}


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def render_table(report: Report) -> str:
    # The card's words and counts (cards.verdict), then the machine verdict code of the JSON report.
    lines = [
        f"{report.patient}  verdict: {verdict_label(report)} [{report.verdict.value}]"
        f"  (as of {report.as_of.isoformat()}, {report.trial})"
    ]
    if report.incomplete:
        lines.append(f"  DATA INCOMPLETE: could not read {', '.join(report.incomplete)}")
    width = max(len(c.id) for c in report.criteria)
    for c in report.criteria:
        lines.append(f"  {c.id:<{width}}  {_SYMBOL[c.status]:<7}  {c.reason}")
        for e in c.evidence:
            bits = [e.reference]
            if e.value is not None:
                bits.append(f"{e.value} {e.unit or ''}".strip())
            if e.date:
                bits.append(e.date)
            if e.flags:
                bits.append(",".join(f.value for f in e.flags))
            lines.append(f"  {'':<{width}}           - {' | '.join(bits)}")
    if report.data_issues:
        lines.append(f"  {len(report.data_issues)} record(s) ignored:")
        lines.extend(f"    - {d.reference}: {d.problem}" for d in report.data_issues)
    return "\n".join(lines)


def screen(paths: Sequence[Path], as_of: date, fmt: str, out: TextIO, err: TextIO, trial: Trial | None = None) -> int:
    """Screen every patient of every input (Bundle files, NDJSON exports, directories of them) for
    `trial` (default: the default trial).

    Bad files are named on stderr and the rest still screened; resources of types the engine does
    not read are summarised in one stderr line per file.
    """
    failures = 0
    for contents in read_inputs(paths):
        if isinstance(contents, InputError):
            print(f"error: {contents.message}", file=err)
            failures += 1
            continue
        for p in contents.patients:
            report = evaluate(
                p.resources,
                patient_id=p.patient_id,
                as_of=as_of,
                searched=contents.searched - contents.incomplete,
                incomplete=sorted(contents.incomplete),
                trial=trial,
            )
            if fmt == "jsonl":
                out.write(json.dumps(report.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")
            else:
                out.write(render_table(report) + "\n\n")
        for source, counts in sorted(contents.skipped.items()):
            print(skipped_summary(source, counts), file=err)
        if contents.unassigned:
            print(
                f"warning: {contents.source}: {contents.unassigned} resource(s) name no patient of the input", file=err
            )
    return 2 if failures else 0


def database_command(action: str, out: TextIO) -> int:
    """`cds db upgrade` / `cds db current` on the database of the settings (CDS_DATABASE_URL)."""
    from cds.config import Settings
    from cds.store import Database

    database = Database.from_settings(Settings())
    try:
        if action == "upgrade":
            database.upgrade()
        out.write(f"{database.current_revision() or '(empty)'}\n")
    finally:
        database.dispose()
    return 0


SERVE_EPILOG = f"""\
try it locally, without client authentication (never in production):
  CDS_AUTH_REQUIRED=false cds serve
  curl http://127.0.0.1:{DEFAULT_PORT}/cds-services      # discovery
  cds demo                                      # a real patient-view call, card printed

production: CDS_AUTH_ISSUERS, CDS_AUTH_JWKS_FILE or CDS_AUTH_JKU_ALLOWED, CDS_PUBLIC_BASE_URL,
CDS_FHIR_ALLOWED_SERVERS, CDS_DATABASE_URL (see cds/service/SETTINGS.md)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cds", description=f"Clinical trial prescreening (CDS Hooks service and tools): {', '.join(REGISTERED)}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "screen",
        help="screen patients in FHIR exports: Bundle files (.json), Bulk Data NDJSON (.ndjson), directories",
    )
    s.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or directory (searched recursively)")
    s.add_argument("--as-of", type=_as_of, default=None, help="evaluation date (default: today)")
    s.add_argument("--format", choices=("table", "jsonl"), default="table")
    _add_trial_option(s)

    v = sub.add_parser(
        "serve",
        help="run the CDS Hooks service (uvicorn)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the CDS Hooks service. Settings come from CDS_* environment variables "
        "(cds/service/SETTINGS.md); a bad value stops it with one line naming the variable.",
        epilog=SERVE_EPILOG,
    )
    v.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s, loopback only)")
    v.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    v.add_argument(
        "--workers",
        type=_positive,
        default=DEFAULT_WORKERS,
        help="worker processes (uvicorn); state shared through CDS_DATABASE_URL (PostgreSQL for replicas)",
    )

    b = sub.add_parser("db", help="the service's database (CDS_DATABASE_URL)")
    b.add_argument(
        "action", choices=("upgrade", "current"), help="upgrade: apply the migrations; current: print the revision"
    )

    d = sub.add_parser("demo", help="start the service, fire a patient-view hook for a fixture patient, show the card")
    d.add_argument("patient_file", nargs="?", type=Path, default=None)

    sub.add_parser(
        "sandbox",
        help="developer tool, from a source checkout: build/start a local HAPI FHIR server and load the fixtures",
        add_help=False,
    )

    _add_population_parser(sub)

    w = sub.add_parser("worklist", help="the coordinators' worklist (/worklist)")
    w.add_argument("action", choices=("hash-password",), help="hash-password: print a CDS_WORKLIST_USERS hash")
    w.add_argument("--stdin", action="store_true", help="read the password from standard input (one line)")

    c = sub.add_parser("criteria", help="print a trial's criteria table (markdown) from its definition")
    _add_trial_option(c)
    docs = c.add_mutually_exclusive_group()
    docs.add_argument(
        "--check",
        type=Path,
        default=None,
        metavar="FILE",
        help="fail unless FILE holds the current criteria section of every registered trial",
    )
    docs.add_argument(
        "--update",
        type=Path,
        default=None,
        metavar="FILE",
        help="rewrite the criteria section of every registered trial in FILE (adding missing ones)",
    )
    return parser


def _trial_id(text: str) -> str:
    try:
        return normalize(text)
    except UnknownTrial as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_trial_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trial",
        type=_trial_id,
        default=DEFAULT_TRIAL,
        metavar="ID",
        help=f"trial id, one of {', '.join(REGISTERED)} (default {DEFAULT_TRIAL})",
    )


def _fhir_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", text):
        raise argparse.ArgumentTypeError(f"not a FHIR resource id: {text!r}")
    return text


def _since(text: str) -> str:
    is_date = len(text) == 10 and span(text) is not None
    if not is_date and parse_instant(text) is None:
        raise argparse.ArgumentTypeError(f"not an ISO date or instant (with a timezone): {text!r}")
    return text


def _add_population_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("population", help="export a population with FHIR Bulk Data ($export) and screen every patient")
    p.add_argument("--fhir-server", required=True, metavar="URL", help="FHIR base URL offering Bulk Data $export")
    _add_trial_option(p)
    p.add_argument(
        "--group", type=_fhir_id, default=None, metavar="ID", help="export Group/ID only (Group-level $export)"
    )
    p.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="DATE",
        help="only patients with data changed since DATE (whole records screened)",
    )
    p.add_argument("--as-of", type=_as_of, default=None, help="evaluation date (default: today)")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--workers", type=_positive, default=1, help="local Dask worker processes (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="use this Dask scheduler instead")
    p.add_argument("--partitions", type=_positive, default=None, help="NDJSON partitions (default: by size)")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run of the same export")
    p.add_argument("--no-type-filter", action="store_true", help="do not send _typeFilter (export whole types)")
    auth = p.add_argument_group("SMART Backend Services authorization (default: none, or the CDS_BULK_* settings)")
    auth.add_argument("--client-id", default=None, help="client id registered with the server (CDS_BULK_CLIENT_ID)")
    auth.add_argument(
        "--private-key",
        default=None,
        metavar="FILE",
        help="the client's private key: PEM or JWK file, RS384 or ES384 (CDS_BULK_PRIVATE_KEY)",
    )
    auth.add_argument("--key-id", default=None, help="kid of the client assertion (CDS_BULK_KEY_ID)")
    auth.add_argument(
        "--token-url",
        default=None,
        metavar="URL",
        help="token endpoint (CDS_BULK_TOKEN_URL; default: from .well-known/smart-configuration)",
    )


def _population(args: argparse.Namespace) -> int:
    from cds.config import Settings
    from cds.population.run import PopulationOptions, run_population

    opts = PopulationOptions(
        fhir_server=args.fhir_server,
        trial=args.trial,
        group=args.group,
        since=args.since,
        as_of=args.as_of or date.today(),  # the clock is read here, at the edge
        fmt=args.format,
        workers=args.workers,
        scheduler=args.scheduler,
        restart=args.restart,
        partitions=args.partitions,
        type_filter=not args.no_type_filter,
        client_id=args.client_id,
        private_key=args.private_key,
        key_id=args.key_id,
        token_url=args.token_url,
    )
    return run_population(opts, Settings(), sys.stdout, sys.stderr)


def _hash_password(from_stdin: bool) -> int:
    """Print a scrypt hash for CDS_WORKLIST_USERS (``user:<hash>``); the password is never echoed."""
    import getpass

    from cds.worklist.auth import hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 12:
        print("error: use at least 12 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def criteria_command(trial_id: str, check: Path | None, update: Path | None, out: TextIO, err: TextIO) -> int:
    """`cds criteria`: print one trial's table; `--check`/`--update` a file's sections of every trial."""
    from cds.trials import get, get_all
    from cds.trials.docs import criteria_markdown, readme_problems, update_readme

    if check is not None:
        problems = readme_problems(check.read_text(encoding="utf-8"))
        for problem in problems:
            print(f"error: {check}: {problem} (run `cds criteria --update {check}`)", file=err)
        return 1 if problems else 0
    if update is not None:
        text = update.read_text(encoding="utf-8")
        try:
            updated = update_readme(text)
        except ValueError as exc:
            print(f"error: {update}: {exc}", file=err)
            return 1
        if updated != text:
            update.write_text(updated, encoding="utf-8")
        out.write(f"{update}: criteria sections of {', '.join(t.id for t in get_all())} up to date\n")
        return 0
    out.write(criteria_markdown(get(trial_id)) + "\n")
    return 0


SANDBOX_OUTSIDE_CHECKOUT = (
    "`cds sandbox` is a developer tool that lives in the source checkout (the `sandbox/` package beside "
    "`cds/`), not in the installed package. In a clone of the repository run `python -m sandbox --help` at "
    "its root, or `cds sandbox` from its editable install (`pip install -e .`); it needs Java 17+ and Maven."
)


def checkout_root(start: Path | None = None) -> Path | None:
    """The source checkout holding the developer `sandbox/` package: the one this `cds` was imported
    from (an editable install), else `start` (default: the working directory) or a parent of it."""
    import cds

    here = (start or Path.cwd()).resolve()
    for root in (Path(cds.__file__).resolve().parents[1], here, *here.parents):
        if (root / "sandbox" / "cli.py").is_file() and (root / "sandbox" / "hapi" / "pom.xml").is_file():
            return root
    return None


def sandbox(argv: Sequence[str]) -> int:
    """`cds sandbox ...` = `python -m sandbox ...` of the checkout (imported lazily: not in the wheel)."""
    import importlib

    root = checkout_root()
    if root is None:
        print(f"error: {SANDBOX_OUTSIDE_CHECKOUT}", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("sandbox.cli")
    if Path(str(module.__file__)).resolve().parent != root / "sandbox":
        print(
            f"error: `import sandbox` found {module.__file__}, not the checkout's {root / 'sandbox'}", file=sys.stderr
        )
        return 2
    code: int = module.main(list(argv), prog="cds sandbox")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sandbox"]:
        return sandbox(args_list[1:])
    args = build_parser().parse_args(args_list)
    if args.command == "screen":
        from cds.trials import get

        as_of = args.as_of or date.today()  # the clock is read here, at the edge, never in the engine
        return screen(args.paths, as_of, args.format, sys.stdout, sys.stderr, trial=get(args.trial))
    if args.command == "population":
        return _population(args)
    if args.command in ("serve", "demo"):
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "serve":
            from cds.service.serving import serve

            serve(host=args.host, port=args.port, workers=args.workers, settings=settings)
            return 0
        from cds.service.demo import run_demo

        return run_demo(args.patient_file)
    if args.command == "db":
        return database_command(args.action, sys.stdout)
    if args.command == "worklist":
        return _hash_password(args.stdin)
    if args.command == "criteria":
        return criteria_command(args.trial, args.check, args.update, sys.stdout, sys.stderr)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    raise SystemExit(main())
