from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxreach.errors import CallbackRejected
from wxreach.wechat.callback_xml import parse_callback_xml
from wxreach.wechat.crypto import (
    CallbackCipher,
    DecryptedMessage,
    msg_signature,
    plain_signature,
    verify_msg_signature,
    verify_plain_signature,
)

APPID = "wx5f1c3a2b4d6e8f90"
CURRENT_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PREVIOUS_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
UNRELATED_KEY = "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0xcv"
TOKEN = "AAAAA"
NONCE16 = bytes(range(16))


def raw_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def aes_cbc_decrypt(encoding_aes_key: str, ciphertext: bytes) -> bytes:
    """Decrypt without unpadding, to inspect what the cipher produced."""
    key = raw_key(encoding_aes_key)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def aes_cbc_encrypt_raw(encoding_aes_key: str, padded: bytes) -> str:
    """Encrypt bytes exactly as given (caller chooses the padding) and base64 them."""
    key = raw_key(encoding_aes_key)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def frame(message: bytes, appid: str = APPID) -> bytes:
    return NONCE16 + struct.pack(">I", len(message)) + message + appid.encode()


def assert_rejected(exc_info: pytest.ExceptionInfo[CallbackRejected], reason: str, status: int) -> None:
    assert exc_info.value.reason == reason
    assert exc_info.value.status == status


# --- signatures -------------------------------------------------------------------------------


def test_plain_signature_matches_the_published_vector() -> None:
    assert plain_signature("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_plain_signature_sorts_its_inputs_rather_than_using_argument_order() -> None:
    assert plain_signature("1514711492", "AAAAA", "1714036504") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_msg_signature_includes_the_encrypt_value() -> None:
    # Vector computed with coreutils: sort the four strings, join, sha1sum.
    assert (
        msg_signature("AAAAA", "1714036504", "1514711492", "ZW5jcnlwdGVkLWJvZHk=")
        == "55ff706c966619f86101657d261c31a42b4a3023"
    )


def test_verify_plain_signature_accepts_the_right_signature() -> None:
    verify_plain_signature("AAAAA", "1714036504", "1514711492", "f464b24fc39322e44b38aa78f5edd27bd1441696")


@pytest.mark.parametrize(
    "signature",
    [
        "f464b24fc39322e44b38aa78f5edd27bd1441697",  # last digit changed
        "",
        "F464B24FC39322E44B38AA78F5EDD27BD1441696",  # WeChat sends lowercase hex
        "签名",  # non-ASCII must be a rejection, not a TypeError
    ],
)
def test_verify_plain_signature_rejects_a_tampered_signature(signature: str) -> None:
    with pytest.raises(CallbackRejected) as exc_info:
        verify_plain_signature("AAAAA", "1714036504", "1514711492", signature)
    assert_rejected(exc_info, "bad_signature", 403)


def test_verify_plain_signature_rejects_a_changed_timestamp() -> None:
    with pytest.raises(CallbackRejected) as exc_info:
        verify_plain_signature(
            "AAAAA", "1714036505", "1514711492", "f464b24fc39322e44b38aa78f5edd27bd1441696"
        )
    assert_rejected(exc_info, "bad_signature", 403)


def test_verify_msg_signature_accepts_and_rejects() -> None:
    good = "55ff706c966619f86101657d261c31a42b4a3023"
    verify_msg_signature("AAAAA", "1714036504", "1514711492", "ZW5jcnlwdGVkLWJvZHk=", good)
    with pytest.raises(CallbackRejected) as exc_info:
        verify_msg_signature("AAAAA", "1714036504", "1514711492", "ZW5jcnlwdGVkLWJvZHk+", good)
    assert_rejected(exc_info, "bad_signature", 403)


# --- key validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    [
        CURRENT_KEY[:-1],  # 42 characters
        CURRENT_KEY + "H",  # 44 characters
        CURRENT_KEY[:-1] + "+",  # base64 but outside [A-Za-z0-9]
        CURRENT_KEY[:-1] + "=",
        "",
    ],
)
def test_cipher_refuses_a_malformed_encoding_aes_key(bad_key: str) -> None:
    with pytest.raises(ValueError, match="encoding_aes_key"):
        CallbackCipher(APPID, bad_key)


def test_cipher_refuses_a_malformed_previous_key() -> None:
    with pytest.raises(ValueError, match="previous_encoding_aes_key"):
        CallbackCipher(APPID, CURRENT_KEY, "short")


def test_cipher_refuses_an_empty_appid() -> None:
    with pytest.raises(ValueError, match="appid"):
        CallbackCipher("", CURRENT_KEY)


