"""`python -m local.stack` (what `make local` runs): start, print the summary, run until Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from local.stack.settings import Settings, build_parser
from local.stack.stack import LocalStack, StackError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stdout,
    )
    if not args.verbose:
        for noisy in ("botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.from_namespace(args)
    stop = threading.Event()
    starting = True
    received: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        first = not received
        received.append(signum)
        stop.set()
        if first:
            with contextlib.suppress(OSError):  # stdout may be a closed pipe by now
                print(f"\n{signal.Signals(signum).name}: stopping the local stack...", flush=True)
        if starting and first:
            # start() may be waiting for moto or a worker's import: abort it where it stands; its own
            # clean-up stops what already runs. Later signals only set the event, so they cannot
            # interrupt that clean-up.
            raise StartInterrupted(signum)

    stack = LocalStack(settings)
    # Installed before start so a Ctrl-C during start-up still tears everything down.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        try:
            stack.start()
        finally:
            starting = False
    except StackError as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr, flush=True)
        return 2
    except StartInterrupted as interrupted:
        stack.stop()  # start() stopped everything already; a signal may have come after it returned
        print("local stack start-up aborted.", flush=True)
        return 128 + interrupted.signum
    try:
        if stop.is_set():
            return 0
        print(stack.summary(), flush=True)
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        stack.stop()
    print("local stack stopped.", flush=True)
    return 0


class StartInterrupted(BaseException):
    """SIGINT/SIGTERM during start-up (a BaseException, like KeyboardInterrupt: nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
