"""Name matching for tools, resources and prompts: globs and the folding that guards denials.

The rule, chosen so that no spelling of a name slips past a denial:

* Glob syntax: `*` matches any run of characters (including `/` and the empty run), `?` matches
  exactly one character, every other character is literal. Matching is against the whole name.
* Allow globs match the name exactly as sent: case-sensitive, no Unicode normalisation. A name
  that is not spelled exactly as allowed is not allowed (default deny).
* Deny globs match when they match the exact name OR when the folded glob matches the folded
  name. Folding is: Unicode NFKC, then full case folding, then NFKC again, then removal of
  format characters (category Cf: zero-width joiners, bidi marks, soft hyphens). So a deny on
  `delete_*` also denies `DELETE_x`, `Delete_x`, fullwidth `\uff44elete_x` and `dele\u200bte_x`,
  whatever the server does with such spellings. Wildcards in the glob are never produced by
  folding: the glob is split on `*`/`?` first and only its literal parts are folded.

Folding can only make a Deny match more names and can never make an Allow match, so it can only
ever turn an allow into a deny. Look-alike letters of other scripts (Cyrillic `\u0435` for Latin
`e`) are not folded: they spell a different name, which no server maps to the denied tool.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_WILDCARDS = re.compile(r"([*?])")


@lru_cache(maxsize=65536)
def fold(name: str) -> str:
    """The folded form of `name` for Deny matching (NFKC casefold, format characters dropped)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def is_literal(pattern: str) -> bool:
    """Whether the glob has no wildcard (it matches one name only)."""
    return "*" not in pattern and "?" not in pattern


def _glob_regex(patterns: Iterable[str], folded: bool) -> re.Pattern[str]:
    alternatives = []
    for pattern in patterns:
        parts = []
        for part in _WILDCARDS.split(pattern):
            if part == "*":
                parts.append(".*")
            elif part == "?":
                parts.append(".")
            elif part:
                parts.append(re.escape(fold(part) if folded else part))
        alternatives.append("".join(parts))
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.DOTALL)


@dataclass(frozen=True)
class GlobSet:
    """A compiled list of globs, matched either exactly (allow) or exactly-or-folded (deny)."""

    patterns: tuple[str, ...]
    exact: re.Pattern[str]
    folded: re.Pattern[str] | None

    @classmethod
    def compile(cls, patterns: Iterable[str], *, for_deny: bool) -> GlobSet:
        """Compile `patterns`; `for_deny` adds the folded matcher."""
        patterns = tuple(patterns)
        return cls(
            patterns=patterns,
            exact=_glob_regex(patterns, folded=False),
            folded=_glob_regex(patterns, folded=True) if for_deny else None,
        )

    def matches(self, name: str) -> bool:
        """Whether `name` matches one of the globs under this set's rule."""
        if self.exact.fullmatch(name):
            return True
        return self.folded is not None and self.folded.fullmatch(fold(name)) is not None


@dataclass(frozen=True)
class ItemSubset:
    """A server's `tools: {allow, deny}` subset, compiled once.

    Absent `allow` exposes every name not denied; `deny` uses the Deny folding rule above.
    """

    allow: GlobSet | None
    deny: GlobSet | None

    @classmethod
    def compile(cls, allow: Iterable[str] | None, deny: Iterable[str] | None) -> ItemSubset:
        """Compile the two glob lists."""
        return cls(
            allow=None if allow is None else GlobSet.compile(allow, for_deny=False),
            deny=GlobSet.compile(deny, for_deny=True) if deny else None,
        )

    def exposes(self, name: str) -> bool:
        """Whether `name` is in the subset."""
        if self.deny is not None and self.deny.matches(name):
            return False
        return self.allow is None or self.allow.matches(name)
