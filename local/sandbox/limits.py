"""Every number the sandbox enforces, with the section of docs/reference/wechat-api.md it comes from.

Keeping them here means a rule changes in one place, and docs/sandbox.md can point at one file.
"""

from __future__ import annotations

from typing import Final

# §1.1 / §1.2 access tokens
DEFAULT_TOKEN_TTL_S: Final = 7200
TOKEN_OVERLAP_S: Final = 300  # a superseded token keeps working this long
TOKEN_DAILY_LIMIT: Final = 2000  # GET /cgi-bin/token calls per account per day
STABLE_ROTATE_BEFORE_EXPIRY_S: Final = 300  # so a returned stable token always has expires_in >= 300
STABLE_FORCE_REFRESH_PER_DAY: Final = 20
STABLE_FORCE_REFRESH_MIN_INTERVAL_S: Final = 30

# §2 template messages
TEMPLATE_DAILY_QUOTA: Final = 100_000
TEMPLATE_CLIENT_MSG_ID_WINDOW_S: Final = 600

# §2.3 keyword limits (characters, not bytes)
THING_MAX: Final = 20
NUMBER_MAX_DIGITS: Final = 32
LETTER_MAX: Final = 32
SYMBOL_MAX: Final = 5
CHARACTER_STRING_MAX: Final = 32
AMOUNT_MAX_DIGITS_TEMPLATE: Final = 12
AMOUNT_MAX_DIGITS_SUBSCRIPTION: Final = 10
PHONE_NUMBER_MAX: Final = 17
CAR_NUMBER_MAX: Final = 8
NAME_MAX_CHINESE: Final = 10
NAME_MAX_LATIN: Final = 20
PHRASE_MAX: Final = 5
CONST_MAX: Final = 20

# §4 mass send
MASS_MIN_RECIPIENTS: Final = 2
MASS_MAX_RECIPIENTS: Final = 10_000
MASS_CLIENTMSGID_MAX_BYTES: Final = 64
MASS_CLIENTMSGID_WINDOW_S: Final = 24 * 3600
MASS_CLIENTMSGID_TOO_FAST_S: Final = 60
MASS_PER_FOLLOWER_PER_MONTH: Final = 4
SUBSCRIPTION_ACCOUNT_SENDALL_PER_DAY: Final = 1
# §4.1 service accounts: is_to_all=true sends (they enter the history list), console sends included
SERVICE_TO_ALL_PER_DAY: Final = 1
SERVICE_TO_ALL_PER_MONTH: Final = 4
MASS_CALLS_PER_MINUTE: Final = 60
MASS_API_CALLS_PER_DAY: Final = 100  # §4.1 "高级群发接口": accepted sendall + send jobs per China day
PREVIEW_TOWXNAME_PER_DAY: Final = 100
# speed level -> realspeed (万 messages per minute)
MASS_SPEEDS: Final = {0: 80, 1: 60, 2: 45, 3: 30, 4: 10}
DEFAULT_MASS_SPEED: Final = 0

# user/get and user/tag/get page size
USER_PAGE_SIZE: Final = 10_000
# draft/batchget and freepublish/batchget accept count 1..20
BATCHGET_MAX: Final = 20

# §5.3 callbacks: answer within 5 s, otherwise WeChat retries (3 more attempts)
CALLBACK_TIMEOUT_S: Final = 5.0
CALLBACK_RETRIES: Final = 3

# §5.4 EncodingAESKey: 43 chars of [A-Za-z0-9]
ENCODING_AES_KEY_LEN: Final = 43
