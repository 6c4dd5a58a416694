from __future__ import annotations

import pytest
from pydantic import ValidationError

from wxreach.settings import Settings


def test_settings_read_wxreach_variables() -> None:
    settings = Settings.from_environ(
        {
            "WXREACH_QUOTA_TABLE": "q",
            "WXREACH_REPLAY_WINDOW_SECONDS": "0",
            "WXREACH_DEDUPE_TTL_SECONDS": "120",
        }
    )
    assert settings.quota_table == "q"
    assert settings.replay_window_seconds == 0
    assert settings.dedupe_ttl_seconds == 120


def test_empty_variables_fall_back_to_defaults() -> None:
    assert Settings.from_environ({"WXREACH_REPLAY_WINDOW_SECONDS": ""}).replay_window_seconds == 300


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings.from_environ({"WXREACH_REPLAY_WINDOW_SECONDS": "-1"})


def test_dedupe_must_outlive_the_replay_window() -> None:
    with pytest.raises(ValidationError, match="dedupe_ttl_seconds"):
        Settings.from_environ({"WXREACH_REPLAY_WINDOW_SECONDS": "600", "WXREACH_DEDUPE_TTL_SECONDS": "300"})
    assert Settings.from_environ({"WXREACH_REPLAY_WINDOW_SECONDS": "0", "WXREACH_DEDUPE_TTL_SECONDS": "60"})
