"""Write ``cds/service/SETTINGS.md`` from the Settings model (``python -m cds.service.settings_doc``)."""

from __future__ import annotations

from pathlib import Path

from cds.config import settings_markdown

SETTINGS_DOC = Path(__file__).with_name("SETTINGS.md")


def write_settings_doc(path: Path = SETTINGS_DOC) -> Path:
    path.write_text(settings_markdown(), encoding="utf-8")
    return path


if __name__ == "__main__":
    write_settings_doc()
