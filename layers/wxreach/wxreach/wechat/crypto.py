"""WeChat callback signatures and safe-mode (AES) message crypto (reference §5.1, §5.2, §5.4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxreach.errors import CallbackRejected

_ENCODING_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
# WeChat pads to a 32-byte block (pad value 1..32), not AES's 16.
_PAD_BLOCK_BITS = 256
_PAD_BLOCK = _PAD_BLOCK_BITS // 8
# The PKCS#7 tail each last byte announces; a value outside 1..32 gets a tail ending in another
# byte, which can never match.
_PAD_TAILS = tuple(
    bytes([value]) * value if 1 <= value <= _PAD_BLOCK else bytes([value ^ 1]) * _PAD_BLOCK
    for value in range(256)
)
_RANDOM_PREFIX = 16
_LENGTH_FIELD = 4
# Values written outside CDATA (TimeStamp) or inside it (Nonce) in the reply envelope.
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_NONCE = re.compile(r"[A-Za-z0-9]{1,64}")


def _sha1_of_sorted(*parts: str) -> str:
    joined = "".join(sorted(parts)).encode("utf-8")
    return hashlib.sha1(joined).hexdigest()  # noqa: S324 - SHA-1 is what the protocol mandates


def _matches(expected: str, received: str) -> bool:
    # compare_digest refuses non-ASCII str, so compare bytes.
    return hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8", "replace"))


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    """The `signature` query parameter: sha1 hex of sorted(token, timestamp, nonce) joined."""
    return _sha1_of_sorted(token, timestamp, nonce)


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The `msg_signature` query parameter of safe/compatible mode, computed over the body's Encrypt."""
    return _sha1_of_sorted(token, timestamp, nonce, encrypt)


def verify_plain_signature(token: str, timestamp: str, nonce: str, signature: str) -> None:
    if not _matches(plain_signature(token, timestamp, nonce), signature):
        raise CallbackRejected("signature does not match", reason="bad_signature")


def verify_msg_signature(token: str, timestamp: str, nonce: str, encrypt: str, signature: str) -> None:
    if not _matches(msg_signature(token, timestamp, nonce, encrypt), signature):
        raise CallbackRejected("msg_signature does not match", reason="bad_signature")


def _aes_key(encoding_aes_key: str, name: str) -> bytes:
    if not _ENCODING_AES_KEY.fullmatch(encoding_aes_key):
        raise ValueError(f"{name} must be 43 characters of [A-Za-z0-9]")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{name} is not valid base64") from exc
    if len(key) != 32:
        raise ValueError(f"{name} does not decode to 32 bytes")
    return key


def _aes_cbc(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def _decrypt_failed(detail: str) -> CallbackRejected:
    return CallbackRejected(f"cannot decrypt callback: {detail}", reason="decrypt_failed", status=400)


class _WrongAppid(Exception):
    """The key opened the message, but it names another appid."""


@dataclass(frozen=True, slots=True)
class DecryptedMessage:
    xml: bytes
    used_previous_key: bool


class CallbackCipher:
    """AES-256-CBC envelope of safe-mode callbacks, with the previous EncodingAESKey kept for rotation."""

    def __init__(
        self, appid: str, encoding_aes_key: str, previous_encoding_aes_key: str | None = None
    ) -> None:
        if not appid:
            raise ValueError("appid is required")
        self._appid = appid.encode("utf-8")
        self._key = _aes_key(encoding_aes_key, "encoding_aes_key")
        self._previous_key = (
            _aes_key(previous_encoding_aes_key, "previous_encoding_aes_key")
            if previous_encoding_aes_key
            else None
        )
        # Built once per key: a Cipher is reusable, each decryptor() is a fresh context.
        self._candidates = [(_aes_cbc(self._key), False)]
        if self._previous_key is not None:
            self._candidates.append((_aes_cbc(self._previous_key), True))

    def decrypt(self, encrypt_b64: str) -> DecryptedMessage:
        """Open the body's Encrypt value; the caller has already checked msg_signature."""
        try:
            ciphertext = binascii.a2b_base64(encrypt_b64, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise _decrypt_failed("Encrypt is not base64") from exc
        if not ciphertext or len(ciphertext) % _PAD_BLOCK:
            raise _decrypt_failed("ciphertext length is not a multiple of 32 bytes")

        wrong_appid = False
        for cipher, is_previous in self._candidates:
            try:
                xml = self._open(cipher, ciphertext)
            except _WrongAppid:
                # Keep trying: only a full match with the other key may override this verdict.
                wrong_appid = True
                continue
            except ValueError:
                continue
            return DecryptedMessage(xml=xml, used_previous_key=is_previous)
        if wrong_appid:
            raise CallbackRejected("callback was encrypted for another appid", reason="appid_mismatch")
        raise _decrypt_failed("no configured key opens it")

    def encrypt(
        self, message: str | bytes, *, nonce16: bytes | None = None, use_previous_key: bool = False
    ) -> str:
        """Encrypt a reply; use_previous_key answers a callback that only the previous key opened."""
        body = message.encode("utf-8") if isinstance(message, str) else message
        random_prefix = os.urandom(_RANDOM_PREFIX) if nonce16 is None else nonce16
        if len(random_prefix) != _RANDOM_PREFIX:
            raise ValueError("nonce16 must be exactly 16 bytes")
        key = self._select_key(use_previous_key)
        plaintext = random_prefix + struct.pack(">I", len(body)) + body + self._appid
        padder = padding.PKCS7(_PAD_BLOCK_BITS).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = _aes_cbc(key).encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")

    def reply_envelope(
        self, token: str, reply_xml: str, timestamp: str, nonce: str, *, use_previous_key: bool = False
    ) -> str:
        """The encrypted passive-reply body, signed over our own timestamp and nonce."""
        if not _TIMESTAMP.fullmatch(timestamp):
            raise ValueError("timestamp must be decimal digits")
        if not _NONCE.fullmatch(nonce):
            raise ValueError("nonce must be 1..64 characters of [A-Za-z0-9]")
        encrypted = self.encrypt(reply_xml, use_previous_key=use_previous_key)
        signature = msg_signature(token, timestamp, nonce, encrypted)
        return (
            f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )

    def _select_key(self, use_previous_key: bool) -> bytes:
        if not use_previous_key:
            return self._key
        if self._previous_key is None:
            raise ValueError("no previous_encoding_aes_key configured")
        return self._previous_key

    def _open(self, cipher: Cipher[modes.CBC], ciphertext: bytes) -> bytes:
        """Decrypt with one key: ValueError if the structure is wrong, _WrongAppid if the appid is."""
        decryptor = cipher.decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        pad = padded[-1]
        expected = _PAD_TAILS[pad]
        # Always one compare_digest of up to 32 bytes, no branch on the pad value before it.
        if not hmac.compare_digest(padded[-len(expected) :], expected):
            raise ValueError("bad padding")
        plaintext = padded[:-pad]

        header_end = _RANDOM_PREFIX + _LENGTH_FIELD
        if len(plaintext) < header_end:
            raise ValueError("plaintext shorter than its header")
        (length,) = struct.unpack(">I", plaintext[_RANDOM_PREFIX:header_end])
        message_end = header_end + length
        if message_end > len(plaintext):
            raise ValueError("declared length exceeds the plaintext")
        if plaintext[message_end:] != self._appid:
            raise _WrongAppid
        return plaintext[header_end:message_end]
