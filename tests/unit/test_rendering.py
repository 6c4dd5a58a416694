from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from wxreach.reach.rendering import (
    JumpTarget,
    MessageContent,
    MiniProgram,
    Rendering,
    content_digest,
    jump_target,
    render,
    wechat_payload,
)
from wxreach.reach.templates import template_from_wechat
from wxreach.wechat.keywords import Channel

APPID = "wx1234567890abcdef"
MINI_APPID = "wxabcdef1234567890"
OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"
TEMPLATE_ID = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
SUB_TEMPLATE_ID = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"
URL = "https://shop.example.com/orders/1"
PAGE = "https://shop.example.com/appointments/7"

ORDER_PAID = template_from_wechat(
    APPID,
    Channel.TEMPLATE,
    {
        "template_id": TEMPLATE_ID,
        "title": "订单支付成功通知",
        "content": "商品：{{thing1.DATA}}\n金额：{{amount2.DATA}}\n订单号：{{character_string3.DATA}}",
    },
)
APPOINTMENT = template_from_wechat(
    APPID,
    Channel.SUBSCRIBE,
    {
        "priTmplId": SUB_TEMPLATE_ID,
        "title": "预约结果通知",
        "content": "项目:{{thing1.DATA}}\n时间:{{time2.DATA}}\n状态:{{enum3.DATA}}",
        "type": 2,
    },
).with_enums({"enum3": ["已确认", "已取消"]})

ORDER_VALUES: dict[str, str | int | float] = {
    "thing1": "{{product}}",
    "amount2": "¥{{order.total}}",
    "character_string3": "{{order.no}}",
}
ORDER_PARAMS: dict[str, Any] = {"product": "iPhone 15", "order": {"total": 5999, "no": "A20240501"}}


def order_content(**fields: Any) -> MessageContent:
    return MessageContent(template_id=TEMPLATE_ID, data=fields.pop("data", ORDER_VALUES), **fields)


def appointment_content(**fields: Any) -> MessageContent:
    data = fields.pop("data", {"thing1": "{{item}}", "time2": "5月1日 10:00", "enum3": "已确认"})
    return MessageContent(template_id=SUB_TEMPLATE_ID, data=data, **fields)


# -- customer parameters ------------------------------------------------------------------------


def test_parameters_fill_values_nested_and_numbers_as_json_text() -> None:
    rendering = render(order_content(), ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS)
    assert rendering.data == {"thing1": "iPhone 15", "amount2": "¥5999", "character_string3": "A20240501"}
    assert rendering.ok
    assert rendering.violations == [] and rendering.missing_params == [] and rendering.warnings == []


@pytest.mark.parametrize(
    ("value", "text"),
    [(12.5, "12.5"), (0, "0"), (-3, "-3"), (1e20, "1e+20"), (True, "true"), ("007", "007"), ("", "")],
)
def test_a_parameter_renders_as_its_json_text(value: Any, text: str) -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "<{{x}}>"})
    assert render(content, ORDER_PAID, Channel.TEMPLATE, {"x": value}).data["thing1"] == f"<{text}>"


def test_numeric_content_values_render_as_json_text() -> None:
    content = order_content(data={"thing1": "手机", "amount2": "¥12.50", "character_string3": 20240501})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {})
    assert rendering.data["character_string3"] == "20240501"
    assert rendering.ok


def test_placeholders_tolerate_inner_spaces_and_mix_with_text() -> None:
    content = order_content(data={**ORDER_VALUES, "thing1": "{{ product }} ×{{order.count}}"})
    params = {**ORDER_PARAMS, "order": {**ORDER_PARAMS["order"], "count": 2}}
    assert render(content, ORDER_PAID, Channel.TEMPLATE, params).data["thing1"] == "iPhone 15 ×2"


