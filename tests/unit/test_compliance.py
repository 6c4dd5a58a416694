from __future__ import annotations

import json
from importlib.resources import files

import pytest

from wxreach.reach.compliance import LintFinding, LintLevel, lint, marketing_words
from wxreach.reach.templates import Template, template_from_wechat
from wxreach.wechat.keywords import Channel

APPID = "wx1234567890abcdef"
TEMPLATE_ID = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"

ORDER_SHIPPED = template_from_wechat(
    APPID,
    Channel.TEMPLATE,
    {
        "template_id": TEMPLATE_ID,
        "title": "订单发货通知",
        "content": "商品名称：{{thing1.DATA}}\n快递公司：{{thing2.DATA}}\n"
        "快递单号：{{character_string3.DATA}}\n发货时间：{{time4.DATA}}\n备注：{{thing5.DATA}}",
    },
)
SHIPPED_VALUES = {
    "thing1": "iPhone 15 Pro 256GB 蓝色",
    "thing2": "顺丰速运",
    "character_string3": "SF1234567890",
    "time4": "2024年5月1日 10:00",
    "thing5": "请保持电话畅通，留意快递员来电",
}


# Content that reads like an advert, not like the shipping notice the template is for.
UNRELATED_VALUES = {
    **SHIPPED_VALUES,
    "thing1": "夏季新品震撼上市，欢迎进店选购",
    "thing2": "全场服装任选两件再赠一件",
    "thing5": "欢迎关注我们",
}


def rules(findings: list[LintFinding]) -> list[tuple[str, str | None]]:
    return [(finding.rule, finding.keyword) for finding in findings]


def template(title: str, content: str, channel: Channel = Channel.TEMPLATE) -> Template:
    return template_from_wechat(
        APPID,
        channel,
        {"template_id": TEMPLATE_ID, "priTmplId": TEMPLATE_ID, "title": title, "content": content},
    )


# -- the word list ---------------------------------------------------------------------------------


def test_word_list_loads_from_package_data() -> None:
    raw = json.loads(files("wxreach.reach").joinpath("compliance_words.json").read_text(encoding="utf-8"))
    assert isinstance(raw["_doc"], str) and raw["_doc"]
    words = marketing_words()
    assert len(words) == len(raw["marketing"])
    for word in (
        "优惠",
        "红包",
        "优惠券",
        "秒杀",
        "免费领",
        "满减",
        "coupon",
        "discount",
        "flash sale",
        "% off",
    ):
        assert word in words


def test_levels_are_the_account_policy_values() -> None:
    assert [level.value for level in LintLevel] == ["warn", "block"]


# -- ordinary notifications ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel))
def test_an_ordinary_order_shipped_notification_has_no_findings(channel: Channel) -> None:
    assert lint(ORDER_SHIPPED, SHIPPED_VALUES, channel) == []


@pytest.mark.parametrize(
    ("title", "content", "values"),
    [
        (
            "预约成功通知",
            "预约项目：{{thing1.DATA}}\n预约时间：{{time2.DATA}}\n门店：{{thing3.DATA}}",
            {"thing1": "口腔检查及洗牙服务", "time2": "5月3日 14:00", "thing3": "朝阳门店"},
        ),
        (
            "支付成功通知",
            "商品：{{thing1.DATA}}\n优惠金额：{{amount2.DATA}}\n实付：{{amount3.DATA}}",
            {"thing1": "会员年卡", "amount2": "¥20", "amount3": "¥180"},
        ),
        (
            "Order shipped",
            "Item: {{thing1.DATA}}\nCarrier: {{thing2.DATA}}",
            {"thing1": "Wholesale notebook pack", "thing2": "DHL Express"},
        ),
        (
            "课程提醒",
            "课程：{{thing1.DATA}}\n版本：{{character_string2.DATA}}\n邮箱：{{thing3.DATA}}",
            {"thing1": "Python 3.12 入门", "character_string2": "v1.2.3", "thing3": "li@example.com"},
        ),
    ],
)
def test_ordinary_notifications_have_no_findings(title: str, content: str, values: dict[str, str]) -> None:
    assert lint(template(title, content), values, Channel.TEMPLATE) == []


# -- marketing wording ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("领取优惠券", "优惠券"),
        ("新人红包已到账", "红包"),
        ("限时秒杀进行中", "限时"),
        ("免费领取试用装", "免费领"),
        ("Get your COUPON now", "coupon"),
        ("Big Sale!", "sale"),
        ("flash-sale today", "flash sale"),
        ("50% off", "% off"),
        ("50%OFF", "% off"),
        ("ＳＡＬＥ", "sale"),  # full width
    ],
)
def test_marketing_wording_in_a_template_message(value: str, word: str) -> None:
    findings = lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing1": value}, Channel.TEMPLATE)
    assert rules(findings) == [("marketing_wording", "thing1")]
    assert word in findings[0].detail
    assert findings[0].detail.startswith("thing1")


