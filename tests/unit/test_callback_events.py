from __future__ import annotations

import copy
import re
from types import MappingProxyType
from typing import Any

import pytest

from tests.support.fixtures import WECHAT_EVENTS_DIR, callback_xml
from wxreach.errors import InvalidInput, MalformedCallback
from wxreach.wechat.callback_events import (
    ArticleUrl,
    CallbackEvent,
    EventKind,
    MassSendJobFinishEvent,
    MassSendOutcome,
    PopupSubscription,
    PublishJobFinishEvent,
    ScanEvent,
    SubscribeDecision,
    SubscribeEvent,
    SubscribeMsgChangeEvent,
    SubscribeMsgDelivery,
    SubscribeMsgPopupEvent,
    SubscribeMsgSentEvent,
    SubscriptionChange,
    TemplateSendJobFinishEvent,
    UnknownEvent,
    UnsubscribeEvent,
    UserMessage,
    parse_event,
)
from wxreach.wechat.callback_xml import parse_callback_xml

OPENID = "oWx1a2b3c4d5e6f7g8h9i0jKlMnO"
ACCOUNT = "gh_3f1a2b3c4d5e"
TEMPLATE_A = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
TEMPLATE_B = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"


def fields_of(name: str, **overrides: str) -> dict[str, Any]:
    return parse_callback_xml(callback_xml(name, **overrides))


def event_of(name: str, **overrides: str) -> CallbackEvent:
    return parse_event(fields_of(name, **overrides))


@pytest.mark.parametrize(
    ("name", "model", "kind"),
    [
        ("subscribe", SubscribeEvent, EventKind.SUBSCRIBE),
        ("subscribe_qrscene", SubscribeEvent, EventKind.SUBSCRIBE),
        ("unsubscribe", UnsubscribeEvent, EventKind.UNSUBSCRIBE),
        ("scan", ScanEvent, EventKind.SCAN),
        ("subscribe_msg_popup_event", SubscribeMsgPopupEvent, EventKind.SUBSCRIBE_MSG_POPUP),
        ("subscribe_msg_popup_single", SubscribeMsgPopupEvent, EventKind.SUBSCRIBE_MSG_POPUP),
        ("subscribe_msg_change_event", SubscribeMsgChangeEvent, EventKind.SUBSCRIBE_MSG_CHANGE),
        ("subscribe_msg_sent_event", SubscribeMsgSentEvent, EventKind.SUBSCRIBE_MSG_SENT),
        ("template_send_job_finish", TemplateSendJobFinishEvent, EventKind.TEMPLATE_SEND_JOB_FINISH),
        ("template_send_job_finish_failed", TemplateSendJobFinishEvent, EventKind.TEMPLATE_SEND_JOB_FINISH),
        ("mass_send_job_finish", MassSendJobFinishEvent, EventKind.MASS_SEND_JOB_FINISH),
        ("mass_send_job_finish_review_failed", MassSendJobFinishEvent, EventKind.MASS_SEND_JOB_FINISH),
        ("publish_job_finish", PublishJobFinishEvent, EventKind.PUBLISH_JOB_FINISH),
        ("freepublish_job_finish", PublishJobFinishEvent, EventKind.PUBLISH_JOB_FINISH),
        ("text_message", UserMessage, EventKind.USER_MESSAGE),
        ("image_message", UserMessage, EventKind.USER_MESSAGE),
        ("unknown_event", UnknownEvent, EventKind.UNKNOWN),
    ],
)
def test_every_fixture_maps_to_its_model(name: str, model: type[CallbackEvent], kind: EventKind) -> None:
    fields = fields_of(name)

    event = parse_event(fields)

    assert type(event) is model
    assert event.kind is kind
    assert event.openid == OPENID
    assert event.from_user_name == OPENID
    assert event.raw == fields


