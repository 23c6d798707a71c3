"""The CDS Hooks service: discovery, patient-view prescreen cards, feedback.

Importing it loads two libraries of every hook worker without their optional integrations the
service never uses (each worker process held ~28 MB of them): pint without its Dask-array support
(``dask`` is installed for ``cds population``, and pint imports it whenever it is installed) and
httpcore without its Trio backend (the service runs on asyncio). Only when neither is imported yet
(a process that imported them first keeps them as they are); the libraries stay importable.
"""

from __future__ import annotations

import sys


def _without(hidden: tuple[str, ...], modules: tuple[str, ...]) -> None:
    """Import `modules` while the packages `hidden` look absent (``sys.modules[name] = None`` makes
    ``importlib.util.find_spec`` return None and ``import`` raise ImportError), then unhide them."""
    if any(name in sys.modules for name in (*hidden, *modules)):
        return
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        pass  # not installed: nothing to slim
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


_without(("dask", "trio"), ("pint", "httpcore"))
