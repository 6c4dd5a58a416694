"""XML bodies of the pushes WeChat sends to a webhook (§2.4, §3.3, §4.3, §5.2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from local.sandbox.model import MassJob

# A field value: str → CDATA, int → bare, list of dicts → repeated child elements.
Fields = Sequence[tuple[str, Any]]


def cdata(text: str) -> str:
    # a literal "]]>" would end the section early; split it across two sections
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _render(fields: Fields) -> str:
    out: list[str] = []
    for name, value in fields:
        if isinstance(value, bool):
            out.append(f"<{name}>{int(value)}</{name}>")
        elif isinstance(value, int):
            out.append(f"<{name}>{value}</{name}>")
        elif isinstance(value, str):
            out.append(f"<{name}>{cdata(value)}</{name}>")
        else:  # nested: a sequence of (name, value) pairs
            out.append(f"<{name}>{_render(value)}</{name}>")
    return "".join(out)


def xml_document(fields: Fields) -> str:
    return "<xml>" + _render(fields) + "</xml>"


def _header(gh: str, openid: str, create_time: int, msg_type: str = "event") -> list[tuple[str, Any]]:
    return [("ToUserName", gh), ("FromUserName", openid), ("CreateTime", create_time), ("MsgType", msg_type)]


def template_send_job_finish(gh: str, openid: str, create_time: int, msgid: int, status: str) -> str:
    return xml_document(
        [
            *_header(gh, openid, create_time),
            ("Event", "TEMPLATESENDJOBFINISH"),
            ("MsgID", msgid),
            ("Status", status),
        ]
    )


def subscribe_msg_popup(gh: str, openid: str, create_time: int, items: Sequence[tuple[str, str, int]]) -> str:
    lists = [
        ("List", [("TemplateId", tid), ("SubscribeStatusString", status), ("PopupScene", scene)])
        for tid, status, scene in items
    ]
    return xml_document(
        [
            *_header(gh, openid, create_time),
            ("Event", "subscribe_msg_popup_event"),
            ("SubscribeMsgPopupEvent", lists),
        ]
    )


def subscribe_msg_change(gh: str, openid: str, create_time: int, items: Sequence[tuple[str, str]]) -> str:
    lists = [("List", [("TemplateId", tid), ("SubscribeStatusString", status)]) for tid, status in items]
    return xml_document(
        [
            *_header(gh, openid, create_time),
            ("Event", "subscribe_msg_change_event"),
            ("SubscribeMsgChangeEvent", lists),
        ]
    )


def subscribe_msg_sent(
    gh: str, openid: str, create_time: int, items: Sequence[tuple[str, int, int, str]]
) -> str:
    lists = [
        ("List", [("TemplateId", tid), ("MsgID", msgid), ("ErrorCode", code), ("ErrorStatus", status)])
        for tid, msgid, code, status in items
    ]
    return xml_document(
        [
            *_header(gh, openid, create_time),
            ("Event", "subscribe_msg_sent_event"),
            ("SubscribeMsgSentEvent", lists),
        ]
    )


def mass_send_job_finish(gh: str, from_openid: str, create_time: int, job: MassJob) -> str:
    fields: list[tuple[str, Any]] = [
        *_header(gh, from_openid, create_time),
        ("Event", "MASSSENDJOBFINISH"),
        ("MsgID", job.msg_id),
        ("Status", job.event_status),
        ("TotalCount", job.total),
        ("FilterCount", job.filter_count),
        ("SentCount", job.sent),
        ("ErrorCount", job.errors),
    ]
    if job.msgtype == "mpnews":
        # originality check is not modelled: every article passes (AuditState 2 = not original)
        checks = [
            (
                "item",
                [
                    ("ArticleIdx", idx),
                    ("UserDeclareState", 0),
                    ("AuditState", 2),
                    ("OriginalArticleUrl", ""),
                    ("OriginalArticleType", 0),
                    ("CanReprint", 0),
                    ("NeedReplaceContent", 0),
                    ("NeedShowReprintSource", 0),
                ],
            )
            for idx in range(1, len(job.article_urls) + 1)
        ]
        fields.append(
            (
                "CopyrightCheckResult",
                [("Count", len(checks)), ("ResultList", checks), ("CheckState", 2)],
            )
        )
        urls = [
            ("item", [("ArticleIdx", idx), ("ArticleUrl", url)])
            for idx, url in enumerate(job.article_urls, start=1)
        ]
        fields.append(("ArticleUrlResult", [("Count", len(urls)), ("ResultList", urls)]))
    return xml_document(fields)


def user_subscribe(gh: str, openid: str, create_time: int, scene: str | None, ticket: str | None) -> str:
    fields = [*_header(gh, openid, create_time), ("Event", "subscribe")]
    if scene is not None:
        fields += [("EventKey", f"qrscene_{scene}"), ("Ticket", ticket or "")]
    else:
        fields.append(("EventKey", ""))
    return xml_document(fields)


def user_scan(gh: str, openid: str, create_time: int, scene: str, ticket: str) -> str:
    return xml_document(
        [*_header(gh, openid, create_time), ("Event", "SCAN"), ("EventKey", scene), ("Ticket", ticket)]
    )


def user_unsubscribe(gh: str, openid: str, create_time: int) -> str:
    return xml_document([*_header(gh, openid, create_time), ("Event", "unsubscribe"), ("EventKey", "")])


def text_message(gh: str, openid: str, create_time: int, content: str, msg_id: int) -> str:
    return xml_document([*_header(gh, openid, create_time, "text"), ("Content", content), ("MsgId", msg_id)])