def test_missing_parameters_are_listed_not_raised() -> None:
    content = order_content(data={**ORDER_VALUES, "thing1": "{{product}} {{gift.name}} {{product}}"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {"order": {"total": 1}})
    assert rendering.missing_params == ["product", "gift.name", "order.no"]
    assert not rendering.ok
    # A half-filled value is not checked as well: the missing parameter is the one reason.
    assert rendering.violations == []
    assert rendering.data["amount2"] == "¥1"


@pytest.mark.parametrize(
    "params",
    [{}, {"order": None}, {"order": "A1"}, {"order": {}}, {"order": {"no": None}}, {"order.no": "A1"}],
)
def test_a_dotted_parameter_needs_nested_objects_down_to_a_value(params: dict[str, Any]) -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"character_string3": "{{order.no}}"})
    assert render(content, ORDER_PAID, Channel.TEMPLATE, params).missing_params == ["order.no"]


@pytest.mark.parametrize(
    ("value", "kind"), [({"a": 1}, "an object"), ([1, 2], "a list"), (float("nan"), "not")]
)
def test_a_parameter_without_a_text_form_is_a_violation_naming_it(value: Any, kind: str) -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "{{product}}"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {"product": value})
    assert any(v.startswith(f"thing1: parameter product is {kind}") for v in rendering.violations)
    assert not rendering.ok


def test_wechat_placeholders_are_not_parameters() -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "见{{thing2.DATA}}"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {})
    assert rendering.missing_params == []
    assert rendering.data["thing1"] == "见{{thing2.DATA}}"
    assert any("{{thing2.DATA}}" in w for w in rendering.warnings)


def test_a_filled_value_is_not_scanned_again() -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "{{a}}"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {"a": "{{b}}", "b": "x"})
    assert rendering.data["thing1"] == "{{b}}"
    assert rendering.missing_params == []


_IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s != "DATA")
_SCALAR = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@given(
    path=st.lists(_IDENT, min_size=1, max_size=3),
    value=_SCALAR,
    prefix=st.text(alphabet="订单号 :-ab", max_size=5),
    suffix=st.text(alphabet="订单号 :-ab", max_size=5),
)
def test_any_parameter_renders_exactly_its_json_text(
    path: list[str], value: Any, prefix: str, suffix: str
) -> None:
    params: Any = value
    for part in reversed(path):
        params = {part: params}
    content = MessageContent(
        template_id=TEMPLATE_ID, data={"thing1": f"{prefix}{{{{{'.'.join(path)}}}}}{suffix}"}
    )
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, params)
    expected = value if isinstance(value, str) else json.dumps(value)
    assert rendering.data["thing1"] == prefix + expected + suffix
    assert rendering.missing_params == []


@given(params=st.dictionaries(_IDENT, _SCALAR, max_size=5), asked=st.lists(_IDENT, min_size=1, max_size=4))
def test_missing_params_are_exactly_the_absent_names(params: dict[str, Any], asked: list[str]) -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "".join(f"{{{{{n}}}}}" for n in asked)})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, params)
    assert rendering.missing_params == list(dict.fromkeys(n for n in asked if n not in params))


# -- keyword rules --------------------------------------------------------------------------------


def test_every_broken_rule_is_reported_with_its_key() -> None:
    content = order_content(data={"thing1": "一" * 21, "amount2": "5999", "character_string3": "订单A1"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {})
    assert len(rendering.violations) == 3
    assert [v.split(":")[0] for v in rendering.violations] == ["thing1", "amount2", "character_string3"]
    assert "21 characters, at most 20" in rendering.violations[0]
    assert not rendering.ok


def test_a_value_that_breaks_its_rule_only_after_filling_is_caught() -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={**ORDER_VALUES})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, {**ORDER_PARAMS, "product": "x" * 30})
    assert rendering.violations == ["thing1: 30 characters, at most 20"]


def test_a_keyword_the_content_lacks_is_empty() -> None:
    content = order_content(data={"thing1": "手机", "amount2": "¥1"})
    assert render(content, ORDER_PAID, Channel.TEMPLATE, {}).violations == ["character_string3: is empty"]


