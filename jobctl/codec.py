"""Secret parameters never reach Temporal in plaintext: a payload codec encrypts the payloads that carry them.

Everything else stays plain JSON (pydantic_data_converter), so the `temporal` CLI, the web UI and any client
keep reading and writing Jobs as before. A payload is encrypted when its JSON holds a `secretParameters`
object with a value other than "***" (a Job, a spec in an activity input or an update, a continue-as-new
input): its whole serialized form becomes one Fernet token (AES-128-CBC + HMAC-SHA256), encoding
`binary/encrypted`. The keys come from JOBCTL_CODEC_KEY: one or more comma-separated Fernet keys; the first
encrypts, all of them decrypt, so a key is rotated by putting a new one first and keeping the old ones
until no history still needs them.

Without a key the codec refuses to write a secret (encode raises SecretsNotEncrypted) and cannot read an
encrypted payload (decode raises). A payload that arrives with secrets in plaintext (sent without this
codec, e.g. by `temporal workflow start`) is decoded with its secret values replaced by "***": jobctl then
refuses to launch it (the Job fails STARTING, see activities/job.py) instead of spreading it further.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from jobctl.models import REDACTED

ENCODING = b"binary/encrypted"
CIPHER = b"jobctl-fernet-v1"
JSON = b"json/plain"
# Both spellings the models accept; a cheap byte check before any JSON is parsed.
SECRET_KEYS = ("secretParameters", "secret_parameters")
_MARKERS = tuple(key.encode() for key in SECRET_KEYS)

HOW_TO_GET_A_KEY = (
    "generate one with `jobctl codec-key` and set JOBCTL_CODEC_KEY to it, the same on every jobctl client and worker"
)


class SecretsNotEncrypted(ValueError):
    """A secret would be written without encryption, or an encrypted payload cannot be read."""


class CodecKeyError(ValueError):
    """JOBCTL_CODEC_KEY is malformed."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(value: str | None) -> list[str]:
    """JOBCTL_CODEC_KEY: comma-separated Fernet keys, the one that encrypts first."""
    keys = [key.strip() for key in (value or "").split(",") if key.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            # Never echo the value: it is (almost) a key.
            raise CodecKeyError(
                f"JOBCTL_CODEC_KEY: key #{position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                + HOW_TO_GET_A_KEY
            ) from None
    return keys


def key_id(key: str) -> str:
    """A short fingerprint that names a key in payload metadata and errors without revealing it."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a value, outermost first. A loop, not recursion: a payload nested deeper
    than Python's recursion limit must not crash the codec (and with it every workflow task)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def holds_secrets(value: Any) -> bool:
    """True if a JSON value holds a secretParameters object with a value that is not "***"."""
    return any(
        key in SECRET_KEYS and isinstance(item, dict) and any(v != REDACTED for v in item.values())
        for obj in _objects(value)
        for key, item in obj.items()
    )


def _redacted(value: Any) -> Any:
    """The value (freshly parsed, so changed in place) with every secret parameter's value shown as ***."""
    for obj in list(_objects(value)):
        for key in SECRET_KEYS:
            if isinstance(obj.get(key), dict):
                obj[key] = dict.fromkeys(obj[key], REDACTED)
    return value


def _secret_json(payload: Payload) -> Any | None:
    """The payload's JSON if it holds secrets in plaintext, else None."""
    if payload.metadata.get("encoding") != JSON or not any(marker in payload.data for marker in _MARKERS):
        return None
    try:
        value = json.loads(payload.data)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for any Job: pydantic will say so
        return None
    return value if holds_secrets(value) else None


class SecretsCodec(PayloadCodec):
    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._keys = list(keys)
        self._fernet = MultiFernet([Fernet(key) for key in self._keys]) if self._keys else None
        self._ids = [key_id(key) for key in self._keys]

    @property
    def can_encrypt(self) -> bool:
        return self._fernet is not None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encode(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode(p) for p in payloads]

    def _encode(self, payload: Payload) -> Payload:
        if _secret_json(payload) is None:
            return payload
        if self._fernet is None:
            raise SecretsNotEncrypted(
                "this payload holds secret parameters (secretParameters), which jobctl writes only encrypted, "
                "but JOBCTL_CODEC_KEY is not set here; " + HOW_TO_GET_A_KEY
            )
        return Payload(
            metadata={"encoding": ENCODING, "encryption-cipher": CIPHER, "encryption-key-id": self._ids[0].encode()},
            data=self._fernet.encrypt(payload.SerializeToString()),
        )

    def _decode(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") == ENCODING and payload.metadata.get("encryption-cipher") == CIPHER:
            return self._decrypt(payload)
        plain = _secret_json(payload)
        if plain is None:
            return payload
        # Sent in plaintext by something that bypassed this codec: never pass the values on.
        return Payload(metadata=dict(payload.metadata), data=json.dumps(_redacted(plain)).encode())

    def _decrypt(self, payload: Payload) -> Payload:
        used = payload.metadata.get("encryption-key-id", b"?").decode(errors="replace")
        if self._fernet is None:
            raise SecretsNotEncrypted(
                f"a payload is encrypted (secret parameters, key {used}) but JOBCTL_CODEC_KEY is not set here; "
                "set it to the key the Job was started with"
            )
        try:
            return Payload.FromString(self._fernet.decrypt(payload.data))
        except InvalidToken:
            raise SecretsNotEncrypted(
                f"a payload is encrypted with key {used}, which is not in JOBCTL_CODEC_KEY (keys here: "
                f"{', '.join(self._ids)}); add that key after the current one"
            ) from None


def data_converter(keys: Iterable[str] = ()) -> DataConverter:
    """The converter every jobctl client and worker uses: pydantic JSON, secrets encrypted."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=SecretsCodec(list(keys)))


def can_encrypt(converter: DataConverter) -> bool:
    codec = converter.payload_codec
    return isinstance(codec, SecretsCodec) and codec.can_encrypt
