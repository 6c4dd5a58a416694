"""WeChat's side of the callback protocol (§5.2, §5.4): signing and safe-mode encryption.

Written independently of the engine's own crypto so that a shared mistake cannot hide itself.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_BLOCK = 32  # WeChat pads to 32 bytes although AES blocks are 16


def sha1_signature(*parts: str) -> str:
    """sha1 hex of the parts sorted lexicographically and joined with no separator."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324 - protocol


def aes_key(encoding_aes_key: str) -> bytes:
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


def _pkcs7_pad(data: bytes) -> bytes:
    pad = _BLOCK - len(data) % _BLOCK  # 1..32, a full block when already aligned
    return data + bytes([pad]) * pad


def encrypt_message(xml: str, *, encoding_aes_key: str, appid: str, random16: bytes) -> str:
    """base64(AES-256-CBC(random16 || len(xml) big-endian u32 || xml || appid)), IV = key[:16]."""
    if len(random16) != 16:
        raise ValueError("random prefix must be 16 bytes")
    key = aes_key(encoding_aes_key)
    body = xml.encode("utf-8")
    plaintext = random16 + struct.pack(">I", len(body)) + body + appid.encode("utf-8")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    ciphertext = encryptor.update(_pkcs7_pad(plaintext)) + encryptor.finalize()
    return base64.b64encode(ciphertext).decode("ascii")