def test_a_key_the_template_lacks_is_a_warning_only() -> None:
    content = order_content(data={**ORDER_VALUES, "thing9": "多余"})
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS)
    assert rendering.ok
    assert any(w.startswith("thing9: not a keyword") for w in rendering.warnings)


def test_enumerations_come_from_the_template_keyword() -> None:
    ok = render(appointment_content(), APPOINTMENT, Channel.SUBSCRIBE, {"item": "体检"})
    assert ok.ok, ok.violations
    wrong = render(
        appointment_content(data={"thing1": "体检", "time2": "10:00", "enum3": "进行中"}),
        APPOINTMENT,
        Channel.SUBSCRIBE,
        {},
    )
    assert wrong.violations == ["enum3: not one of the approved values"]


def test_an_enumeration_nobody_supplied_is_not_checked_but_warned() -> None:
    template = APPOINTMENT.model_copy(
        update={"keywords": [k.model_copy(update={"enum": []}) for k in APPOINTMENT.keywords]}
    )
    content = appointment_content(data={"thing1": "体检", "time2": "10:00", "enum3": "进行中"})
    rendering = render(content, template, Channel.SUBSCRIBE, {})
    assert rendering.ok
    assert any(w.startswith("enum3:") for w in rendering.warnings)


def test_amount_digits_follow_the_channel() -> None:
    item = {
        "template_id": TEMPLATE_ID,
        "priTmplId": TEMPLATE_ID,
        "content": "金额：{{amount1.DATA}}",
        "type": 2,
    }
    content = MessageContent(template_id=TEMPLATE_ID, data={"amount1": "¥12345678901"})  # 11 digits
    template = template_from_wechat(APPID, Channel.TEMPLATE, item)
    subscription = template_from_wechat(APPID, Channel.SUBSCRIBE, item)
    assert render(content, template, Channel.TEMPLATE, {}).ok
    assert render(content, subscription, Channel.SUBSCRIBE, {}).violations == [
        "amount1: 11 digits, at most 10"
    ]


def test_an_undocumented_keyword_type_is_warned() -> None:
    template = template_from_wechat(
        APPID, Channel.TEMPLATE, {"template_id": TEMPLATE_ID, "content": "{{short_thing1.DATA}}"}
    )
    rendering = render(
        MessageContent(template_id=TEMPLATE_ID, data={"short_thing1": "x"}), template, Channel.TEMPLATE, {}
    )
    assert rendering.ok
    assert any(w.startswith("short_thing1:") for w in rendering.warnings)


def test_content_for_another_template_or_channel_is_refused() -> None:
    other = MessageContent(template_id=SUB_TEMPLATE_ID, data=ORDER_VALUES)
    assert any(
        "not " + TEMPLATE_ID in v
        for v in render(other, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS).violations
    )
    wrong_channel = render(order_content(), ORDER_PAID, Channel.SUBSCRIBE, ORDER_PARAMS)
    assert any("is a template template, not subscribe" in v for v in wrong_channel.violations)


