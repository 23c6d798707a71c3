"""NCT06155604's card wording: lupus nephritis since, kidney function (eGFR), maintenance regimen."""

from __future__ import annotations

from cards.wording import CardWording, Highlight, SinceFact

WORDING = CardWording(
    since=SinceFact(label="Lupus nephritis", requires="inc-ln-biopsy", dates_from=("inc-ln-biopsy",)),
    highlights=(
        Highlight("inc-ckd", "Kidney function"),
        Highlight("inc-stable-regimen", "Maintenance regimen"),
    ),
)