def test_common_fields() -> None:
    event = event_of("subscribe")

    assert event.to_user_name == ACCOUNT
    assert event.create_time == 1714036504
    assert event.msg_type == "event"
    assert event.event == "subscribe"


def test_plain_subscribe_has_no_scene() -> None:
    event = event_of("subscribe")

    assert isinstance(event, SubscribeEvent)
    assert event.event_key == ""
    assert event.scene is None
    assert event.ticket is None


def test_subscribe_through_a_parametric_qr_code() -> None:
    event = event_of("subscribe_qrscene")

    assert isinstance(event, SubscribeEvent)
    assert event.scene == "spring_campaign_42"
    assert event.event_key == "qrscene_spring_campaign_42"
    assert event.ticket is not None
    assert event.ticket.startswith("gQH47joAAAAA")


def test_scan_keeps_the_event_key_as_the_scene() -> None:
    event = event_of("scan")

    assert isinstance(event, ScanEvent)
    assert event.scene == "1024"
    assert event.ticket is not None
    assert event.ticket.startswith("gQHi8DwAAAAA")


def test_popup_event_with_accept_and_reject() -> None:
    event = event_of("subscribe_msg_popup_event")

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert event.items == [
        PopupSubscription(template_id=TEMPLATE_A, status="accept", popup_scene=2),
        PopupSubscription(template_id=TEMPLATE_B, status="reject", popup_scene=2),
    ]
    assert [item.decision for item in event.items] == [SubscribeDecision.ACCEPT, SubscribeDecision.REJECT]


def test_popup_event_with_a_single_list() -> None:
    event = event_of("subscribe_msg_popup_single")

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert event.items == [PopupSubscription(template_id=TEMPLATE_A, status="accept", popup_scene=1)]


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        ("accept", SubscribeDecision.ACCEPT),
        (" Accept ", SubscribeDecision.ACCEPT),
        ("REJECT", SubscribeDecision.REJECT),
    ],
)
def test_popup_decision_tolerates_case_and_spacing(status: str, decision: SubscribeDecision) -> None:
    fields = fields_of("subscribe_msg_popup_single")
    fields["SubscribeMsgPopupEvent"]["List"][0]["SubscribeStatusString"] = status

    event = parse_event(fields)

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert event.items[0].status == status
    assert event.items[0].decision is decision


def test_popup_status_and_scene_never_crash_parsing() -> None:
    fields = fields_of("subscribe_msg_popup_single")
    fields["SubscribeMsgPopupEvent"]["List"][0].update(SubscribeStatusString="ban", PopupScene="")

    event = parse_event(fields)

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert event.items[0].status == "ban"
    assert event.items[0].decision is SubscribeDecision.UNKNOWN
    assert event.items[0].popup_scene is None


def test_popup_list_as_a_single_object_is_normalised() -> None:
    # JSON pushes flatten one item to an object rather than an array (reference §3.3).
    fields = fields_of("subscribe_msg_popup_single")
    fields["SubscribeMsgPopupEvent"]["List"] = fields["SubscribeMsgPopupEvent"]["List"][0]

    event = parse_event(fields)

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert [item.template_id for item in event.items] == [TEMPLATE_A]


def test_popup_without_a_container_has_no_items() -> None:
    fields = fields_of("subscribe_msg_popup_single")
    del fields["SubscribeMsgPopupEvent"]

    event = parse_event(fields)

    assert isinstance(event, SubscribeMsgPopupEvent)
    assert event.items == []


def test_change_event() -> None:
    event = event_of("subscribe_msg_change_event")

    assert isinstance(event, SubscribeMsgChangeEvent)
    assert event.items == [SubscriptionChange(template_id=TEMPLATE_A, status="reject")]
    assert event.items[0].decision is SubscribeDecision.REJECT