# -- content shape --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"Thing1": "x"},
        {"thing": "x"},
        {"1thing": "x"},
        {"thing1": True},
        {"thing1": None},
        {"thing1": ["x"]},
        {"thing1": {"value": "x"}},
        {"thing1": float("inf")},
        {"thing1": "x" * 1001},
        {f"thing{i}": "x" for i in range(21)},
    ],
)
def test_content_data_shapes_are_validated(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MessageContent(template_id=TEMPLATE_ID, data=data)


@pytest.mark.parametrize(
    "fields",
    [
        {"template_id": "bad id"},
        {"url": "javascript:alert(1)"},
        {"url": "https://a b"},
        {"page": "ftp://x"},
        {"miniprogram": {"appid": "not-an-appid"}},
        {"miniprogram": {"appid": MINI_APPID, "pagepath": "a\nb"}},
    ],
)
def test_template_id_and_jump_fields_are_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MessageContent(**{"template_id": TEMPLATE_ID, "data": {"thing1": "x"}, **fields})


def test_content_keeps_value_types_through_json() -> None:
    content = order_content(data={"thing1": "1", "number2": 2, "number3": 2.5})
    again = MessageContent.model_validate_json(content.model_dump_json())
    assert again == content
    assert [type(v) for v in again.data.values()] == [str, int, float]


# -- jump target ----------------------------------------------------------------------------------

MINI = MiniProgram(appid=MINI_APPID, pagepath="pages/order?id=1")


@pytest.mark.parametrize(
    ("channel", "fields", "expected"),
    [
        (Channel.TEMPLATE, {}, JumpTarget(kind="none")),
        (Channel.TEMPLATE, {"url": URL}, JumpTarget(kind="url", url=URL)),
        (Channel.TEMPLATE, {"miniprogram": MINI}, JumpTarget(kind="miniprogram", miniprogram=MINI)),
        # The mini program wins; the url stays as the fallback for old clients.
        (
            Channel.TEMPLATE,
            {"url": URL, "miniprogram": MINI},
            JumpTarget(kind="miniprogram", url=URL, miniprogram=MINI),
        ),
        (Channel.TEMPLATE, {"page": PAGE}, JumpTarget(kind="none")),
        (Channel.SUBSCRIBE, {}, JumpTarget(kind="none")),
        (Channel.SUBSCRIBE, {"page": PAGE}, JumpTarget(kind="url", url=PAGE)),
        (Channel.SUBSCRIBE, {"url": URL}, JumpTarget(kind="none")),
        (Channel.SUBSCRIBE, {"miniprogram": MINI}, JumpTarget(kind="miniprogram", miniprogram=MINI)),
        (
            Channel.SUBSCRIBE,
            {"page": PAGE, "miniprogram": MINI},
            JumpTarget(kind="miniprogram", miniprogram=MINI),
        ),
    ],
)
def test_jump_target_precedence(channel: Channel, fields: dict[str, Any], expected: JumpTarget) -> None:
    content = MessageContent(template_id=TEMPLATE_ID, data={"thing1": "x"}, **fields)
    assert jump_target(content, channel)[0] == expected


def test_a_jump_field_the_channel_ignores_is_warned() -> None:
    assert jump_target(order_content(page=PAGE), Channel.TEMPLATE)[1]
    assert jump_target(order_content(url=URL), Channel.SUBSCRIBE)[1]
    assert jump_target(order_content(url=URL), Channel.TEMPLATE)[1] == []


# -- payloads ---------------------------------------------------------------------------------------


def test_template_message_payload() -> None:
    content = order_content(url=URL, miniprogram=MINI)
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS)
    payload = wechat_payload(OPENID, content, rendering, Channel.TEMPLATE, client_msg_id="m" + "0" * 31)
    assert payload == {
        "touser": OPENID,
        "template_id": TEMPLATE_ID,
        "url": URL,
        "miniprogram": {"appid": MINI_APPID, "pagepath": "pages/order?id=1"},
        "client_msg_id": "m" + "0" * 31,
        "data": {
            "thing1": {"value": "iPhone 15"},
            "amount2": {"value": "¥5999"},
            "character_string3": {"value": "A20240501"},
        },
    }
    # Raw UTF-8 on the wire (reference §0: \\u escapes cost 40033); the body must serialise so.
    assert "iPhone 15" in json.dumps(payload, ensure_ascii=False)


def test_template_message_payload_without_jump_or_key() -> None:
    content = order_content()
    rendering = render(content, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS)
    payload = wechat_payload(OPENID, content, rendering, Channel.TEMPLATE)
    assert set(payload) == {"touser", "template_id", "data"}


def test_mini_program_without_pagepath_sends_only_its_appid() -> None:
    content = order_content(miniprogram=MiniProgram(appid=MINI_APPID))
    payload = wechat_payload(
        OPENID, content, render(content, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS), Channel.TEMPLATE
    )
    assert payload["miniprogram"] == {"appid": MINI_APPID}