# --- encrypt / decrypt ------------------------------------------------------------------------


def test_encrypt_produces_the_wechat_frame_padded_to_32_bytes() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    message = "<xml><Content><![CDATA[你好]]></Content></xml>"

    ciphertext = base64.b64decode(cipher.encrypt(message, nonce16=NONCE16))

    framed = frame(message.encode())
    pad = 32 - len(framed) % 32
    assert len(ciphertext) % 32 == 0
    assert aes_cbc_decrypt(CURRENT_KEY, ciphertext) == framed + bytes([pad]) * pad


def test_length_field_counts_utf8_bytes_not_characters() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    message = "春季活动开始了"  # 7 characters, 21 bytes

    plaintext = aes_cbc_decrypt(CURRENT_KEY, base64.b64decode(cipher.encrypt(message)))

    assert struct.unpack(">I", plaintext[16:20]) == (21,)
    assert plaintext[20:41].decode() == message
    assert plaintext[41 : 41 + len(APPID)] == APPID.encode()


@pytest.mark.parametrize(
    "message",
    [
        "<xml><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[请问春季活动什么时候开始？]]></Content></xml>",
        "",
        "x" * 10,  # 48-byte frame: whole AES blocks, yet 16 bytes of 32-byte padding are due
        "a" * 5000,
    ],
)
def test_round_trip(message: str) -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)

    decrypted = cipher.decrypt(cipher.encrypt(message))

    assert decrypted == DecryptedMessage(xml=message.encode("utf-8"), used_previous_key=False)


def test_round_trip_of_bytes_input() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    body = "<xml><Content>中文</Content></xml>".encode()
    assert cipher.decrypt(cipher.encrypt(body)).xml == body


def test_a_frame_that_fills_whole_blocks_gets_a_full_block_of_padding() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    message = "x" * (64 - 20 - len(APPID))  # frame is exactly 64 bytes

    ciphertext = base64.b64decode(cipher.encrypt(message, nonce16=NONCE16))

    assert len(ciphertext) == 96
    assert aes_cbc_decrypt(CURRENT_KEY, ciphertext)[64:] == bytes([32]) * 32


def test_encrypt_uses_a_fresh_random_prefix_each_time() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    assert cipher.encrypt("<xml/>") != cipher.encrypt("<xml/>")


def test_encrypt_refuses_a_nonce_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CallbackCipher(APPID, CURRENT_KEY).encrypt("<xml/>", nonce16=b"short")


def test_decrypt_reads_a_message_framed_outside_the_cipher() -> None:
    # A frame built by hand, as WeChat would send it, with 32-byte PKCS#7 padding.
    framed = frame(b"<xml><Event>subscribe</Event></xml>")
    pad = 32 - len(framed) % 32
    encrypted = aes_cbc_encrypt_raw(CURRENT_KEY, framed + bytes([pad]) * pad)

    decrypted = CallbackCipher(APPID, CURRENT_KEY).decrypt(encrypted)

    assert decrypted.xml == b"<xml><Event>subscribe</Event></xml>"
    assert decrypted.used_previous_key is False


# --- rejections -------------------------------------------------------------------------------


def test_wrong_appid_is_reported_as_appid_mismatch() -> None:
    sender = CallbackCipher("wx0000000000000000", CURRENT_KEY)
    receiver = CallbackCipher(APPID, CURRENT_KEY)

    with pytest.raises(CallbackRejected) as exc_info:
        receiver.decrypt(sender.encrypt("<xml/>"))
    assert_rejected(exc_info, "appid_mismatch", 403)


def test_wrong_appid_is_not_masked_by_the_previous_key() -> None:
    sender = CallbackCipher("wx0000000000000000", CURRENT_KEY)
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)

    with pytest.raises(CallbackRejected) as exc_info:
        receiver.decrypt(sender.encrypt("<xml/>"))
    assert_rejected(exc_info, "appid_mismatch", 403)


def test_appid_that_is_a_prefix_of_ours_is_a_mismatch() -> None:
    sender = CallbackCipher(APPID[:-1], CURRENT_KEY)
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(sender.encrypt("<xml/>"))
    assert_rejected(exc_info, "appid_mismatch", 403)


def test_wrong_key_fails_to_decrypt() -> None:
    sender = CallbackCipher(APPID, UNRELATED_KEY)
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(sender.encrypt("<xml><Content>hi</Content></xml>"))
    assert_rejected(exc_info, "decrypt_failed", 400)


