"""The CLI is an HTTP client: it does not import the domain package (start-up time, and it talks
to a deployed API of any version), so its choices mirror the API's enums. These must not drift."""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

import pytest

from wxreach.reach import accounts, broadcasts, compliance
from wxreach.wechat import keywords
from wxreach_cli import accounts as cli_accounts
from wxreach_cli import broadcasts as cli_broadcasts


@pytest.mark.parametrize(
    ("cli", "api"),
    [
        (cli_accounts.AccountType, accounts.AccountType),
        (cli_accounts.EncryptionMode, accounts.EncryptionMode),
        (cli_accounts.LintLevel, compliance.LintLevel),
        (cli_accounts.Channel, keywords.Channel),
        (cli_broadcasts.BroadcastChannel, broadcasts.BroadcastChannel),
        (cli_broadcasts.BroadcastState, broadcasts.BroadcastState),
        (cli_broadcasts.SegmentFormat, broadcasts.SegmentFormat),
    ],
)
def test_cli_choices_are_the_apis(cli: type[StrEnum], api: type[StrEnum]) -> None:
    assert [m.value for m in cli] == [m.value for m in api]


def test_cli_mass_types_are_the_apis() -> None:
    assert [m.value for m in cli_broadcasts.MassType] == list(get_args(broadcasts.MassType))


def test_cli_final_states_are_the_apis() -> None:
    assert {str(s) for s in broadcasts.FINAL_STATES} == cli_broadcasts.FINAL_STATES