def test_bizsend_payload_has_page_and_no_url_or_client_msg_id() -> None:
    content = appointment_content(page=PAGE, url=URL)
    rendering = render(content, APPOINTMENT, Channel.SUBSCRIBE, {"item": "体检"})
    payload = wechat_payload(OPENID, content, rendering, Channel.SUBSCRIBE, client_msg_id="m" + "1" * 31)
    assert payload == {
        "touser": OPENID,
        "template_id": SUB_TEMPLATE_ID,
        "page": PAGE,
        "data": {
            "thing1": {"value": "体检"},
            "time2": {"value": "5月1日 10:00"},
            "enum3": {"value": "已确认"},
        },
    }


def test_bizsend_payload_with_a_mini_program_drops_the_page() -> None:
    content = appointment_content(page=PAGE, miniprogram=MINI)
    rendering = render(content, APPOINTMENT, Channel.SUBSCRIBE, {"item": "体检"})
    payload = wechat_payload(OPENID, content, rendering, Channel.SUBSCRIBE)
    assert "page" not in payload and "url" not in payload
    assert payload["miniprogram"] == {"appid": MINI_APPID, "pagepath": "pages/order?id=1"}


def test_a_failing_rendering_or_a_bad_openid_has_no_payload() -> None:
    content = order_content()
    failing = render(content, ORDER_PAID, Channel.TEMPLATE, {})
    with pytest.raises(ValueError, match="cannot be sent"):
        wechat_payload(OPENID, content, failing, Channel.TEMPLATE)
    good = render(content, ORDER_PAID, Channel.TEMPLATE, ORDER_PARAMS)
    with pytest.raises(ValueError, match="openid"):
        wechat_payload("o p", content, good, Channel.TEMPLATE)


def test_rendering_ok_needs_no_violation_and_no_missing_parameter() -> None:
    jump = JumpTarget(kind="none")
    assert Rendering(data={}, jump=jump, warnings=["w"]).ok
    assert not Rendering(data={}, jump=jump, violations=["v"]).ok
    assert not Rendering(data={}, jump=jump, missing_params=["p"]).ok


# -- digest ---------------------------------------------------------------------------------------


def test_digest_is_short_stable_and_order_independent() -> None:
    digest = content_digest(TEMPLATE_ID, {"thing1": "手机", "amount2": "¥1"})
    assert digest == content_digest(TEMPLATE_ID, {"amount2": "¥1", "thing1": "手机"})
    assert len(digest) == 16 and set(digest) <= set("0123456789abcdef")


def test_digest_is_pinned_across_releases() -> None:
    # The repeat guard stores digests: changing the algorithm would let repeats through once.
    assert content_digest("T", {"thing1": "a"}) == "b90b57d513e3516a"


@pytest.mark.parametrize(
    ("template_id", "data"),
    [
        (SUB_TEMPLATE_ID, {"thing1": "手机", "amount2": "¥1"}),
        (TEMPLATE_ID, {"thing1": "手机", "amount2": "¥2"}),
        (TEMPLATE_ID, {"thing1": "手机"}),
        (TEMPLATE_ID, {"thing1": "手机", "amount3": "¥1"}),
        (TEMPLATE_ID, {"thing1": "手机¥1", "amount2": ""}),
    ],
)
def test_digest_changes_with_template_or_content(template_id: str, data: dict[str, str]) -> None:
    assert content_digest(template_id, data) != content_digest(
        TEMPLATE_ID, {"thing1": "手机", "amount2": "¥1"}
    )


@given(st.dictionaries(st.from_regex(r"thing[1-9]", fullmatch=True), st.text(max_size=5), min_size=1))
def test_digest_tells_apart_any_single_value_change(data: dict[str, str]) -> None:
    key = next(iter(data))
    changed = {**data, key: data[key] + "x"}
    assert content_digest(TEMPLATE_ID, data) != content_digest(TEMPLATE_ID, changed)