@pytest.mark.parametrize(
    "padding_tail",
    [
        bytes([0]),  # pad value 0 is not PKCS#7
        bytes([33]),  # longer than the 32-byte block
        bytes([7, 7, 7, 4]),  # last byte says 4 but the bytes before it disagree
    ],
)
def test_bad_padding_fails_to_decrypt(padding_tail: bytes) -> None:
    framed = frame(b"<xml/>")
    body = framed + b"\x00" * ((-len(framed) - len(padding_tail)) % 32) + padding_tail
    assert len(body) % 32 == 0

    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(aes_cbc_encrypt_raw(CURRENT_KEY, body))
    assert_rejected(exc_info, "decrypt_failed", 400)


@pytest.mark.parametrize("pad", [1, 2, 16, 31, 32])
def test_every_pad_length_opens(pad: int) -> None:
    message = b"m" * ((-len(frame(b"")) - pad) % 32)
    framed = frame(message)
    assert (len(framed) + pad) % 32 == 0
    encrypted = aes_cbc_encrypt_raw(CURRENT_KEY, framed + bytes([pad]) * pad)

    assert CallbackCipher(APPID, CURRENT_KEY).decrypt(encrypted).xml == message


@pytest.mark.parametrize("last", [0, 33, 64, 255])
def test_a_pad_value_outside_1_to_32_fails_whatever_precedes_it(last: int) -> None:
    # Bytes before it equal to it, or to its neighbour: neither may pass for padding.
    for filler in (last, last ^ 1):
        framed = frame(b"<xml/>")
        body = framed + bytes([filler]) * ((-len(framed)) % 32 + 31) + bytes([last])
        with pytest.raises(CallbackRejected) as exc_info:
            CallbackCipher(APPID, CURRENT_KEY).decrypt(aes_cbc_encrypt_raw(CURRENT_KEY, body))
        assert_rejected(exc_info, "decrypt_failed", 400)


def test_a_full_block_of_padding_with_one_wrong_byte_fails() -> None:
    framed = frame(b"x" * (64 - 20 - len(APPID)))
    assert len(framed) == 64
    padding = bytearray([32]) * 32
    padding[0] = 31
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(aes_cbc_encrypt_raw(CURRENT_KEY, framed + padding))
    assert_rejected(exc_info, "decrypt_failed", 400)


def test_one_cipher_decrypts_again_after_failures_and_encryptions() -> None:
    # The cached Cipher objects hand out a fresh context per call: no state carries over.
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)
    old_sender = CallbackCipher(APPID, PREVIOUS_KEY)
    good = receiver.encrypt("<xml><A>1</A></xml>")
    for _ in range(3):
        with pytest.raises(CallbackRejected):
            receiver.decrypt(good[:-4])
        with pytest.raises(CallbackRejected):
            receiver.decrypt(CallbackCipher(APPID, UNRELATED_KEY).encrypt("<xml/>"))
        receiver.encrypt("<xml/>", use_previous_key=True)
        assert receiver.decrypt(good) == DecryptedMessage(xml=b"<xml><A>1</A></xml>", used_previous_key=False)
        assert receiver.decrypt(old_sender.encrypt("<xml/>")).used_previous_key is True


def test_declared_length_beyond_the_plaintext_fails_to_decrypt() -> None:
    framed = NONCE16 + struct.pack(">I", 10_000) + b"<xml/>" + APPID.encode()
    pad = 32 - len(framed) % 32
    encrypted = aes_cbc_encrypt_raw(CURRENT_KEY, framed + bytes([pad]) * pad)

    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(encrypted)
    assert_rejected(exc_info, "decrypt_failed", 400)


def test_ciphertext_of_16_not_32_byte_blocks_fails_to_decrypt() -> None:
    # 48 bytes: valid for AES and for 16-byte PKCS#7, not for WeChat's 32-byte padding.
    encrypted = aes_cbc_encrypt_raw(CURRENT_KEY, b"\x10" * 48)
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(encrypted)
    assert_rejected(exc_info, "decrypt_failed", 400)


@pytest.mark.parametrize("cut", [1, 4, 24])
def test_truncated_base64_fails_to_decrypt(cut: int) -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    encrypted = cipher.encrypt("<xml><Content>hello</Content></xml>")

    with pytest.raises(CallbackRejected) as exc_info:
        cipher.decrypt(encrypted[:-cut])
    assert_rejected(exc_info, "decrypt_failed", 400)


@pytest.mark.parametrize(
    "encrypt",
    ["not base64 at all!", "密文", "", "====", "QUJD\nREVG", "QUJD REVG", "=QUJD", "QQ==QUJD", "QUJD==="],
)
def test_non_base64_fails_to_decrypt(encrypt: str) -> None:
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(encrypt)
    assert_rejected(exc_info, "decrypt_failed", 400)


