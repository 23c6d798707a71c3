"""CDS Hooks cards rendered from the engine's prescreen Report."""

from cards.codes import OVERRIDE_REASONS, REPORT_EXTENSION_KEY, TOPIC
from cards.models import Card, CdsResponse, Coding, Link, Source, Suggestion
from cards.render import render_cards
from cards.trial import TrialLike

__all__ = [
    "OVERRIDE_REASONS",
    "REPORT_EXTENSION_KEY",
    "TOPIC",
    "Card",
    "CdsResponse",
    "Coding",
    "Link",
    "Source",
    "Suggestion",
    "TrialLike",
    "render_cards",
]
