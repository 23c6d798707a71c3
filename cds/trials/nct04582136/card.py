"""NCT04582136's card wording: SLE since, disease activity (SLEDAI-2K), serology."""

from __future__ import annotations

from cards.wording import CardWording, Highlight, SinceFact

WORDING = CardWording(
    since=SinceFact(label="SLE", requires="inc-sle-diagnosis", dates_from=("inc-sle-duration", "inc-sle-diagnosis")),
    highlights=(
        Highlight("inc-sledai", "Disease activity"),
        Highlight("inc-serology", "Serology"),
    ),
)
