"""Agent identity keys and signed agent-to-agent requests (Ed25519, after RFC 9421/9530)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import heapq
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.secrets_file import SharedSecretFile, read_private

if TYPE_CHECKING:
    from agent.clock import Clock

#: The request header naming the agent a request is meant for (its key fingerprint).
AUDIENCE_HEADER = "shopsync-audience"

__all__ = [
    "AUDIENCE_HEADER",
    "COMPONENTS",
    "MemoryNonceCache",
    "NonceCache",
    "NonceCacheFull",
    "SignatureError",
    "SigningError",
    "VerifiedRequest",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key_b64",
    "precheck",
    "public_key_b64",
    "save_private_key",
    "sign_request",
    "signature_key_id",
    "verify_request",
]

#: The components every signature must cover; the receiver refuses anything less.
#: ``shopsync-audience`` names the receiving agent (its key id), so that a request signed for
#: one agent is refused by every other: nonce caches are per agent, audiences are not.
COMPONENTS: tuple[str, ...] = ("@method", "@path", "@query", "content-digest", AUDIENCE_HEADER)
_LABEL = "sig1"
_ALG = "ed25519"
_PARAMS = ("created", "nonce", "keyid", "alg")
# Keeps a hostile header from costing memory or CPU before the signature is checked.
_MAX_HEADER = 4096


class SigningError(Exception):
    """A key or key file is unusable (bad encoding, wrong type, unsafe file mode)."""


class NonceCacheFull(Exception):
    """The nonce cache is at capacity with unexpired entries; the request must be retried."""


class SignatureError(Exception):
    """A signed request was refused.

    `status` is the HTTP status to answer (401, or 503 for ``nonce_cache_full``); `reason` is
    one of ``missing_signature``, ``malformed_signature``, ``digest_mismatch``,
    ``stale_timestamp``, ``unknown_key``, ``bad_signature``, ``replayed_nonce``,
    ``nonce_cache_full``; `message` explains it to a human.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a verified signature proves: who signed (`key_id`), when, and its unique nonce."""

    key_id: str
    created: int
    nonce: str


# --- keys -------------------------------------------------------------------------------


def generate_keypair() -> Ed25519PrivateKey:
    """A new random Ed25519 private key (its public half is `key.public_key()`)."""
    return Ed25519PrivateKey.generate()


def save_private_key(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Write `key` as unencrypted PKCS8 PEM to `path`, mode 0600 from the first byte.

    The PEM goes to a temporary file created 0600 in the same directory, then is linked (or,
    with `overwrite`, renamed) into place, so a crash never leaves a half-written key and the
    secret is never readable by others, whatever the umask. An existing file is an error unless
    `overwrite` is set, so an identity is never replaced by accident.
    """
    path = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails atomically if `path` exists, unlike rename
            except FileExistsError:
                raise SigningError(f"{path} exists; refusing to overwrite a private key") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 PEM private key, refusing a file that group or others may access."""
    path = Path(path)
    try:
        data = read_private(path, "a private key")
    except SharedSecretFile as exc:
        raise SigningError(str(exc)) from None
    except OSError as e:
        raise SigningError(f"cannot read private key {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as standard base64 of its 32 raw bytes (how agents exchange keys)."""
    return base64.b64encode(_raw_public(key)).decode("ascii")


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """Parse a key made by `public_key_b64`; SigningError says what is wrong with bad input."""
    if not isinstance(text, str):
        raise SigningError(f"public key must be a base64 string, not {type(text).__name__}")
    return _load_public_key(text)


