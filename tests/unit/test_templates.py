from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from wxreach.reach.followers import SubscriptionKind
from wxreach.reach.templates import Template, TemplateKeyword, parse_keywords, template_from_wechat
from wxreach.wechat.keywords import Channel

APPID = "wx1234567890abcdef"
TEMPLATE_ID = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
SUB_TEMPLATE_ID = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"

# As get_all_private_template returns it (reference §2.2), legacy first/remark included.
ORDER_SHIPPED = {
    "template_id": TEMPLATE_ID,
    "title": "订单发货通知",
    "primary_industry": "IT科技",
    "deputy_industry": "互联网|电子商务",
    "content": "{{first.DATA}}\n商品名称：{{thing1.DATA}}\n快递公司:{{thing2.DATA}}\n"
    "快递单号：{{character_string3.DATA}}\n{{remark.DATA}}",
    "example": "商品名称：iPhone 15\n快递公司：顺丰速运\n快递单号：SF1234567890",
}
# As gettemplate returns it (reference §3.1).
APPOINTMENT = {
    "priTmplId": SUB_TEMPLATE_ID,
    "title": "预约结果通知",
    "content": "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}\n预约状态:{{phrase3.DATA}}\n",
    "example": "预约项目:体检\n预约时间:2024年5月1日 10:00\n预约状态:已确认\n",
    "type": 2,
}


def names(keywords: list[TemplateKeyword]) -> list[str]:
    return [keyword.name for keyword in keywords]


def test_keywords_in_order_with_types_and_labels() -> None:
    keywords = parse_keywords(ORDER_SHIPPED["content"])
    assert [(k.name, k.type, k.known_type, k.label) for k in keywords] == [
        ("thing1", "thing", True, "商品名称"),
        ("thing2", "thing", True, "快递公司"),
        ("character_string3", "character_string", True, "快递单号"),
    ]


@pytest.mark.parametrize(
    ("content", "label"),
    [
        ("商品名称：{{thing1.DATA}}", "商品名称"),  # full-width colon
        ("商品名称:{{thing1.DATA}}", "商品名称"),
        ("  商品名称 ： {{thing1.DATA}}", "商品名称"),
        ("Product: {{thing1.DATA}}", "Product"),
        ("{{thing1.DATA}}", ""),
        ("{{ thing1.DATA }}", ""),
    ],
)
def test_label_is_the_text_before_the_placeholder_without_its_colon(content: str, label: str) -> None:
    assert [k.label for k in parse_keywords(content)] == [label]


def test_two_placeholders_on_one_line_each_take_the_text_since_the_previous_one() -> None:
    keywords = parse_keywords("金额：{{amount1.DATA}} 时间：{{time2.DATA}}")
    assert [(k.name, k.label) for k in keywords] == [("amount1", "金额"), ("time2", "时间")]


def test_a_repeated_placeholder_is_one_keyword_labelled_where_it_first_appears() -> None:
    keywords = parse_keywords("商品：{{thing1.DATA}}\n再次：{{thing1.DATA}}\n时间：{{time2.DATA}}")
    assert [(k.name, k.label) for k in keywords] == [("thing1", "商品"), ("time2", "时间")]


def test_legacy_and_malformed_placeholders_are_not_keywords() -> None:
    content = "\n".join(
        [
            "{{first.DATA}}",
            "{{remark.DATA}}",
            "{{Thing1.DATA}}",
            "{{thing2}}",
            "{{thing3.VALUE}}",
            "名称：{{thing4.DATA}}",
        ]
    )
    assert names(parse_keywords(content)) == ["thing4"]


def test_an_undocumented_type_is_kept_and_marked_unknown() -> None:
    (keyword,) = parse_keywords("短文本：{{short_thing5.DATA}}")
    assert (keyword.type, keyword.known_type) == ("short_thing", False)


def test_template_message_from_wechat() -> None:
    synced = datetime(2024, 5, 1, tzinfo=UTC)
    template = template_from_wechat(APPID, Channel.TEMPLATE, ORDER_SHIPPED, synced_at=synced)
    assert template.template_id == TEMPLATE_ID
    assert template.channel is Channel.TEMPLATE
    assert template.title == "订单发货通知"
    assert template.example == ORDER_SHIPPED["example"]
    assert names(template.keywords) == ["thing1", "thing2", "character_string3"]
    assert template.kind is None
    assert template.synced_at == synced


@pytest.mark.parametrize(
    ("wechat_type", "kind"),
    [
        (2, SubscriptionKind.ONE_TIME),
        (3, SubscriptionKind.LONG_TERM),
        ("2", SubscriptionKind.ONE_TIME),
        ("3", SubscriptionKind.LONG_TERM),
        (1, SubscriptionKind.UNKNOWN),
        (4, SubscriptionKind.UNKNOWN),
        (None, SubscriptionKind.UNKNOWN),
        (True, SubscriptionKind.UNKNOWN),
        ("one", SubscriptionKind.UNKNOWN),
        ("²", SubscriptionKind.UNKNOWN),
    ],
)
def test_subscription_type_maps_to_its_kind(wechat_type: Any, kind: SubscriptionKind) -> None:
    item = {**APPOINTMENT, "type": wechat_type}
    template = template_from_wechat(APPID, Channel.SUBSCRIBE, item)
    assert template.kind is kind


def test_subscription_template_from_wechat() -> None:
    template = template_from_wechat(APPID, Channel.SUBSCRIBE, APPOINTMENT)
    assert template.template_id == SUB_TEMPLATE_ID
    assert template.channel is Channel.SUBSCRIBE
    assert [(k.name, k.label) for k in template.keywords] == [
        ("thing1", "预约项目"),
        ("time2", "预约时间"),
        ("phrase3", "预约状态"),
    ]


def test_an_entry_without_a_template_id_is_refused() -> None:
    with pytest.raises(ValueError, match="template id"):
        template_from_wechat(APPID, Channel.SUBSCRIBE, {"title": "x", "content": ""})
    with pytest.raises(ValueError, match="template id"):
        template_from_wechat(APPID, Channel.TEMPLATE, {"priTmplId": TEMPLATE_ID})


def test_missing_or_odd_text_fields_become_empty() -> None:
    template = template_from_wechat(APPID, Channel.TEMPLATE, {"template_id": TEMPLATE_ID, "title": None})
    assert (template.title, template.content, template.example, template.keywords) == ("", "", "", [])


def test_kind_belongs_to_subscription_templates_only() -> None:
    with pytest.raises(ValidationError, match="subscription templates only"):
        Template(
            appid=APPID, channel=Channel.TEMPLATE, template_id=TEMPLATE_ID, kind=SubscriptionKind.ONE_TIME
        )


def test_operator_enumerations_attach_to_their_keywords() -> None:
    template = template_from_wechat(APPID, Channel.SUBSCRIBE, APPOINTMENT).with_enums(
        {"phrase3": ["已确认", "已取消"]}
    )
    phrase = template.keyword("phrase3")
    assert phrase is not None and phrase.enum == ["已确认", "已取消"]
    thing = template.keyword("thing1")
    assert thing is not None and thing.enum == []
    with pytest.raises(ValueError, match="no keyword enum9"):
        template.with_enums({"enum9": ["a"]})


def test_template_round_trips_through_json() -> None:
    template = template_from_wechat(APPID, Channel.SUBSCRIBE, APPOINTMENT)
    assert Template.model_validate_json(template.model_dump_json()) == template