def test_sent_event() -> None:
    event = event_of("subscribe_msg_sent_event")

    assert isinstance(event, SubscribeMsgSentEvent)
    assert event.items == [
        SubscribeMsgDelivery(
            template_id=TEMPLATE_A, msg_id="2906548178359271425", error_code=0, error_status="success"
        )
    ]
    assert event.items[0].delivered is True


def test_sent_event_with_an_unknown_error_status() -> None:
    fields = fields_of("subscribe_msg_sent_event")
    fields["SubscribeMsgSentEvent"]["List"][0].update(ErrorCode="10005", ErrorStatus="some new status")

    event = parse_event(fields)

    assert isinstance(event, SubscribeMsgSentEvent)
    assert event.items[0].error_code == 10005
    assert event.items[0].error_status == "some new status"
    assert event.items[0].delivered is False


def test_template_job_success() -> None:
    event = event_of("template_send_job_finish")

    assert isinstance(event, TemplateSendJobFinishEvent)
    assert event.msg_id == "3147483704915226625"
    assert event.status == "success"
    assert event.delivered is True
    assert event.failure_reason is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("failed:user block", "user block"),
        ("failed: system failed", "system failed"),
        ("failed:freq limit", "freq limit"),
        ("FAILED:user block", "user block"),
        ("failed:user block  ", "user block"),
        ("failed", None),
        ("blocked by a new rule", "blocked by a new rule"),
    ],
)
def test_template_job_failures(status: str, reason: str | None) -> None:
    event = event_of("template_send_job_finish_failed", Status=status)

    assert isinstance(event, TemplateSendJobFinishEvent)
    assert event.status == status
    assert event.delivered is False
    assert event.failure_reason == reason


def test_template_job_user_block_fixture() -> None:
    event = event_of("template_send_job_finish_failed")

    assert isinstance(event, TemplateSendJobFinishEvent)
    assert event.msg_id == "3147483704915226626"
    assert event.failure_reason == "user block"


