from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as defused_et
import pytest
from defusedxml import DefusedXmlException

from tests.support import fixtures
from tests.support.fixtures import WECHAT_EVENTS_DIR, api_event, callback_xml
from wxreach.errors import MalformedCallback
from wxreach.wechat import callback_xml as callback_xml_module
from wxreach.wechat.callback_xml import MAX_CALLBACK_BYTES, parse_callback_xml

OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"
FIXTURE_NAMES = sorted(path.stem for path in WECHAT_EVENTS_DIR.glob("*.xml"))


def refusal(body: bytes | str, **kwargs: int) -> MalformedCallback:
    with pytest.raises(MalformedCallback) as exc_info:
        parse_callback_xml(body, **kwargs)
    assert exc_info.value.status == 400
    return exc_info.value


def test_every_expected_fixture_exists() -> None:
    assert set(FIXTURE_NAMES) >= {
        "subscribe",
        "subscribe_qrscene",
        "unsubscribe",
        "scan",
        "subscribe_msg_popup_event",
        "subscribe_msg_popup_single",
        "subscribe_msg_change_event",
        "subscribe_msg_sent_event",
        "template_send_job_finish",
        "template_send_job_finish_failed",
        "mass_send_job_finish",
        "mass_send_job_finish_review_failed",
        "publish_job_finish",
        "freepublish_job_finish",
        "text_message",
        "image_message",
        "unknown_event",
    }


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_parses_with_the_common_fields(name: str) -> None:
    fields = parse_callback_xml(callback_xml(name))

    assert fields["FromUserName"] == OPENID
    assert fields["ToUserName"] in {"gh_3f1a2b3c4d5e", ""}
    assert fields["CreateTime"].isdigit()
    assert fields["MsgType"] in {"event", "text", "image"}


def test_leaves_become_text_with_cdata_unwrapped() -> None:
    fields = parse_callback_xml(callback_xml("subscribe_qrscene"))

    assert fields == {
        "ToUserName": "gh_3f1a2b3c4d5e",
        "FromUserName": OPENID,
        "CreateTime": "1714036612",
        "MsgType": "event",
        "Event": "subscribe",
        "EventKey": "qrscene_spring_campaign_42",
        "Ticket": (
            "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw=="
        ),
    }


def test_empty_cdata_and_empty_elements_are_empty_strings() -> None:
    fields = parse_callback_xml(b"<xml><EventKey><![CDATA[]]></EventKey><Ticket/><Note></Note></xml>")
    assert fields == {"EventKey": "", "Ticket": "", "Note": ""}


def test_chinese_text_survives() -> None:
    fields = parse_callback_xml(callback_xml("text_message"))
    assert fields["Content"] == "请问春季活动什么时候开始？"
    assert fields["MsgId"] == "7352043817265098241"


def test_str_and_bytes_bodies_parse_the_same() -> None:
    body = callback_xml("text_message")
    assert parse_callback_xml(body) == parse_callback_xml(body.encode("utf-8"))


def test_repeated_list_elements_become_a_list_of_dicts() -> None:
    fields = parse_callback_xml(callback_xml("subscribe_msg_popup_event"))

    assert fields["SubscribeMsgPopupEvent"] == {
        "List": [
            {
                "TemplateId": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                "SubscribeStatusString": "accept",
                "PopupScene": "2",
            },
            {
                "TemplateId": "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI",
                "SubscribeStatusString": "reject",
                "PopupScene": "2",
            },
        ]
    }


def test_a_single_list_element_is_still_a_list() -> None:
    fields = parse_callback_xml(callback_xml("subscribe_msg_popup_single"))

    items = fields["SubscribeMsgPopupEvent"]["List"]
    assert isinstance(items, list)
    assert items == [
        {
            "TemplateId": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
            "SubscribeStatusString": "accept",
            "PopupScene": "1",
        }
    ]


def test_a_single_item_element_is_still_a_list() -> None:
    fields = parse_callback_xml(callback_xml("publish_job_finish"))

    detail = fields["PublishEventInfo"]["article_detail"]
    assert detail == {
        "count": "1",
        "item": [{"idx": "1", "article_url": "https://mp.weixin.qq.com/s/b5O2OUs25HBxRceL7hfReg"}],
    }


