"""Cross-instance dedupe of WeChat's redeliveries, on the Powertools idempotency table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from wxreach.aws.clients import client
from wxreach.errors import WxReachError

KEY_PREFIX = "wxreach-callback"


class CallbackDeduper:
    def __init__(self, table: str, *, ttl_seconds: int) -> None:
        self._persistence = DynamoDBPersistenceLayer(table_name=table, boto3_client=client("dynamodb"))
        self._config = IdempotencyConfig(
            event_key_jmespath="dedupe_key",
            expires_after_seconds=ttl_seconds,
            raise_on_no_idempotency_key=True,
        )

    def register_lambda_context(self, context: Any) -> None:
        # Lets an in-progress record expire with the invocation, so a crashed attempt does not
        # turn WeChat's retries into "duplicates" for the whole TTL.
        self._config.register_lambda_context(context)

    def once(self, dedupe_key: str, action: Callable[[], dict[str, Any]]) -> bool:
        """Runs `action` unless this key was already processed; True when it ran now.

        Raises WxReachError (503) while another delivery of the same key is in progress.
        """
        ran = False

        def process(callback: dict[str, str]) -> dict[str, Any]:
            nonlocal ran
            result = action()
            ran = True
            return result

        guarded = idempotent_function(
            data_keyword_argument="callback",
            persistence_store=self._persistence,
            config=self._config,
            # A stable prefix: the default embeds this closure's qualified name.
            key_prefix=KEY_PREFIX,
        )(process)
        try:
            guarded(callback={"dedupe_key": dedupe_key})
        except IdempotencyAlreadyInProgressError as exc:
            # The first delivery is still running and may yet fail: acknowledging this one could
            # lose the callback, so ask WeChat to retry; by then the record is COMPLETED (or gone).
            raise WxReachError(
                "the same callback is being processed", reason="in_progress", status=503
            ) from exc
        return ran
