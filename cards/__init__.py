"""CDS Hooks cards rendered from the engine's prescreen Report."""

from cards.codes import OVERRIDE_REASONS, REPORT_EXTENSION_KEY, card_topic
from cards.models import Card, CdsResponse, Coding, Link, Source, Suggestion
from cards.render import render_cards
from cards.trial import TrialLike
from cards.wording import CardWording

__all__ = [
    "OVERRIDE_REASONS",
    "REPORT_EXTENSION_KEY",
    "Card",
    "CardWording",
    "CdsResponse",
    "Coding",
    "Link",
    "Source",
    "Suggestion",
    "TrialLike",
    "card_topic",
    "render_cards",
]