@pytest.mark.parametrize("junk", ["\n", " ", "!", "-", "_"])
def test_junk_inside_otherwise_valid_base64_fails_to_decrypt(junk: str) -> None:
    # A lenient decoder would skip it and open the message; WeChat never sends it.
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    encrypted = cipher.encrypt("<xml><Content>hello</Content></xml>")

    for tampered in (
        encrypted[:12] + junk + encrypted[12:],
        encrypted + junk,
        encrypted[:12] + "=" + encrypted[12:],
    ):
        with pytest.raises(CallbackRejected) as exc_info:
            cipher.decrypt(tampered)
        assert_rejected(exc_info, "decrypt_failed", 400)


# --- key rotation -----------------------------------------------------------------------------


def test_message_under_the_previous_key_decrypts_and_says_so() -> None:
    old_sender = CallbackCipher(APPID, PREVIOUS_KEY)
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)

    decrypted = receiver.decrypt(old_sender.encrypt("<xml><Content>旧密钥</Content></xml>"))

    assert decrypted == DecryptedMessage(
        xml="<xml><Content>旧密钥</Content></xml>".encode(), used_previous_key=True
    )


def test_message_under_the_current_key_reports_the_current_key() -> None:
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)
    assert receiver.decrypt(receiver.encrypt("<xml/>")).used_previous_key is False


def test_encrypt_uses_the_current_key_by_default() -> None:
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)
    only_current = CallbackCipher(APPID, CURRENT_KEY)
    assert only_current.decrypt(receiver.encrypt("<xml/>")).xml == b"<xml/>"


def test_a_third_unrelated_key_fails() -> None:
    stranger = CallbackCipher(APPID, UNRELATED_KEY)
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)

    with pytest.raises(CallbackRejected) as exc_info:
        receiver.decrypt(stranger.encrypt("<xml/>"))
    assert_rejected(exc_info, "decrypt_failed", 400)


def test_previous_key_is_not_used_when_not_configured() -> None:
    old_sender = CallbackCipher(APPID, PREVIOUS_KEY)
    with pytest.raises(CallbackRejected) as exc_info:
        CallbackCipher(APPID, CURRENT_KEY).decrypt(old_sender.encrypt("<xml/>"))
    assert_rejected(exc_info, "decrypt_failed", 400)


# --- reply envelope ---------------------------------------------------------------------------


def test_reply_envelope_is_signed_and_decryptable() -> None:
    cipher = CallbackCipher(APPID, CURRENT_KEY)
    reply = "<xml><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[收到]]></Content></xml>"

    envelope = cipher.reply_envelope(TOKEN, reply, "1714036600", "987654321")

    fields = parse_callback_xml(envelope)
    assert set(fields) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert fields["TimeStamp"] == "1714036600"
    assert fields["Nonce"] == "987654321"
    assert fields["MsgSignature"] == msg_signature(TOKEN, "1714036600", "987654321", fields["Encrypt"])
    assert cipher.decrypt(fields["Encrypt"]).xml == reply.encode()
    assert envelope.startswith("<xml><Encrypt><![CDATA[")
    assert "<TimeStamp>1714036600</TimeStamp><Nonce><![CDATA[987654321]]></Nonce></xml>" in envelope


def test_reply_envelope_can_answer_with_the_previous_key() -> None:
    receiver = CallbackCipher(APPID, CURRENT_KEY, PREVIOUS_KEY)
    old_wechat_side = CallbackCipher(APPID, PREVIOUS_KEY)

    envelope = receiver.reply_envelope(TOKEN, "<xml/>", "1714036600", "42", use_previous_key=True)

    assert old_wechat_side.decrypt(parse_callback_xml(envelope)["Encrypt"]).xml == b"<xml/>"


def test_previous_key_reply_needs_a_previous_key() -> None:
    with pytest.raises(ValueError, match="previous"):
        CallbackCipher(APPID, CURRENT_KEY).encrypt("<xml/>", use_previous_key=True)


@pytest.mark.parametrize(
    ("timestamp", "nonce"),
    [("1714036600</TimeStamp><x>", "42"), ("", "42"), ("1714036600", "]]><evil/>"), ("1714036600", "")],
)
def test_reply_envelope_refuses_values_that_would_break_the_xml(timestamp: str, nonce: str) -> None:
    with pytest.raises(ValueError):
        CallbackCipher(APPID, CURRENT_KEY).reply_envelope(TOKEN, "<xml/>", timestamp, nonce)
