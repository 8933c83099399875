"""The secret keys that sign the audit chain, kept in a file outside the database.

The file holds one key per line, ``<key id> <hex secret>``; ``#`` starts a comment.
The last line is the current key, which signs new events and checkpoints; earlier
lines stay so that what they signed still verifies (rotation appends, never edits).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ..errors import AuditKeyError

__all__ = ["AuditKeys", "add_key", "load_keys", "signing_keys"]

KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class AuditKeys:
    """Every key the file holds, by id, and the id of the one that signs now."""

    path: Path
    secrets: dict[str, bytes]
    current: str

    def sign(self, key_id: str, message: str) -> str:
        """HMAC-SHA256 of ``message`` under key ``key_id``, as 64 hex digits."""
        secret = self.secrets.get(key_id)
        if secret is None:
            raise AuditKeyError(
                f"audit: key {key_id!r} is not in {self.path}; an event or checkpoint "
                "was signed with it, so its line must stay in the file"
            )
        return hmac.new(secret, message.encode(), "sha256").hexdigest()


def load_keys(path: Path) -> AuditKeys:
    """Read and check a key file.

    Raises:
        AuditKeyError: the file is missing or unreadable, a line is malformed, a key
            id repeats, or a secret is shorter than 32 bytes.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise AuditKeyError(
            f"audit: key file {path} cannot be read ({exc.strerror or exc}); create it "
            "with `manage.py audit_key --new` and point AUDIT_KEY_FILE at it"
        ) from None
    keys: dict[str, bytes] = {}
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"audit: key file {path}, line {number}"
        if len(parts) != 2 or not KEY_ID.fullmatch(parts[0]):
            raise AuditKeyError(
                f"{where}: expected '<key id> <hex secret>' with an id of 1-16 "
                "letters, digits, '-' or '_'"
            )
        key_id, hex_secret = parts
        try:
            secret = bytes.fromhex(hex_secret)
        except ValueError:
            raise AuditKeyError(f"{where}: the secret is not hexadecimal") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise AuditKeyError(
                f"{where}: the secret has {len(secret)} bytes, at least "
                f"{MIN_SECRET_BYTES} are needed"
            )
        if key_id in keys:
            raise AuditKeyError(f"{where}: key id {key_id!r} appears twice")
        keys[key_id] = secret
        current = key_id
    if not keys:
        raise AuditKeyError(
            f"audit: key file {path} holds no key; add one with `manage.py audit_key "
            "--new`"
        )
    return AuditKeys(path=path, secrets=keys, current=current)


def add_key(path: Path) -> str:
    """Append a new random key to ``path`` (made, owner-only, if missing).

    Returns:
        The new key's id (``k1``, ``k2``, ... after the ids already there); it signs
        from now on, and the keys before it keep verifying what they signed.
    """
    existing = load_keys(path).secrets if path.exists() else {}
    number = len(existing) + 1
    while f"k{number}" in existing:
        number += 1
    key_id = f"k{number}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(f"{key_id} {secrets.token_hex(MIN_SECRET_BYTES)}\n")
    return key_id


def _create_first_key(path: Path) -> None:
    """Make a one-key file atomically: processes starting together agree on one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"k1 {secrets.token_hex(MIN_SECRET_BYTES)}\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()


_cache: dict[Path, tuple[tuple[int, int], AuditKeys]] = {}


def signing_keys() -> AuditKeys:
    """The keys of ``settings.AUDIT_KEY_FILE``, re-read when the file changes.

    With ``DEBUG`` on, a missing file is created with one key, as the development
    secret key is; in production it must be made beforehand (a system check says so).
    """
    path = Path(settings.AUDIT_KEY_FILE)
    if not path.exists() and settings.DEBUG:
        _create_first_key(path)
    try:
        stat = path.stat()
    except OSError:
        return load_keys(path)  # raises with the reason
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, load_keys(path))
        _cache[path] = cached
    return cached[1]
