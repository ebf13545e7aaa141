"""Keep the bearer token out of every log line.

nsscache logs its whole configuration at DEBUG (``config.LoadConfig``:
``loaded configuration: %r``), and the repr of a map's options holds an inline
``coreweave_token``. :class:`TokenFilter` replaces every token it knows in a
record's message, exception text and stack text; it learns the tokens from an
nsscache ``Config``: handed to :meth:`TokenFilter.learn`, or found among a
record's arguments (that very dump).

``nsscache-coreweave`` puts one on each of its handlers. Inside the stock
``nsscache``, :func:`guard_nsscache_config` puts one on nsscache's config
logger: the source is imported (through the registration hook) while
``nss_cache.app`` is being imported, before nsscache sets up its handlers
and before it reads the configuration.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping, Set

from .config import TOKEN_ENV_VARS

__all__ = ["PLACEHOLDER", "TokenFilter", "guard_nsscache_config", "tokens"]

PLACEHOLDER = "<redacted>"
NSSCACHE_CONFIG_LOGGER = "nss_cache.config"  # config.Config().log


class TokenFilter(logging.Filter):
    """Replaces known tokens in every record it sees; never drops one."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: Set[str] = set()

    def learn(self, conf, environ: Mapping[str, str] = os.environ) -> None:
        """Remember every token an nsscache Config (or MapOptions) can use."""
        # A new set, not an update: another thread may be redacting with the old one.
        self._tokens = self._tokens | tokens(conf, environ)

    def filter(self, record: logging.LogRecord) -> bool:
        for arg in _arguments(record.args):
            if _sources(arg):
                self.learn(arg)
        if not self._tokens:
            return True
        record.msg, record.args = self.redact(_message(record)), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def redact(self, text: str) -> str:
        for token in sorted(self._tokens, key=len, reverse=True):
            text = text.replace(token, PLACEHOLDER)
        return text


def guard_nsscache_config() -> None:
    """Filter the records of nsscache's config logger (idempotent)."""
    logger = logging.getLogger(NSSCACHE_CONFIG_LOGGER)
    if not any(isinstance(f, TokenFilter) for f in logger.filters):
        logger.addFilter(TokenFilter())


def tokens(conf, environ: Mapping[str, str] = os.environ) -> Set[str]:
    """The token environment variables' values, and each map's inline token
    and token file's content, as written and as repr() escapes them."""
    found = {environ.get(var, "") for var in TOKEN_ENV_VARS}
    for source in _sources(conf):
        found.add(str(source.get("token", "")))
        found.add(_file_content(source.get("token_file")))
    found = {t.strip() for t in found} - {""}
    return found | {repr(t)[1:-1] for t in found}


def _sources(obj) -> list:
    """The source options of an nsscache Config (every map) or MapOptions."""
    options = getattr(obj, "options", None)
    maps = options.values() if isinstance(options, dict) else [obj]
    return [m.source for m in maps if isinstance(getattr(m, "source", None), dict)]


def _arguments(args) -> Iterable:
    if isinstance(args, Mapping):
        return args.values()
    return args if isinstance(args, tuple) else ()


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format: show both, redacted
        return f"{record.msg} {record.args!r}"


def _file_content(path) -> str:
    if not isinstance(path, str) or not os.path.isabs(path):
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""
