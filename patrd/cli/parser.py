"""``argparse`` with patrctl's manners: did-you-mean for verbs, a bad flag shows its verb's usage.

``VerbParser`` is the parser class of ``patrctl`` and of every sub-parser it
makes (argparse builds sub-parsers with the parent's class). It only
changes how errors read; parsing is argparse's.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from patrd.cli.words import suggest

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class VerbParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match is not None:
            choices = self._verb_choices()
            close = suggest(match.group(1), choices)
            if close is not None:
                message = f"unknown {self._what()} {match.group(1)!r}; did you mean {close!r}?"
            elif choices:
                message = f"unknown {self._what()} {match.group(1)!r}; one of: {', '.join(choices)}"
        super().error(message)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        """Like argparse's, but an unknown flag is reported by the verb it was given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._deepest(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return cast(argparse.Namespace, parsed)

    def _deepest(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self
        while True:
            sub = _subparsers(parser)
            if sub is None:
                return parser
            chosen = getattr(parsed, sub.dest, None) if sub.dest else None
            if not isinstance(chosen, str) or chosen not in sub.choices:
                return parser
            parser = sub.choices[chosen]

    def _verb_choices(self) -> list[str]:
        sub = _subparsers(self)
        return sorted(sub.choices) if sub is not None else []

    def _what(self) -> str:
        return "verb" if self.prog == "patrctl" else "action"


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None