@pytest.mark.parametrize("value", ["Wholesale order", "Salesforce 账户", "promotional", "discountless"])
def test_english_words_match_at_word_boundaries_only(value: str) -> None:
    assert lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing1": value}, Channel.TEMPLATE) == []


def test_the_longest_word_is_reported_once() -> None:
    (finding,) = lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing1": "优惠券 优惠券"}, Channel.TEMPLATE)
    assert finding.detail == "thing1 holds promotion wording: 优惠券"


def test_marketing_wording_is_not_linted_for_subscription_notifications() -> None:
    assert lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing1": "领取优惠券"}, Channel.SUBSCRIBE) == []


def test_each_value_with_marketing_wording_is_a_finding() -> None:
    values = {**SHIPPED_VALUES, "thing1": "秒杀", "thing2": "coupon"}
    assert rules(lint(ORDER_SHIPPED, values, Channel.TEMPLATE)) == [
        ("marketing_wording", "thing1"),
        ("marketing_wording", "thing2"),
    ]


# -- links ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "详见 https://example.com/a",
        "http://x.cn",
        "访问www.example.org查看",
        "example.com/xyz",
        "t.cn/A6x",
        "shop.example.com.cn",
        "ＷＷＷ．example．com",
    ],
)
@pytest.mark.parametrize("channel", list(Channel))
def test_links_in_values(value: str, channel: Channel) -> None:
    findings = lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing2": value}, channel)
    assert rules(findings) == [("link_in_value", "thing2")]


@pytest.mark.parametrize(
    "value", ["li@example.com", "v1.2.3", "¥12.50", "report.pdf", "No.5 仓库", "Node.js 课程"]
)
def test_not_links(value: str) -> None:
    assert lint(ORDER_SHIPPED, {**SHIPPED_VALUES, "thing2": value}, Channel.TEMPLATE) == []


# -- unrelated to the title ---------------------------------------------------------------------------------


def test_free_text_unrelated_to_title_and_labels() -> None:
    findings = lint(ORDER_SHIPPED, UNRELATED_VALUES, Channel.SUBSCRIBE)
    assert rules(findings) == [("unrelated_to_title", None)]
    assert "订单发货通知" in findings[0].detail


def test_free_text_sharing_a_word_with_the_title_or_a_label_is_related() -> None:
    about_title = {**UNRELATED_VALUES, "thing1": "您的订单已打包完毕，正在出库"}
    about_label = {**UNRELATED_VALUES, "thing2": "快递将于今日下午送达您手中"}
    in_a_remark = {**UNRELATED_VALUES, "thing5": "请留意快递员来电"}
    assert lint(ORDER_SHIPPED, about_title, Channel.SUBSCRIBE) == []
    assert lint(ORDER_SHIPPED, about_label, Channel.SUBSCRIBE) == []
    assert lint(ORDER_SHIPPED, in_a_remark, Channel.SUBSCRIBE) == []


def test_a_short_value_among_free_text_keeps_the_content_related() -> None:
    values = {**UNRELATED_VALUES, "thing2": "圆通"}
    assert lint(ORDER_SHIPPED, values, Channel.SUBSCRIBE) == []


def test_free_text_under_a_remark_label_may_say_anything() -> None:
    remark_only = template("订单发货通知", "单号：{{character_string1.DATA}}\n温馨提示：{{thing2.DATA}}")
    values = {"character_string1": "SF1", "thing2": "夏季新品震撼上市，欢迎进店选购"}
    assert lint(remark_only, values, Channel.SUBSCRIBE) == []


def test_english_free_text_unrelated_to_an_english_title() -> None:
    shipped = template("Order shipped", "Item: {{thing1.DATA}}\nCarrier: {{thing2.DATA}}")
    values = {"thing1": "Join our summer party tonight", "thing2": "Bring all your friends along"}
    assert rules(lint(shipped, values, Channel.SUBSCRIBE)) == [("unrelated_to_title", None)]
    related = {"thing1": "Your order left our warehouse", "thing2": "Bring all your friends along"}
    assert lint(shipped, related, Channel.SUBSCRIBE) == []


def test_a_template_without_a_title_is_never_unrelated() -> None:
    untitled = ORDER_SHIPPED.model_copy(update={"title": ""})
    assert lint(untitled, UNRELATED_VALUES, Channel.SUBSCRIBE) == []


def test_all_rules_together() -> None:
    values = {
        **UNRELATED_VALUES,
        "thing1": "夏季大促震撼来袭，全场五折起",
        "thing2": "活动详情请见专题页面 example.com/sale",
    }
    assert sorted(rules(lint(ORDER_SHIPPED, values, Channel.TEMPLATE)), key=str) == sorted(
        [
            ("marketing_wording", "thing1"),
            ("marketing_wording", "thing2"),
            ("link_in_value", "thing2"),
            ("unrelated_to_title", None),
        ],
        key=str,
    )