def test_mass_send_finished() -> None:
    event = event_of("mass_send_job_finish")

    assert isinstance(event, MassSendJobFinishEvent)
    assert event.msg_id == "1000000861"
    assert event.status == "send success"
    assert event.outcome is MassSendOutcome.SENT
    assert event.review_error_code is None
    assert (event.total_count, event.filter_count, event.sent_count, event.error_count) == (
        12840,
        12573,
        12561,
        12,
    )
    assert event.article_urls == [
        ArticleUrl(
            idx=1,
            url="https://mp.weixin.qq.com/s?__biz=MzA3NjQ1MjE2Mg==&mid=2247483651&idx=1&sn=3f6b2c1d9e8a7b6c5d4e3f2a1b0c9d8e",
        ),
        ArticleUrl(
            idx=2,
            url="https://mp.weixin.qq.com/s?__biz=MzA3NjQ1MjE2Mg==&mid=2247483651&idx=2&sn=0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        ),
    ]
    assert event.copyright_check is not None
    assert event.copyright_check["CheckState"] == "2"
    assert [item["AuditState"] for item in event.copyright_check["ResultList"]["item"]] == ["2", "2"]


def test_mass_send_review_failure() -> None:
    event = event_of("mass_send_job_finish_review_failed")

    assert isinstance(event, MassSendJobFinishEvent)
    assert event.to_user_name == ""
    assert event.status == "err(30003)"
    assert event.review_error_code == 30003
    assert event.outcome is MassSendOutcome.REVIEW_FAILED
    assert event.article_urls == []
    assert (event.total_count, event.filter_count, event.sent_count, event.error_count) == (12840, 0, 0, 0)
    assert event.copyright_check is not None
    assert event.copyright_check["CheckState"] == "3"


@pytest.mark.parametrize(
    ("status", "outcome", "code"),
    [
        ("err(20431)", MassSendOutcome.REVIEW_FAILED, 20431),
        ("send fail", MassSendOutcome.SEND_FAILED, None),
        ("something new", MassSendOutcome.UNKNOWN, None),
        ("", MassSendOutcome.UNKNOWN, None),
    ],
)
def test_mass_send_statuses_never_crash(status: str, outcome: MassSendOutcome, code: int | None) -> None:
    event = event_of("mass_send_job_finish", Status=status)

    assert isinstance(event, MassSendJobFinishEvent)
    assert event.status == status
    assert event.outcome is outcome
    assert event.review_error_code == code


def test_mass_send_tolerates_missing_results_and_counts() -> None:
    fields = fields_of("mass_send_job_finish")
    for key in ("ArticleUrlResult", "CopyrightCheckResult", "FilterCount"):
        del fields[key]
    fields["ErrorCount"] = ""

    event = parse_event(fields)

    assert isinstance(event, MassSendJobFinishEvent)
    assert event.article_urls == []
    assert event.copyright_check is None
    assert event.filter_count == 0
    assert event.error_count == 0


def test_publish_job_finished() -> None:
    event = event_of("publish_job_finish")

    assert isinstance(event, PublishJobFinishEvent)
    assert event.event == "PUBLISHJOBFINISH"
    assert event.publish_id == "2247503051"
    assert event.publish_status == 0
    assert event.published is True
    assert event.article_id == "b5O2OUs25HBxRceL7hfReg-U9QGeq9zQjiDvyWP4Hq4"
    assert event.article_urls == [ArticleUrl(idx=1, url="https://mp.weixin.qq.com/s/b5O2OUs25HBxRceL7hfReg")]
    assert event.fail_idx == []


def test_freepublish_job_failed() -> None:
    event = event_of("freepublish_job_finish")

    assert isinstance(event, PublishJobFinishEvent)
    assert event.event == "FREEPUBLISHJOBFINISH"
    assert event.publish_id == "2247503052"
    assert event.publish_status == 2
    assert event.published is False
    assert event.article_id is None
    assert event.article_urls == []
    assert event.fail_idx == [1, 2]


def test_text_message() -> None:
    event = event_of("text_message")

    assert isinstance(event, UserMessage)
    assert event.msg_type == "text"
    assert event.content == "请问春季活动什么时候开始？"
    assert event.msg_id == "7352043817265098241"
    assert event.event == ""


def test_image_message_keeps_its_specific_fields_in_raw() -> None:
    event = event_of("image_message")

    assert isinstance(event, UserMessage)
    assert event.content is None
    assert event.msg_id == "24498291741523744"
    assert event.raw["PicUrl"].startswith("http://mmbiz.qpic.cn/")
    assert event.raw["MediaId"].startswith("Ys3l5nsQZ5GD")


@pytest.mark.parametrize("name", ["template_send_job_finish", "text_message", "subscribe_msg_sent_event"])
def test_19_digit_ids_are_kept_exactly(name: str) -> None:
    event = event_of(name)

    if isinstance(event, SubscribeMsgSentEvent):
        msg_id = event.items[0].msg_id
    else:
        assert isinstance(event, TemplateSendJobFinishEvent | UserMessage)
        msg_id = event.msg_id
    assert len(msg_id) == 19
    # A float would round these (they exceed 2**53); the string must match the XML digit for digit.
    assert int(msg_id) > 2**53
    assert f"{float(msg_id):.0f}" != msg_id
    assert msg_id in callback_xml(name)


# --- unknown and forward-compatible input -----------------------------------------------------


def test_unknown_event_keeps_every_field() -> None:
    fields = fields_of("unknown_event")

    event = parse_event(fields)

    assert isinstance(event, UnknownEvent)
    assert event.event == "user_authorization_revoke"
    assert event.raw["AppID"] == "wx5f1c3a2b4d6e8f90"
    assert event.raw["RevokeInfo"] == "1"
    assert event.raw == fields


def test_unknown_msg_type_keeps_every_field() -> None:
    fields = fields_of("text_message", MsgType="hologram")
    fields["HologramUrl"] = "https://example.invalid/h"

    event = parse_event(fields)

    assert isinstance(event, UnknownEvent)
    assert event.msg_type == "hologram"
    assert event.raw["HologramUrl"] == "https://example.invalid/h"
    assert event.dedupe_key == "msg:7352043817265098241"


def test_event_without_an_event_name_is_unknown() -> None:
    fields = fields_of("subscribe")
    del fields["Event"]

    event = parse_event(fields)

    assert isinstance(event, UnknownEvent)
    assert event.dedupe_key.startswith(f"evt:{OPENID}:1714036504::")


def test_new_fields_on_known_events_are_kept_in_raw() -> None:
    fields = fields_of("template_send_job_finish")
    fields["NewField"] = "v"

    event = parse_event(fields)

    assert isinstance(event, TemplateSendJobFinishEvent)
    assert event.raw["NewField"] == "v"


@pytest.mark.parametrize(
    ("name", "event_name", "model"),
    [
        ("subscribe", "Subscribe", SubscribeEvent),
        ("scan", "scan", ScanEvent),
        ("template_send_job_finish", "templatesendjobfinish", TemplateSendJobFinishEvent),
        ("mass_send_job_finish", "MassSendJobFinish", MassSendJobFinishEvent),
        ("subscribe_msg_popup_event", "SUBSCRIBE_MSG_POPUP_EVENT", SubscribeMsgPopupEvent),
    ],
)
def test_event_names_match_case_insensitively(name: str, event_name: str, model: type[CallbackEvent]) -> None:
    assert type(event_of(name, Event=event_name)) is model


def test_raw_is_a_copy_of_the_input() -> None:
    fields = fields_of("subscribe_msg_popup_event")

    event = parse_event(fields)
    fields["SubscribeMsgPopupEvent"]["List"].clear()

    assert len(event.raw["SubscribeMsgPopupEvent"]["List"]) == 2


def test_raw_shares_no_container_with_the_input() -> None:
    fields = fields_of("mass_send_job_finish")
    fields["Tags"] = ["a", {"b": ["c"]}]
    fields["Other"] = ("x", ["y"])  # not what the parser produces: copied all the same
    expected = copy.deepcopy(fields)

    event = parse_event(fields)
    fields["ArticleUrlResult"]["ResultList"]["item"][0]["ArticleIdx"] = "9"
    fields["CopyrightCheckResult"].clear()
    fields["Tags"][1]["b"].append("d")
    fields["Other"][1].append("z")
    fields["ToUserName"] = "changed"

    assert event.raw == expected


def test_any_mapping_is_accepted_and_left_untouched() -> None:
    fields = fields_of("subscribe_msg_popup_event")
    before = copy.deepcopy(fields)

    event = parse_event(MappingProxyType(fields))

    assert fields == before
    assert event.raw == fields
    assert type(event.raw) is dict


@pytest.mark.parametrize("name", sorted(path.stem for path in WECHAT_EVENTS_DIR.glob("*.xml")))
def test_a_json_dump_validates_back_to_the_same_event(name: str) -> None:
    # Queue consumers receive model_dump(mode="json") and rebuild the typed event from it.
    event = event_of(name)

    rebuilt = type(event).model_validate(event.model_dump(mode="json"))

    assert rebuilt == event
    assert rebuilt.dedupe_key == event.dedupe_key


def test_events_are_immutable() -> None:
    event = event_of("subscribe")
    with pytest.raises(ValueError, match="frozen"):
        event.from_user_name = "someone else"


# --- dedupe keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("text_message", "msg:7352043817265098241"),
        ("image_message", "msg:24498291741523744"),
        ("template_send_job_finish", "job:TEMPLATESENDJOBFINISH:3147483704915226625"),
        ("mass_send_job_finish", "job:MASSSENDJOBFINISH:1000000861"),
        ("publish_job_finish", "publish:2247503051"),
        ("freepublish_job_finish", "publish:2247503052"),
        ("subscribe", f"evt:{OPENID}:1714036504:subscribe"),
        ("scan", f"evt:{OPENID}:1714037010:SCAN"),
        ("unsubscribe", f"evt:{OPENID}:1714122904:unsubscribe"),
        ("subscribe_msg_popup_event", f"evt:{OPENID}:1714040100:subscribe_msg_popup_event"),
        ("subscribe_msg_sent_event", f"evt:{OPENID}:1714130455:subscribe_msg_sent_event"),
        ("unknown_event", f"evt:{OPENID}:1714142000:user_authorization_revoke"),
    ],
)
def test_dedupe_keys(name: str, key: str) -> None:
    actual = event_of(name).dedupe_key
    if key.startswith("evt:"):
        # Events add a digest of their fields: <key>:<16 hex>.
        assert re.fullmatch(re.escape(key) + ":[0-9a-f]{16}", actual), actual
    else:
        assert actual == key


