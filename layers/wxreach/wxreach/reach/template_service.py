"""Templates of an account: synced from WeChat, stored, and resolved for sending."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from wxreach.observability import logger
from wxreach.reach.ports import TemplateCatalog
from wxreach.reach.templates import Template, template_from_wechat
from wxreach.wechat.api import WeChatClient
from wxreach.wechat.keywords import Channel
from wxreach.wechat.tokens import TokenBroker

# A send to an unknown template syncs at most this often per account and channel.
RESYNC_AFTER_MISS_SECONDS = 60.0


@dataclass(frozen=True)
class SyncResult:
    channel: Channel
    stored: int
    removed: int


class TemplateService:
    def __init__(
        self,
        *,
        catalog: TemplateCatalog,
        wechat: WeChatClient,
        tokens: TokenBroker,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._wechat = wechat
        self._tokens = tokens
        self._clock = clock
        self._last_miss_sync: dict[tuple[str, Channel], float] = {}
        self._lock = threading.Lock()

    def sync(self, appid: str, channels: list[Channel] | None = None) -> list[SyncResult]:
        results = []
        for channel in channels or list(Channel):
            token = self._tokens.get(appid)
            raw = (
                self._wechat.get_all_private_template(token)
                if channel is Channel.TEMPLATE
                else self._wechat.get_subscription_templates(token)
            )
            now = datetime.now(UTC)
            templates = [
                template_from_wechat(appid, channel, item).model_copy(update={"synced_at": now})
                for item in raw
            ]
            stored, removed = self._catalog.replace_all(appid, channel, templates)
            logger.info("templates synced", appid=appid, channel=str(channel), stored=stored, removed=removed)
            results.append(SyncResult(channel=channel, stored=stored, removed=removed))
        return results

    def resolve(self, appid: str, channel: Channel, template_id: str) -> Template | None:
        """The stored template; an unknown one triggers one sync (rate-limited), then None."""
        template = self._catalog.get(appid, channel, template_id)
        if template is not None:
            return template
        with self._lock:
            last = self._last_miss_sync.get((appid, channel))
            if last is not None and self._clock() - last < RESYNC_AFTER_MISS_SECONDS:
                return None
            self._last_miss_sync[(appid, channel)] = self._clock()
        self.sync(appid, [channel])
        return self._catalog.get(appid, channel, template_id)

    def list(self, appid: str, channel: Channel | None = None) -> list[Template]:
        return self._catalog.templates(appid, channel)

    def get(self, appid: str, channel: Channel, template_id: str) -> Template | None:
        return self._catalog.get(appid, channel, template_id)
