"""Validate OpenSSH public keys with ``cryptography`` (used by policy).

A key reaches sshkey.cache only as ``type base64 [comment]`` on one line,
with a type we allow, a body that decodes to that same type, and an RSA
modulus of at least 2048 bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from .keycache import KEY_TYPES  # OpenSSH key type -> family; the keys command reads the same table

__all__ = ["InvalidKey", "Key", "KEY_TYPES", "DEFAULT_KEY_TYPES", "MIN_RSA_BITS", "parse", "normalise"]

DEFAULT_KEY_TYPES = frozenset({"ed25519", "ecdsa", "sk-ed25519", "sk-ecdsa", "rsa"})
MIN_RSA_BITS = 2048
MAX_KEY_LENGTH = 16384
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_BREAK = re.compile(r"[\r\n\0]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*", re.ASCII)
# One option: a name, optionally ="value" with \" escapes inside.
_OPTION_RE = r'[A-Za-z0-9-]+(?:="(?:[^"\\]|\\.)*")?'
_OPTION_LIST = re.compile(rf"{_OPTION_RE}(?:,{_OPTION_RE})*", re.ASCII)
_OPTION = re.compile(r'(?:^|,)([A-Za-z0-9-]+)(?==|,|$)', re.ASCII)
KEY_OPTIONS = frozenset({
    "agent-forwarding", "cert-authority", "command", "environment", "expiry-time", "from",
    "no-agent-forwarding", "no-port-forwarding", "no-pty", "no-user-rc", "no-x11-forwarding",
    "permitlisten", "permitopen", "port-forwarding", "principals", "pty", "no-touch-required",
    "verify-required", "restrict", "tunnel", "user-rc", "x11-forwarding",
})


class InvalidKey(ValueError):
    """The reason a key was refused, fit for a log line."""


@dataclass(frozen=True)
class Key:
    line: str  # [options ]type base64[ comment], one line, printable ASCII
    identity: str  # type base64: two lines with the same identity are one key


def normalise(line: object, **rules) -> str:
    """The normalised line of a valid key (see parse)."""
    return parse(line, **rules).line


def parse(
    line: object,
    *,
    allowed=DEFAULT_KEY_TYPES,
    min_rsa_bits: int = MIN_RSA_BITS,
    allow_options: bool = False,
) -> Key:
    """Check one authorized_keys line; raise InvalidKey with the reason.
    Options (``from="10.0.0.0/8",no-pty``) are refused unless
    ``allow_options``; then their names must be OpenSSH's."""
    text = _checked_text(line)
    options, line = _take_options(text, allow_options)
    key_type, body, comment = _fields(line)
    _check_type(key_type, allowed)
    _check_body(key_type, body, min_rsa_bits)
    if comment and not _PRINTABLE.fullmatch(comment):
        comment = ""  # a comment is decoration: drop it rather than the key
    key = f"{key_type} {body} {comment}" if comment else f"{key_type} {body}"
    key = f"{options} {key}" if options else key
    # The directory's string, not a copy, when the line was already normal: 100,000 members' keys.
    return Key(line=text if key == text else key, identity=f"{key_type} {body}")


def _checked_text(line: object) -> str:
    """``line`` stripped, once it is a single bounded line of text."""
    if not isinstance(line, str):
        raise InvalidKey(f"is a JSON {type(line).__name__}, not a string")
    if len(line) > MAX_KEY_LENGTH:
        raise InvalidKey(f"is longer than {MAX_KEY_LENGTH} characters")
    if _BREAK.search(line):
        raise InvalidKey("contains a line break or NUL")
    return line.strip()


def _take_options(line: str, allow_options: bool) -> Tuple[str, str]:
    """``(options, rest)``: a first word that is no key type starts options."""
    first = line.split(None, 1)[0] if line else ""
    # ssh-dss is a key type, refused later as DSA rather than as options.
    if not first or first in KEY_TYPES or first == "ssh-dss":
        return "", line
    if not allow_options:
        raise InvalidKey(
            f"has unknown type {first[:40]!r} or authorized_keys options, which are not accepted "
            "(coreweave_allow_key_options)"
        )
    return _split_options(line)


def _fields(line: str) -> Tuple[str, str, str]:
    """``(type, base64, comment)`` of ``type base64 [comment]``."""
    fields = line.split(None, 2)
    if len(fields) < 2:
        raise InvalidKey("is not 'type base64 [comment]'")
    comment = fields[2].strip() if len(fields) == 3 else ""
    return fields[0], fields[1], comment


def _check_type(key_type: str, allowed) -> None:
    if key_type == "ssh-dss":
        raise InvalidKey("is a DSA key, which is not accepted")
    if key_type not in KEY_TYPES:
        raise InvalidKey(f"has unknown type {key_type[:40]!r}")
    if KEY_TYPES[key_type] not in allowed:
        raise InvalidKey(f"has type {key_type}, which is not allowed here")


def _check_body(key_type: str, body: str, min_rsa_bits: int) -> None:
    """The body must load as a ``key_type`` key (and an RSA key be long enough)."""
    if not _BASE64.fullmatch(body):
        raise InvalidKey("has a body that is not base64")
    try:
        key = load_ssh_public_key(f"{key_type} {body}".encode("ascii"))
    except (ValueError, TypeError) as e:
        raise InvalidKey(f"does not decode as a {key_type} key ({e})") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd curves
        raise InvalidKey(f"cannot be loaded ({type(e).__name__})") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < min_rsa_bits:
        raise InvalidKey(f"is a {key.key_size}-bit RSA key, below the {min_rsa_bits}-bit minimum")


def _split_options(line: str) -> Tuple[str, str]:
    """Split ``opt1,opt2="a b" type base64 ...`` at the first unquoted blank
    and check each option name (authorized_keys(5), AUTHORIZED_KEYS FILE FORMAT)."""
    in_quotes, end = False, len(line)
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            in_quotes = not in_quotes
        elif c in " \t" and not in_quotes:
            end = i
            break
    if in_quotes:
        raise InvalidKey("has options with an unterminated quote")
    options = line[:end]
    if not _PRINTABLE.fullmatch(options):
        raise InvalidKey("has options with control or non-ASCII characters")
    for option in _OPTION.findall(options):
        if option.lower() not in KEY_OPTIONS:
            raise InvalidKey(f"has unknown option {option[:40]!r}")
    if _OPTION_LIST.fullmatch(options) is None:
        raise InvalidKey(f"has unknown type or malformed options {options[:40]!r}")
    return options, line[end:].strip()