def test_event_retry_has_the_same_key_and_a_different_event_in_the_same_second_does_not() -> None:
    first = event_of("subscribe_msg_popup_event")
    assert event_of("subscribe_msg_popup_event").dedupe_key == first.dedupe_key
    fields = fields_of("subscribe_msg_popup_event")
    fields["SubscribeMsgPopupEvent"]["List"][0]["PopupScene"] = "1"
    other = parse_event(fields)
    assert other.create_time == first.create_time
    assert other.dedupe_key != first.dedupe_key


def test_job_dedupe_key_ignores_the_case_wechat_used() -> None:
    event = event_of("template_send_job_finish", Event="TemplateSendJobFinish")
    assert event.dedupe_key == "job:TEMPLATESENDJOBFINISH:3147483704915226625"


def test_retries_of_the_same_event_share_a_key_and_other_events_do_not() -> None:
    first = event_of("subscribe")
    retry = event_of("subscribe")
    later = event_of("subscribe", CreateTime="1714036505")
    assert first.dedupe_key == retry.dedupe_key
    assert first.dedupe_key != later.dedupe_key


# --- invalid events ---------------------------------------------------------------------------


def invalid(fields: dict[str, Any]) -> MalformedCallback:
    with pytest.raises(MalformedCallback) as exc_info:
        parse_event(fields)
    assert exc_info.value.reason == "invalid_event"
    assert exc_info.value.status == 400
    return exc_info.value


