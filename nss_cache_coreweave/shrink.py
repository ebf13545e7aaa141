"""The shrink guard, one for the maps and for slurm-sync.

A run that would take away more than ``coreweave_max_shrink`` of what the
last accepted run had (the users or groups of the caches, the users of the
managed Slurm accounts), or all of it even with the ratio off (1), is refused
whole: that is far likelier an outage or a wrong setting than a decision.
The operator accepts it for one run with ``--accept-shrink``, or with
``ACCEPT_SHRINK_ENV=1`` (stock nsscache has no option of ours).

    problem()  the command to rerun, what shrank from before to now, max_shrink -> the GuardError, or None
    enforce()  raise it, or log it as accepted
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from .errors import GuardError

__all__ = ["ACCEPT_SHRINK_ENV", "problem", "accepted", "enforce"]

log = logging.getLogger("nss_cache_coreweave")

ACCEPT_SHRINK_ENV = GuardError.ACCEPT_SHRINK_ENV  # spelled once, where the refusal names it


def problem(command: str, what: str, before: int, now: int, max_shrink: float) -> Optional[GuardError]:
    """The refusal of ``what`` going from ``before`` to ``now``: more than
    ``max_shrink`` of it lost, or all of it; None otherwise (or when there was
    nothing before). ``command`` is the one to rerun with --accept-shrink."""
    if before > 0 and ((before - now) / before > max_shrink or now == 0):
        return GuardError(what, before, now, max_shrink, command)
    return None


def accepted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the operator accepted a shrink for this run: ``ACCEPT_SHRINK_ENV`` is exactly ``1``."""
    return environ.get(ACCEPT_SHRINK_ENV) == "1"


def enforce(refusal: Optional[GuardError], *, accept: bool) -> None:
    """Raise ``refusal`` unless the operator accepted it, then log it. :raises GuardError:"""
    if refusal is None:
        return
    if not accept:
        raise refusal
    log.warning("coreweave: shrink accepted by the operator (%s=1): %s", ACCEPT_SHRINK_ENV, refusal)
