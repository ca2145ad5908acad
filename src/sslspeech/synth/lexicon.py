"""A small English lexicon and sentence templates chosen to cover every English phoneme.

The words are plain and frequent; the list deliberately includes the rarer sounds
(measure/vision for /Z/, thin/thumb for /T/, judge/bridge for /dZ/, king/ring for /N/,
coin/toy for /OI/, house/cloud for /aU/, hair/bear, ear/near).
"""

from __future__ import annotations

import numpy as np


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NOUNS = _words(
    "cat dog house boat tree bird fish book moon cup car girl boy judge church chair king ring "
    "shoe sheep horse mouse cloud town road stone bell bridge farm park lake rain cake apple "
    "window water garden kitchen table treasure vision coin toy egg bread milk cheese hand foot "
    "thumb mother father brother sister teacher doctor baker farmer pilot queen jacket zebra "
    "voice wheel whale thread path mouth hair bear ear ship box key door garage bottle pencil"
)
ADJECTIVES = _words(
    "big small red green blue yellow old young quick lazy happy sad thin thick warm cold loud "
    "quiet bright dark soft smooth rough heavy usual strange huge cheap rich clean"
)
VERBS = _words(
    "saw found took gave pushed pulled washed watched caught bought brought made kept sold "
    "moved held liked loved touched joined changed measured thanked judged carried followed "
    "painted showed"
)
NAMES = _words("John Mary Sam Jane Peter Ruth George Zoe Charles Linda Thomas Judy")
PREPOSITIONS = _words("near under behind beside with from over into")

TEMPLATES = (
    "The {adj} {noun} {verb} the {noun}.",
    "{name} {verb} a {adj} {noun} {prep} the {noun}.",
    "A {noun} and a {noun} {verb} the {adj} {noun}.",
    "{name} said the {noun} was {adj}.",
    "The {noun} {prep} the {noun} is {adj}.",
    "{name} and {name} {verb} the {adj} {noun}.",
    "Look at the {adj} {noun}, said {name}.",
    "Say {noun} and {noun} again.",
)

_SLOTS = {
    "adj": ADJECTIVES,
    "noun": NOUNS,
    "verb": VERBS,
    "name": NAMES,
    "prep": PREPOSITIONS,
}


def sentence(rng: np.random.Generator) -> str:
    """One random sentence from the templates, words drawn uniformly."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    parts = template.split("{")
    out = [parts[0]]
    for part in parts[1:]:
        slot, rest = part.split("}", 1)
        words = _SLOTS[slot]
        out.append(words[int(rng.integers(len(words)))] + rest)
    return "".join(out)