@functools.lru_cache(maxsize=1024)
def _load_public_key(text: str) -> Ed25519PublicKey:
    # a key is a value: the members' few keys are parsed once, not on every request
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SigningError("public key is not valid base64") from None
    if len(raw) != 32:
        raise SigningError(f"public key is {len(raw)} bytes; an Ed25519 key is 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(pub_b64: str) -> str:
    """OpenSSH-style fingerprint, ``SHA256:<unpadded base64 of sha256(raw key)>``."""
    raw = _raw_public(load_public_key_b64(pub_b64))
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


# --- structured fields (RFC 8941): only the shapes these headers use, matched strictly ---

_KEY = r"[a-z*][a-z0-9_\-.*]*"
_STR = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'
_VALUE = rf"(?:-?[0-9]{{1,15}}|{_STR})"
_BYTES = r":([A-Za-z0-9+/]*={0,2}):"
_INPUT_RE = re.compile(rf"({_KEY})=\(((?:{_STR}(?: {_STR})*)?)\)((?:;{_KEY}={_VALUE})*)")
_PARAM_RE = re.compile(rf";({_KEY})=({_VALUE})")
_BYTES_MEMBER_RE = re.compile(rf"({_KEY})={_BYTES}")


_ESCAPE_RE = re.compile(r"\\(.)")


def _unquote(text: str) -> str:
    inner = text[1:-1]
    return _ESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner


def _parse_input(value: str) -> tuple[str, list[str], dict[str, int | str]]:
    """Parse ``label=("c1" "c2");k=v;...`` (one member; string components; int/str params)."""
    m = _INPUT_RE.fullmatch(value.strip(" \t"))
    if not m:
        raise ValueError('Signature-Input is not label=("component" ...);param=value...')
    params: dict[str, int | str] = {}
    for key, raw in _PARAM_RE.findall(m[3]):
        if key in params:
            raise ValueError(f"duplicate parameter {key}")
        params[key] = _unquote(raw) if raw.startswith('"') else int(raw)
    return m[1], [_unquote(c) for c in re.findall(_STR, m[2])], params


def _parse_bytes_dict(value: str) -> dict[str, bytes]:
    """Parse a Dictionary of byte sequences (``k=:b64:, k2=:b64:``), refusing duplicates."""
    out: dict[str, bytes] = {}
    for member in value.split(","):  # base64 has no comma, so this split is exact
        m = _BYTES_MEMBER_RE.fullmatch(member.strip(" \t"))
        if not m or m[1] in out:
            raise ValueError("expected label=:base64: members, each label once")
        out[m[1]] = base64.b64decode(m[2], validate=True)
    return out


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signature_params(components: list[str], params: dict[str, int | str]) -> str:
    inner = " ".join(_sf_string(c) for c in components)
    rest = "".join(
        f";{k}={v}" if isinstance(v, int) else f";{k}={_sf_string(v)}" for k, v in params.items()
    )
    return f"({inner}){rest}"


def _signature_base(
    method: str,
    target: str,
    digest_header: str,
    audience: str,
    components: list[str],
    params_text: str,
) -> bytes:
    path, _, query = target.partition("?")
    values = {
        "@method": method.upper(),
        "@path": path or "/",
        "@query": "?" + query,  # RFC 9421 §2.2.7: an absent query is "?"
        "content-digest": digest_header.strip(),
        AUDIENCE_HEADER: audience.strip(),
    }
    lines = [f'"{c}": {values[c]}' for c in components]
    lines.append(f'"@signature-params": {params_text}')
    return "\n".join(lines).encode("utf-8")


def _content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


# --- signing and verifying --------------------------------------------------------------


def sign_request(
    method: str,
    target: str,
    body: bytes,
    *,
    private_key: Ed25519PrivateKey,
    key_id: str,
    audience: str,
    created: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that sign this request: ``Content-Digest``, ``Shopsync-Audience``,
    ``Signature-Input``, ``Signature``.

    `target` is the path with its query as sent on the request line (``/peer/x?a=1``).
    `audience` is the receiving agent's key id (fingerprint): no other agent accepts it.
    `created` is the signing time in epoch seconds; `nonce` defaults to 128 random bits.
    """
    if not target.startswith("/"):
        raise ValueError(f"target must be a path starting with '/', got {target!r}")
    if nonce is None:
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    for value in (key_id, nonce, audience):
        if not value or not value.isascii() or not value.isprintable():
            raise ValueError(f"key_id, audience and nonce must be printable ASCII, got {value!r}")
    digest = _content_digest(body)
    params: dict[str, int | str] = {
        "created": int(created),
        "nonce": nonce,
        "keyid": key_id,
        "alg": _ALG,
    }
    params_text = _signature_params(list(COMPONENTS), params)
    base = _signature_base(method, target, digest, audience, list(COMPONENTS), params_text)
    signature = base64.b64encode(private_key.sign(base)).decode()
    return {
        "Content-Digest": digest,
        "Shopsync-Audience": audience,
        "Signature-Input": f"{_LABEL}={params_text}",
        "Signature": f"{_LABEL}=:{signature}:",
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Parsed:
    key_id: str
    created: int
    nonce: str
    components: list[str]
    params: dict[str, int | str]
    signature: bytes
    digest_header: str
    digest: bytes
    audience: str


def _header_map(headers: Mapping[str, str]) -> dict[str, str]:
    """Case-insensitive view of the signing headers; a repeated one is malformed."""
    wanted = {"signature", "signature-input", "content-digest", AUDIENCE_HEADER}
    found: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in wanted:
            if low in found:
                raise SignatureError(401, "malformed_signature", f"{name} appears twice")
            found[low] = value
    return found


def _malformed(message: str) -> SignatureError:
    return SignatureError(401, "malformed_signature", message)


def _parse(headers: Mapping[str, str]) -> _Parsed:
    h = _header_map(headers)
    needed = ("signature-input", "signature", "content-digest", AUDIENCE_HEADER)
    missing = [n for n in needed if n not in h]
    if missing:
        raise SignatureError(401, "missing_signature", f"missing header(s): {', '.join(missing)}")
    return _parse_fields(
        h["signature-input"], h["signature"], h["content-digest"], h[AUDIENCE_HEADER]
    )


@functools.lru_cache(maxsize=256)
def _parse_fields(signature_input: str, signature: str, digest: str, audience: str) -> _Parsed:
    """The signing headers' fields, checked (remembered: the door parses a request's headers
    before reading its body and again to verify it; the answer is never changed)."""
    if any(len(v) > _MAX_HEADER for v in (signature_input, signature, digest, audience)):
        raise _malformed("signature header too long")
    try:
        label, components, params = _parse_input(signature_input)
        sigs = _parse_bytes_dict(signature)
        digests = _parse_bytes_dict(digest)
    except ValueError as e:
        raise _malformed(f"unparsable signature header: {e}") from None
    if list(sigs) != [label]:
        raise _malformed("expected exactly one signature, with one label in both headers")
    if sorted(components) != sorted(COMPONENTS):
        raise _malformed(f"signature must cover exactly {' '.join(COMPONENTS)}")
    if len(sigs[label]) != 64:
        raise _malformed("an Ed25519 signature is 64 bytes")
    if sorted(params) != sorted(_PARAMS):
        raise _malformed(f"signature parameters must be exactly {', '.join(_PARAMS)}")
    created, nonce, key_id = params["created"], params["nonce"], params["keyid"]
    if not isinstance(created, int) or created < 0:
        raise _malformed("created must be a non-negative integer")
    if not (isinstance(nonce, str) and isinstance(key_id, str) and nonce and key_id):
        raise _malformed("nonce and keyid must be non-empty strings")
    if params["alg"] != _ALG:
        raise _malformed(f"alg must be {_ALG!r}")
    if "sha-256" not in digests:
        raise _malformed("Content-Digest must carry sha-256")
    return _Parsed(
        key_id,
        created,
        nonce,
        components,
        params,
        sigs[label],
        digest,
        digests["sha-256"],
        audience.strip(" \t"),
    )


def signature_key_id(headers: Mapping[str, str]) -> str:
    """The `keyid` a request claims, before verification (to look its key up asynchronously).

    Raises SignatureError exactly as `verify_request` would for missing or malformed headers.
    """
    return _parse(headers).key_id


def precheck(
    headers: Mapping[str, str],
    *,
    now: float,
    audience: str,
    max_skew: int = 300,
    not_before: float = 0.0,
) -> str:
    """What can be refused from the headers alone, before the body is read: syntax, audience
    and time. Returns the claimed key id; SignatureError as `verify_request` would raise."""
    p = _parse(headers)
    _check_fresh(p, now=now, audience=audience, max_skew=max_skew, not_before=not_before)
    return p.key_id


def _check_fresh(
    p: _Parsed, *, now: float, audience: str, max_skew: int, not_before: float
) -> None:
    """Refuse a request meant for another agent, or signed too long ago (or ahead)."""
    if p.audience != audience:  # public, so no constant-time compare is needed
        raise SignatureError(
            401, "wrong_audience", f"signed for {p.audience!r}, not for this agent ({audience})"
        )
    skew = p.created - now
    if abs(skew) > max_skew:
        raise SignatureError(
            401, "stale_timestamp", f"created is {abs(skew):.0f} s from now (max {max_skew})"
        )
    if p.created < not_before:
        raise SignatureError(
            401, "stale_timestamp", "signed before this agent started; sign it again"
        )


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    resolve_key: Callable[[str], Ed25519PublicKey | None],
    now: float,
    nonces: NonceCache,
    audience: str,
    max_skew: int = 300,
    not_before: float = 0.0,
) -> VerifiedRequest:
    """Check a request signed by `sign_request`; SignatureError says why it is refused.

    Checks, in order: header syntax, the audience (must be `audience`, this agent's key id),
    `created` within ±`max_skew` s of `now` and not before `not_before` (the receiver's start:
    its nonce cache forgot what came before), the content digest, the key (`resolve_key(key_id)`,
    None for unknown), the signature, and last the nonce, recorded only once everything else
    holds so that forged requests cannot fill the cache. Membership is the caller's business
    (refuse a known but unwelcome key with 403).
    """
    p = _parse(headers)
    key_id, created, nonce = p.key_id, p.created, p.nonce
    _check_fresh(p, now=now, audience=audience, max_skew=max_skew, not_before=not_before)
    if not hmac.compare_digest(p.digest, hashlib.sha256(body).digest()):
        raise SignatureError(401, "digest_mismatch", "Content-Digest does not match the body")
    public_key = resolve_key(key_id)
    if public_key is None:
        raise SignatureError(401, "unknown_key", f"no known key with keyid {key_id!r}")
    base = _signature_base(
        method,
        target,
        p.digest_header,
        p.audience,
        p.components,
        _signature_params(p.components, p.params),
    )
    try:
        public_key.verify(p.signature, base)
    except InvalidSignature:
        raise SignatureError(401, "bad_signature", "signature does not verify") from None
    try:
        replayed = nonces.seen(key_id, nonce, created + max_skew)
    except NonceCacheFull:
        raise SignatureError(503, "nonce_cache_full", "too many recent requests; retry") from None
    if replayed:
        raise SignatureError(401, "replayed_nonce", "nonce was already used")
    return VerifiedRequest(key_id=key_id, created=created, nonce=nonce)


# --- nonces -----------------------------------------------------------------------------


class NonceCache(Protocol):
    """Remembers nonces while their timestamps are acceptable, to refuse replays."""

    def seen(self, key_id: str, nonce: str, expires_at: float) -> bool:
        """True if (key_id, nonce) was recorded and has not expired; else record it.

        May raise NonceCacheFull rather than forget an unexpired nonce.
        """
        ...


class MemoryNonceCache:
    """A NonceCache in memory, for one agent process.

    Entries are forgotten once `clock.now()` passes their `expires_at`. At `max_entries`
    unexpired entries it raises NonceCacheFull (the request is answered 503 and retried later)
    rather than evict one early: early eviction would reopen a replay window.
    """

    def __init__(self, clock: Clock, *, max_entries: int = 100_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        self._purge()
        return len(self._expiry)

    def _purge(self) -> None:
        now = self.clock.now()
        while self._heap and self._heap[0][0] < now:
            # Each live entry has exactly one heap item, so popping it forgets the entry.
            del self._expiry[heapq.heappop(self._heap)[1]]

    def seen(self, key_id: str, nonce: str, expires_at: float) -> bool:
        """True if (key_id, nonce) is remembered; else record it until `expires_at`."""
        self._purge()
        entry = (key_id, nonce)
        if entry in self._expiry:
            return True
        if len(self._expiry) >= self.max_entries:
            raise NonceCacheFull(f"{len(self._expiry)} unexpired nonces")
        self._expiry[entry] = expires_at
        heapq.heappush(self._heap, (expires_at, entry))
        return False