def test_nested_result_lists_of_mass_send() -> None:
    fields = parse_callback_xml(callback_xml("mass_send_job_finish"))

    urls = fields["ArticleUrlResult"]["ResultList"]["item"]
    assert [item["ArticleIdx"] for item in urls] == ["1", "2"]
    assert urls[0]["ArticleUrl"].startswith(
        "https://mp.weixin.qq.com/s?__biz=MzA3NjQ1MjE2Mg==&mid=2247483651&idx=1"
    )
    assert fields["CopyrightCheckResult"]["CheckState"] == "2"
    assert len(fields["CopyrightCheckResult"]["ResultList"]["item"]) == 2


def test_an_empty_result_list_stays_a_leaf() -> None:
    fields = parse_callback_xml(callback_xml("mass_send_job_finish_review_failed"))
    assert fields["ArticleUrlResult"]["ResultList"].strip() == ""


def test_other_repeated_siblings_become_lists_and_single_ones_do_not() -> None:
    fields = parse_callback_xml(callback_xml("freepublish_job_finish"))
    assert fields["PublishEventInfo"] == {
        "publish_id": "2247503052",
        "publish_status": "2",
        "fail_idx": ["1", "2"],
    }


def test_attributes_comments_and_processing_instructions_are_ignored() -> None:
    body = b'<?xml version="1.0" encoding="UTF-8"?><xml><!-- note --><A kind="x">1</A><?pi data?></xml>'
    assert parse_callback_xml(body) == {"A": "1"}


# --- refusals ---------------------------------------------------------------------------------


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><Content>&lol9;</Content></xml>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><FromUserName>&xxe;</FromUserName></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(
            b'<!DOCTYPE xml SYSTEM "http://attacker.example/evil.dtd"><xml><A>1</A></xml>', id="external-dtd"
        ),
        pytest.param(b"<!DOCTYPE xml><xml><A>1</A></xml>", id="bare-doctype"),
        pytest.param(
            b'<!DOCTYPE xml [<!ENTITY name "value">]><xml><A>&name;</A></xml>', id="internal-entity"
        ),
    ],
)
def test_dtds_and_entities_are_forbidden(body: bytes) -> None:
    error = refusal(body)
    assert error.reason == "forbidden_xml"


def test_external_entity_content_never_appears() -> None:
    error = refusal(EXTERNAL_ENTITY)
    assert "root:" not in error.message


def test_oversize_body_is_refused_before_parsing() -> None:
    # Garbage past the limit: the size check must win over the parser's complaint.
    error = refusal(b"<" * (MAX_CALLBACK_BYTES + 1))
    assert error.reason == "oversize"


def test_body_at_the_limit_is_accepted() -> None:
    head = b"<xml><A>1</A></xml>"
    body = head + b" " * (MAX_CALLBACK_BYTES - len(head))
    assert len(body) == MAX_CALLBACK_BYTES
    assert parse_callback_xml(body) == {"A": "1"}


def test_max_bytes_can_be_lowered() -> None:
    body = callback_xml("subscribe")
    assert refusal(body, max_bytes=100).reason == "oversize"


def test_size_limit_counts_utf8_bytes_of_a_str_body() -> None:
    body = "<xml><Content>" + "中" * 30 + "</Content></xml>"  # 45 characters, 105 bytes
    assert refusal(body, max_bytes=100).reason == "oversize"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n\t ", id="whitespace"),
        pytest.param("", id="empty-str"),
        pytest.param(b"success", id="plain-text"),
        pytest.param(b"\x00\xff\xfe garbage", id="binary"),
        pytest.param(b'{"ToUserName": "gh_3f1a2b3c4d5e"}', id="json"),
        pytest.param(b"<xml><A>1</xml>", id="unclosed"),
        pytest.param(b"<xml><A>1</A></xml><xml/>", id="two-roots"),
        pytest.param(b"<root><A>1</A></root>", id="wrong-root"),
        pytest.param(b"<XML><A>1</A></XML>", id="root-case"),
        pytest.param(b'<xml xmlns="urn:x"><A>1</A></xml>', id="namespaced-root"),
    ],
)
def test_unusable_bodies_are_malformed(body: bytes | str) -> None:
    assert refusal(body).reason == "malformed_xml"


