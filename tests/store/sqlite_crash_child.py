"""Run by test_sqlite: handle a trace on an SQLite store and die by SIGKILL in the middle of
the first commit, at or after event START, that writes more than two statements."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from traces import CONFIG, USERS, Clock, outcome, random_events  # noqa: E402

from pushrules.runtime.store import StoredEngine  # noqa: E402
from pushrules.runtime.store.sqlite import SqliteStore  # noqa: E402


def main() -> None:
    path, seed, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = SqliteStore(path)
    clock = Clock()
    engine = StoredEngine(store, CONFIG, clock=clock)
    current = 0

    def die_mid_commit(step: int) -> None:
        if current >= start and step == 3:
            print(current, flush=True)  # the event that was being committed
            os.kill(os.getpid(), signal.SIGKILL)

    store.after_write = die_mid_commit
    for current, event in enumerate(random_events(seed, 2000, USERS)):
        clock.now = 1e9 + current
        outcome(engine, event)
    print("never died", flush=True)


if __name__ == "__main__":
    main()