@pytest.mark.parametrize("missing", ["FromUserName", "CreateTime", "MsgType"])
def test_missing_common_fields_are_invalid(missing: str) -> None:
    fields = fields_of("subscribe")
    del fields[missing]
    invalid(fields)


def test_empty_from_user_name_is_invalid() -> None:
    invalid(fields_of("subscribe", FromUserName=""))


@pytest.mark.parametrize(
    "create_time", ["yesterday", "１７１４０３６５０４", "1_714_036_504", " 1714036504", "+1714036504"]
)
def test_create_time_that_is_not_ascii_digits_is_refused(create_time: str) -> None:
    with pytest.raises(InvalidInput) as exc_info:
        parse_event(fields_of("subscribe", CreateTime=create_time))
    assert exc_info.value.reason == "bad_create_time"
    assert exc_info.value.status == 400


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("template_send_job_finish", "MsgID"),
        ("template_send_job_finish", "Status"),
        ("mass_send_job_finish", "MsgID"),
        ("publish_job_finish", "PublishEventInfo"),
        ("text_message", "MsgId"),
    ],
)
def test_missing_type_specific_fields_are_invalid(name: str, missing: str) -> None:
    fields = fields_of(name)
    del fields[missing]
    invalid(fields)


def test_invalid_event_message_does_not_echo_the_openid() -> None:
    fields = fields_of("template_send_job_finish")
    del fields["Status"]
    error = invalid(fields)
    assert OPENID not in error.message
    assert "Status" in error.message
