"""A deterministic pool of real OpenSSH public keys, and a few broken ones.

Every key is a function of ``(seed, index)``: the same pool on every machine.

* ed25519 and ECDSA keys come from seeded private bytes (``from_private_bytes``,
  ``derive_private_key``): fast.
* RSA keys are built from seeded primes found in pure Python (Miller-Rabin over a
  seeded ``random.Random``); that takes about 0.4 s for a 2048-bit key and a few
  seconds for 3072 bits, so the moduli are cached in a JSON file under the cache
  directory (``$XDG_CACHE_HOME/nss-cache-coreweave/benchmarks``) and missing ones are
  computed on all cores.
* FIDO keys (``sk-ssh-ed25519@openssh.com``, ``sk-ecdsa-sha2-nistp256@openssh.com``)
  are assembled as wire blobs (key type, public key, application ``ssh:``).

``pool(size)`` cycles through :data:`CYCLE`, so any prefix of a pool has the same
keys as a larger pool of the same seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import struct
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["CYCLE", "DEFAULT_POOL_SIZE", "pool", "bad_keys", "default_cache_dir", "key_type_counts"]

DEFAULT_POOL_SIZE = 384
# One cycle of 32 key kinds; pool index i has kind CYCLE[i % 32]. About 19 % RSA,
# 22 % ECDSA, 50 % ed25519, 9 % FIDO: roughly what a developer population holds.
CYCLE: Tuple[str, ...] = (
    "ed25519", "ecdsa-256", "ed25519", "rsa-2048", "ed25519", "ed25519", "sk-ed25519", "ecdsa-256",
    "ed25519", "rsa-2048", "ed25519", "ecdsa-384", "ed25519", "ed25519", "rsa-3072", "ed25519",
    "ecdsa-256", "ed25519", "rsa-2048", "ed25519", "sk-ecdsa", "ed25519", "ecdsa-521", "ed25519",
    "rsa-2048", "ed25519", "ecdsa-384", "ed25519", "sk-ed25519", "ecdsa-256", "rsa-2048", "ed25519",
)
_CURVES = {"ecdsa-256": ec.SECP256R1(), "ecdsa-384": ec.SECP384R1(), "ecdsa-521": ec.SECP521R1()}
_CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nss-cache-coreweave" / "benchmarks"


def key_type_counts(size: int) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for i in range(size):
        counts[CYCLE[i % len(CYCLE)]] = counts.get(CYCLE[i % len(CYCLE)], 0) + 1
    return counts


def pool(size: int = DEFAULT_POOL_SIZE, seed: int = 1, cache_dir: Optional[Path] = None) -> List[str]:
    """``size`` distinct valid keys as ``type base64`` (no comment)."""
    kinds = [CYCLE[i % len(CYCLE)] for i in range(size)]
    moduli = _rsa_moduli(
        [(i, int(kind.split("-")[1])) for i, kind in enumerate(kinds) if kind.startswith("rsa-")],
        seed, cache_dir or default_cache_dir(),
    )
    keys = []
    for i, kind in enumerate(kinds):
        secret = _secret(seed, i)
        if kind == "ed25519":
            keys.append(_openssh(ed25519.Ed25519PrivateKey.from_private_bytes(secret[:32]).public_key()))
        elif kind in _CURVES:
            keys.append(_openssh(_ec_key(secret, _CURVES[kind])))
        elif kind == "sk-ed25519":
            raw = ed25519.Ed25519PrivateKey.from_private_bytes(secret[:32]).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            keys.append(_wire("sk-ssh-ed25519@openssh.com", raw, b"ssh:"))
        elif kind == "sk-ecdsa":
            point = _ec_key(secret, ec.SECP256R1()).public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            keys.append(_wire("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", point, b"ssh:"))
        else:
            keys.append(_openssh(rsa.RSAPublicNumbers(65537, moduli[i]).public_key()))
    if len(set(keys)) != len(keys):  # pragma: no cover - astronomically unlikely
        raise AssertionError("the key pool holds a duplicate")
    return keys


def bad_keys(seed: int = 1) -> List[str]:
    """Key lines the package must refuse, one per reason (authorized_keys syntax,
    DSA, short RSA, wrong inner type, truncated body, options, not base64)."""
    good_ed = _openssh(ed25519.Ed25519PrivateKey.from_private_bytes(_secret(seed, 10**6)[:32]).public_key())
    ed_body = good_ed.split()[1]
    short_rsa = _openssh(rsa.RSAPublicNumbers(65537, _modulus(seed, 10**6 + 1, 1024)).public_key())
    dss_blob = b"".join(_string(x) for x in (b"ssh-dss", b"\x00" + bytes(range(1, 129)), b"\x00" + bytes(20),
                                               b"\x02" * 128, b"\x03" * 128))
    return [
        "ssh-dss " + base64.b64encode(dss_blob).decode(),  # DSA: never accepted
        short_rsa + " short@rsa",  # 1024-bit RSA
        "ssh-rsa " + ed_body + " mismatch@inner-type",  # body is an ed25519 key
        "ssh-ed25519 " + ed_body[:40] + " truncated@body",
        'from="10.0.0.0/8",no-pty ' + good_ed + " with@options",  # options are refused by default
        "ssh-ed25519 not*base64*at*all",
        "ssh-ed25519",
        "ecdsa-sha2-nistp999 " + ed_body,
    ]


def _secret(seed: int, index: int) -> bytes:
    return hashlib.sha512(f"nss-cache-coreweave bench key {seed} {index}".encode()).digest()


def _ec_key(secret: bytes, curve: ec.EllipticCurve):
    # Any integer in [1, order) is a private key; 2**(bits-2) keeps it in range for every curve.
    value = int.from_bytes(secret, "big") % (2 ** (curve.key_size - 2)) + 1
    return ec.derive_private_key(value, curve).public_key()


def _openssh(public_key) -> str:
    return public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _wire(key_type: str, *fields: bytes) -> str:
    blob = _string(key_type.encode()) + b"".join(_string(f) for f in fields)
    return f"{key_type} {base64.b64encode(blob).decode()}"


# --- RSA: seeded primes, cached -------------------------------------------------

_SMALL_PRIMES = [p for p in range(3, 5000) if all(p % d for d in range(2, int(p**0.5) + 1))]
_SMALL_PRODUCT = math.prod(_SMALL_PRIMES)


def _probable_prime(n: int, rng: random.Random, rounds: int = 12) -> bool:
    if math.gcd(n, _SMALL_PRODUCT) != 1:
        return False
    d, s = n - 1, 0
    while not d & 1:
        d, s = d >> 1, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top two bits set: n has exactly 2*bits bits
        if candidate % 65537 != 1 and _probable_prime(candidate, rng):
            return candidate


def _modulus(seed: int, index: int, bits: int) -> int:
    rng = random.Random(f"nss-cache-coreweave bench rsa {seed} {index} {bits}")
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
        if p != q:
            return p * q


def _modulus_job(args: Tuple[int, int, int]) -> int:
    return _modulus(*args)


def _rsa_moduli(wanted: List[Tuple[int, int]], seed: int, cache_dir: Path) -> Dict[int, int]:
    """index -> modulus for (index, bits) in ``wanted``, from the cache file or computed."""
    path = cache_dir / f"rsa-moduli-v{_CACHE_FORMAT}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    name = lambda index, bits: f"{seed}:{index}:{bits}"  # noqa: E731
    missing = [(seed, i, bits) for i, bits in wanted if name(i, bits) not in cached]
    if missing:
        workers = min(len(missing), os.cpu_count() or 1)
        if workers > 1:
            with ProcessPoolExecutor(workers) as executor:
                found = list(executor.map(_modulus_job, missing))
        else:
            found = [_modulus_job(job) for job in missing]
        for (_, i, bits), n in zip(missing, found):
            cached[name(i, bits)] = format(n, "x")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cached, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home only costs time
    moduli = {i: int(cached[name(i, bits)], 16) for i, bits in wanted}
    for i, bits in wanted:
        if moduli[i].bit_length() != bits:
            raise ValueError(f"cached RSA modulus {name(i, bits)} in {path} has {moduli[i].bit_length()} bits: "
                             "delete the file")
    return moduli
