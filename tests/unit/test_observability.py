from __future__ import annotations

import io
import json
import logging

from aws_lambda_powertools import Logger

from wxreach.observability import MaskingFormatter, mask_openid, register_secret, scrub

OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"


def test_mask_openid_is_stable_and_hides_the_openid() -> None:
    masked = mask_openid(OPENID)
    assert masked == mask_openid(OPENID)
    assert OPENID not in masked
    assert masked != mask_openid("oWx1a2b3c4d5e6f7g8h9i0jKlMnP")


def test_scrub_masks_openids_inside_text_but_not_longer_tokens() -> None:
    text = f"user {OPENID} followed; id=x{OPENID}y stays"
    out = scrub(text)
    assert f"user {mask_openid(OPENID)} followed" in out
    assert f"x{OPENID}y" in out  # part of a longer token: not an openid


def test_registered_secrets_are_scrubbed() -> None:
    register_secret("SuperSecretAppSecret0001", None, "abc")
    assert scrub("secret=SuperSecretAppSecret0001!") == "secret=***!"
    assert scrub("abc") == "abc"  # too short to register: would mask ordinary words


def test_every_log_line_is_masked() -> None:
    stream = io.StringIO()
    logger = Logger(
        service="mask-test", logger_formatter=MaskingFormatter(), logger_handler=logging.StreamHandler(stream)
    )
    register_secret("AnotherSecretValue1234")
    logger.info("callback", openid=OPENID, token="AnotherSecretValue1234", nested={"who": OPENID})
    line = stream.getvalue()
    record = json.loads(line)
    assert OPENID not in line
    assert "AnotherSecretValue1234" not in line
    assert record["openid"] == mask_openid(OPENID)
    assert record["token"] == "***"
