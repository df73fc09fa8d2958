"""Who a request belongs to: the API keys a server accepts, and the scope a request's learned and
cached state lives in.

A scope is the unit of isolation: a request's prefix-cache entries, suffix history and
acceptance calibration belong to its scope, and no other scope reaches them. Scope names are
hashes, so no key or client-chosen string is ever kept in memory tables or saved state files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Iterable

from adaspec.errors import AdaspecError

KEY_ENVIRONMENT = "ADASPEC_API_KEY"
HISTORY_SCOPES = ("server", "user", "key")
MAX_KEYS = 4096


def digest(*parts: str) -> str:
    """A short, stable name for some text that does not reveal it.

    Args:
        parts: the texts (joined with a separator no text holds).

    Returns:
        32 hex characters of their SHA-256.
    """
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ApiKeys:
    """The keys a server accepts (``Authorization: Bearer KEY``), each known by a digest.

    Args:
        keys: the accepted keys.

    Raises:
        AdaspecError: for an empty key, one holding whitespace, or more than ``MAX_KEYS``.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        unique = list(dict.fromkeys(keys))
        if len(unique) > MAX_KEYS:
            raise AdaspecError(f"at most {MAX_KEYS} API keys, got {len(unique)}")
        for key in unique:
            if not key or any(c.isspace() for c in key) or not key.isprintable():
                raise AdaspecError("an API key must be non-empty printable text without spaces")
        self._keys = [(key.encode(), digest("key", key)) for key in unique]

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, authorization: bytes | None) -> str | None:
        """The digest of the key an ``Authorization`` header carries, if it is one of ours.

        Every key is compared in constant time, so the time taken says nothing about how
        close a guess came.

        Args:
            authorization: the header's raw value (None when absent).

        Returns:
            The key's digest, or None for a missing, malformed or unknown key.
        """
        if not authorization:
            return None
        scheme, _, offered = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        offered = offered.strip()
        found = None
        for key, name in self._keys:
            if hmac.compare_digest(key, offered) and found is None:
                found = name
        return found


def load_keys(keys: Iterable[str] = (), key_file: str | Path | None = None,
              environment: dict[str, str] | None = None) -> ApiKeys | None:
    """The keys from ``--api-key`` (repeatable), ``--api-key-file`` and ``$ADASPEC_API_KEY``.

    Args:
        keys: keys given on the command line.
        key_file: a file of keys, one a line (blank lines and lines starting with ``#`` skipped).
        environment: where to read ``ADASPEC_API_KEY`` (default: ``os.environ``).

    Returns:
        The keys, or None when none was given (the server is open).

    Raises:
        AdaspecError: for a file that cannot be read, or a bad key.
    """
    found = list(keys)
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise AdaspecError(f"cannot read the API key file {key_file}: {error}") from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise AdaspecError(f"the API key file {key_file} holds no key")
    from_environment = (os.environ if environment is None else environment).get(KEY_ENVIRONMENT, "").strip()
    if from_environment:
        found.append(from_environment)
    return ApiKeys(found) if found else None


def default_scope(history_scope: str | None, keys: ApiKeys | None) -> str:
    """The history scope a server uses: the one asked for, else ``key`` with keys and ``server`` without.

    Args:
        history_scope: ``server``, ``user``, ``key`` or None.
        keys: the accepted keys (None: the server is open).

    Returns:
        The scope policy.

    Raises:
        AdaspecError: for an unknown policy.
    """
    if history_scope is None:
        return "key" if keys else "server"
    if history_scope not in HISTORY_SCOPES:
        raise AdaspecError(f"history scope must be one of {', '.join(HISTORY_SCOPES)}, got {history_scope!r}")
    return history_scope


def scope_name(policy: str, caller: str | None, credential: str, user: str | None) -> str:
    """The scope of one request (see the module doc): a digest, never the text it names.

    Args:
        policy: ``server`` (everyone shares ``""``), ``key`` or ``user``.
        caller: the digest of the authenticated key (None when the server takes no keys).
        credential: the digest of the ``Authorization`` header as sent (used by ``key`` when the
            server takes no keys: then the client chooses its scope).
        user: OpenAI's ``user`` field.

    Returns:
        ``""``, ``key:<digest>`` or ``user:<digest>``; with keys, a ``user`` scope lies inside
        its key's (the same ``user`` under two keys is two scopes).
    """
    if policy == "key":
        return "key:" + (caller or credential)
    if policy == "user":
        return "user:" + digest("user", caller or "", user or "")
    return ""


def cache_salt_name(salt: str | None) -> str:
    """The digest a request's ``cache_salt`` separates its prefix caches by ("" for none).

    Args:
        salt: the field as sent.

    Returns:
        Its digest, or "".
    """
    return digest("salt", salt) if salt else ""
