"""`python -m local.sandbox --host 127.0.0.1 --port 8900 --seed 1`"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from local.sandbox import limits
from local.sandbox.config import SandboxConfig
from local.sandbox.server import SandboxServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m local.sandbox", description="WeChat API sandbox")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900, help="0 picks a free port (printed on start)")
    p.add_argument("--seed", default="0", help="seeds ids, nonces and fault injection")
    p.add_argument(
        "--token-ttl", type=int, default=limits.DEFAULT_TOKEN_TTL_S, help="access token lifetime (s)"
    )
    p.add_argument("--callback-timeout", type=float, default=limits.CALLBACK_TIMEOUT_S)
    p.add_argument("--callback-retries", type=int, default=limits.CALLBACK_RETRIES)
    p.add_argument("--callback-retry-delay", type=float, default=1.0, help="real seconds between attempts")
    p.add_argument("--callback-workers", type=int, default=4)
    p.add_argument(
        "--strict-datetime", action="store_true", help="reject ISO date-times in time/date keywords"
    )
    p.add_argument(
        "--wall-clock-callbacks",
        action="store_true",
        help="stamp callbacks with real time, not the sandbox clock",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    config = SandboxConfig(
        token_ttl_s=args.token_ttl,
        callback_timeout_s=args.callback_timeout,
        callback_retries=args.callback_retries,
        callback_retry_delay_s=args.callback_retry_delay,
        callback_workers=args.callback_workers,
        accept_iso_datetime=not args.strict_datetime,
        wall_clock_callbacks=args.wall_clock_callbacks,
        verbose=args.verbose,
    )
    server = SandboxServer(args.host, args.port, seed=seed, config=config)

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.request_shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"wechat sandbox listening on {server.url} (seed {seed})", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
