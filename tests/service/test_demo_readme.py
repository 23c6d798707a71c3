"""The README's example request and card are the committed examples, not hand-written text."""

from pathlib import Path

from cds.service.demo import readme_example_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_shows_the_generated_example() -> None:
    assert readme_example_markdown() in README.read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert "cds demo" in block[0]
    assert block[1].startswith(".venv/bin/python -m pytest")