def test_absurd_nesting_is_malformed_not_a_recursion_error() -> None:
    depth = 5000
    body = b"<xml>" + b"<a>" * depth + b"x" + b"</a>" * depth + b"</xml>"
    assert refusal(body).reason == "malformed_xml"


# --- fast paths: the same answer as the defusedxml parse, refusals included ------------------


def reference_parse(body: bytes) -> dict[str, Any] | str:
    """What parse_callback_xml returned before its fast paths: defusedxml for everything."""
    if not body.strip():
        return "malformed_xml"
    try:
        root = defused_et.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        return "forbidden_xml"
    except ParseError:
        return "malformed_xml"
    if root.tag != "xml":
        return "malformed_xml"

    def children(element: ET.Element) -> dict[str, Any]:
        grouped: dict[str, list[Any]] = {}
        for child in element:
            grouped.setdefault(child.tag, []).append(children(child) if len(child) else child.text or "")
        return {
            tag: values if len(values) > 1 or tag in {"List", "item"} else values[0]
            for tag, values in grouped.items()
        }

    return children(root)


def outcome(body: bytes) -> dict[str, Any] | str:
    try:
        return parse_callback_xml(body)
    except MalformedCallback as exc:
        return exc.reason


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which parser each parse_callback_xml call ended in: "c" (stdlib, DTD-free) or "defused"."""
    taken: list[str] = []
    c_parse, defused_parse = callback_xml_module._c_fromstring, callback_xml_module.safe_et.fromstring

    def via_c(text: str) -> ET.Element:
        taken.append("c")
        return c_parse(text)

    def via_defused(raw: bytes, **kwargs: bool) -> ET.Element:
        taken.append("defused")
        return defused_parse(raw, **kwargs)

    monkeypatch.setattr(callback_xml_module, "_c_fromstring", via_c)
    monkeypatch.setattr(callback_xml_module.safe_et, "fromstring", via_defused)
    return taken


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_parses_as_the_defused_parser_does(name: str) -> None:
    body = callback_xml(name).encode("utf-8")
    assert parse_callback_xml(body) == reference_parse(body)


def test_dtd_free_documents_use_the_c_parser(paths: list[str]) -> None:
    parse_callback_xml(callback_xml("subscribe"))
    parse_callback_xml(callback_xml("subscribe_msg_popup_event"))
    assert paths == ["c", "c"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<xml></xml>", id="empty-root"),  # the root itself must not read as a leaf
        pytest.param(b" <xml>\n</xml>\r\n", id="blank-root"),
        pytest.param(b"<xml><A><![CDATA[a\r\nb\rc]]></A></xml>", id="cr-normalised"),
        pytest.param(b"<xml><A>a &amp; b</A><B><![CDATA[x & <y>]]></B></xml>", id="ampersands"),
        pytest.param(b"<xml><A>x]y</A><B><![CDATA[a]b]]></B></xml>", id="brackets"),
        pytest.param(b"<xml><A>x<![CDATA[y]]></A></xml>", id="mixed-text-and-cdata"),
        pytest.param(b"<xml><A>1</A><A>2</A><List>x</List><item/></xml>", id="repeats-and-lists"),
        pytest.param(b'<xml><A k="v">1</A></xml>', id="attribute"),
        pytest.param(b"<xml><A>\xe4\xb8\xad\xc2\x85\xef\xb7\x90</A></xml>", id="non-ascii"),
        pytest.param(b"<xml><A>\x01</A></xml>", id="control-char"),
        pytest.param(b"<xml><A>a\x0bb</A><B>\x0c</B></xml>", id="form-feed-and-vertical-tab"),
        pytest.param(b"<xml><A>\xef\xbf\xbe</A></xml>", id="u+fffe"),
        pytest.param(b"<xml><A>]]></A></xml>", id="cdata-end-in-text"),
        pytest.param(b"<xml><a:b>1</a:b></xml>", id="unbound-prefix"),
        pytest.param(b"<xml><A>1</B></xml>", id="mismatched-tag"),
        pytest.param(b"<xml>\x0b<A>1</A></xml>", id="vertical-tab"),
        pytest.param(b"\xef\xbb\xbf<xml><A>1</A></xml>", id="utf8-bom"),
        pytest.param(
            b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[a&b]]></Encrypt></xml>"
        ),
        pytest.param(
            b"<xml><Encrypt><![CDATA[QUJD]]></Encrypt><ToUserName><![CDATA[gh_1]]></ToUserName></xml>"
        ),
        pytest.param(b"<xml><ToUserName>gh_1</ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt></xml>"),
    ],
)
def test_edge_cases_parse_as_the_defused_parser_does(body: bytes) -> None:
    assert outcome(body) == reference_parse(body)


def test_generated_documents_parse_as_the_defused_parser_does() -> None:
    rng = random.Random(20261127)
    pieces = ["a", "0", " ", "\n", "\r\n", "\t", "中", "\x85", ">", "]", "]]>", "&amp;", "&x;", "<", "\x01"]
    names = ["A", "B", "List", "item", "xml", "a-b", "a:b"]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))

    def element(depth: int) -> str:
        name, roll = rng.choice(names), rng.random()
        if roll < 0.45:
            inner = f"<![CDATA[{text()}]]>"
        elif roll < 0.8:
            inner = text()
        elif roll < 0.9 and depth < 3:
            inner = "".join(rng.choice(["", "\n  "]) + element(depth + 1) for _ in range(rng.randint(1, 3)))
        else:
            return f"<{name}/>"
        return f"<{name}>{inner}</{rng.choice([name] * 19 + names)}>"

    for _ in range(3000):
        elements = "".join(rng.choice(["", " ", "\n"]) + element(1) for _ in range(rng.randint(0, 4)))
        body = f"{rng.choice(['', ' ', chr(10)])}<xml>{elements}</xml>".encode()
        assert outcome(body) == reference_parse(body), body


def test_entity_reference_without_a_dtd_is_malformed_on_the_dtd_free_parser(paths: list[str]) -> None:
    # No DTD, so nothing declares xxe: expat refuses it instead of resolving anything.
    for body in (b"<xml><A>&xxe;</A></xml>", b"<xml><A><B>&xxe;</B></A></xml>"):
        assert refusal(body).reason == "malformed_xml"
    assert paths == ["c", "c"]


def test_predefined_and_character_references_still_resolve() -> None:
    assert parse_callback_xml(b"<xml><A><B>&amp;&lt;&#20013;&#x4e2d;</B></A></xml>") == {"A": {"B": "&<中中"}}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_bodies_go_through_the_defused_parser(encoding: str, paths: list[str]) -> None:
    # BOM-less UTF-16 is valid UTF-8 (NUL bytes) and hides "<!DOCTYPE" from a text search, yet
    # expat sniffs it as UTF-16: it must never reach the DTD-free parser.
    for body, expected in (
        ('<!DOCTYPE xml [<!ENTITY e "boom">]><xml><A>&e;</A></xml>', "forbidden_xml"),
        ("<xml><A><B>1</B></A></xml>", {"A": {"B": "1"}}),
    ):
        assert outcome(body.encode(encoding)) == expected
    assert paths == ["defused", "defused"]


def test_non_utf8_bodies_go_through_the_defused_parser(paths: list[str]) -> None:
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><A><B>caf\xe9</B></A></xml>'.encode("latin-1")
    assert parse_callback_xml(latin1) == {"A": {"B": "café"}}
    dtd = b'<?xml version="1.0" encoding="ISO-8859-1"?><!DOCTYPE xml [<!ENTITY e "\xe9">]><xml>&e;</xml>'
    assert refusal(dtd).reason == "forbidden_xml"
    assert paths == ["defused", "defused"]


def test_an_xml_declaration_keeps_its_declared_encoding(paths: list[str]) -> None:
    # UTF-8 bytes declared as Latin-1 read as Latin-1, as before the fast path existed.
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><A><B>é</B></A></xml>'.encode()
    assert parse_callback_xml(body) == {"A": {"B": "Ã©"}}
    assert paths == ["defused"]


def test_a_doctype_inside_cdata_is_only_text() -> None:
    body = "<xml><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[<!DOCTYPE html>]]></Content></xml>"
    assert parse_callback_xml(body)["Content"] == "<!DOCTYPE html>"


def test_oversize_is_checked_before_any_fast_path() -> None:
    envelope = b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt></xml>"
    assert refusal(envelope, max_bytes=len(envelope) - 1).reason == "oversize"
    assert refusal(b"<xml><A>1</A></xml>", max_bytes=10).reason == "oversize"


# --- the fixture helper -----------------------------------------------------------------------


def test_callback_xml_replaces_top_level_fields_keeping_cdata() -> None:
    body = callback_xml("subscribe", FromUserName="oOther000000000000000000000A", CreateTime="1714999999")

    assert "<FromUserName><![CDATA[oOther000000000000000000000A]]></FromUserName>" in body
    assert "<CreateTime>1714999999</CreateTime>" in body
    assert parse_callback_xml(body)["FromUserName"] == "oOther000000000000000000000A"


def test_callback_xml_escapes_bare_values() -> None:
    body = callback_xml("template_send_job_finish", MsgID="1<2&3")
    assert parse_callback_xml(body)["MsgID"] == "1<2&3"


def test_callback_xml_without_overrides_is_the_file() -> None:
    assert callback_xml("scan") == (WECHAT_EVENTS_DIR / "scan.xml").read_text(encoding="utf-8")


def test_callback_xml_refuses_fields_it_cannot_replace() -> None:
    with pytest.raises(KeyError, match="NoSuchField"):
        callback_xml("subscribe", NoSuchField="x")
    with pytest.raises(KeyError, match="MsgID"):
        callback_xml("subscribe_msg_sent_event", MsgID="1")  # only nested, not top-level
    with pytest.raises(ValueError, match="child elements"):
        callback_xml("subscribe_msg_popup_event", SubscribeMsgPopupEvent="x")


def test_api_event_applies_shallow_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {
        "resource": "/wechat/{appid}",
        "httpMethod": "POST",
        "path": "/wechat/wx1",
        "headers": {"Content-Type": "text/xml", "Host": "example"},
        "multiValueHeaders": {"Content-Type": ["text/xml"], "Host": ["example"]},
        "queryStringParameters": {"signature": "old"},
        "multiValueQueryStringParameters": {"signature": ["old"]},
        "pathParameters": {"appid": "wx1"},
        "body": None,
    }
    (tmp_path / "sample.json").write_text(json.dumps(source), encoding="utf-8")
    monkeypatch.setattr(fixtures, "API_EVENTS_DIR", tmp_path)

    event = api_event(
        "sample",
        path_parameters={"appid": "wx2"},
        query={"timestamp": "1714036504"},
        body={"name": "春季"},
        headers={"content-type": "application/json"},
        httpMethod="PUT",
    )

    assert event["pathParameters"] == {"appid": "wx2"}
    assert event["path"] == "/wechat/wx2"
    assert event["queryStringParameters"] == {"timestamp": "1714036504"}
    assert event["multiValueQueryStringParameters"] == {"timestamp": ["1714036504"]}
    assert event["body"] == '{"name": "春季"}'
    assert event["headers"] == {"Host": "example", "content-type": "application/json"}
    assert event["multiValueHeaders"] == {"Host": ["example"], "content-type": ["application/json"]}
    assert event["httpMethod"] == "PUT"
    with pytest.raises(KeyError, match="htpMethod"):
        api_event("sample", htpMethod="PUT")


@pytest.mark.parametrize(
    "encoding", ["gbk", "gb2312", "big5", "shift_jis", "utf-7", "utf-32", "no-such-codec"]
)
def test_declared_encoding_expat_cannot_read_is_malformed(encoding: str) -> None:
    with pytest.raises(MalformedCallback) as exc_info:
        parse_callback_xml(f'<?xml version="1.0" encoding="{encoding}"?><xml><A>1</A></xml>'.encode())
    assert exc_info.value.reason == "malformed_xml"
    assert exc_info.value.status == 400
