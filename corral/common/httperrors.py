"""The lean HTTP client's exceptions, in a module of their own: the client is compiled (see
docs/performance.md), and a compiled class cannot also derive from ``TimeoutError``.
"""

from __future__ import annotations


class ClientFailure(Exception):  # noqa: N818
    """The request did not get a complete answer; the message says why."""


class ClientTimeout(ClientFailure, TimeoutError):  # noqa: N818
    """A time limit ran out: connecting, waiting for the answer, or between two body chunks."""


class RetryOnFresh(Exception):  # noqa: N818
    """A reused connection was closed by the server before it answered: try a fresh one."""
