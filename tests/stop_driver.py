"""A stop signal at every line of the runner's batch loop: run as a script by test_stop.py.

    python tests/stop_driver.py MODE OUT.jsonl

Installs langbench.stop as the CLI does, then, for N = 1, 2, … until N passes the last line:
a three-batch "sweep" through agents.run (fake agents: two exit at once, the third would run
60 s), with SIGTERM sent to this process (kill(2), process-directed, as `kill PID` sends it) at
the N-th line executed in langbench/run/agents.py, langbench/stop.py or this loop (up to the third
batch's wait). MODE `plain`
sends it from the line itself; MODE `finalizer` sends it from inside a `__del__` run at that
line, where CPython drops the KeyboardInterrupt its handler raises ("Exception ignored in").
N = 0: sent from another thread one second into the third batch's wait. One JSON line per N.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

from langbench import stop
from langbench.run import agents

TRACED = {agents.__file__, stop.__file__, __file__}
MAIN_PID = os.getpid()
AGENTS = [["sh", "-c", "exit 0"], ["sh", "-c", "exit 0"], ["sh", "-c", "exec sleep 60"]]


class Bomb:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the finalizer
            pass


class Trigger:
    def __init__(self, n: int, mode: str):
        self.n, self.mode, self.count, self.sent, self.where = n, mode, 0, None, None
        self.past = False

    def past_the_end(self) -> None:
        if self.sent is None:
            self.past = True
            for child in psutil.Process().children():
                child.kill()

    def send(self, where: str) -> None:
        self.sent, self.where = time.monotonic(), where
        if self.mode == "finalizer":
            Bomb()  # dies at once: its __del__ sends the signal
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    def trace(self, frame, event, arg):
        if (frame.f_code.co_filename not in TRACED or os.getpid() != MAIN_PID  # not the forked child
                or frame.f_code.co_name in ("__del__", "send", "trace", "local", "_die_with_runner")):
            return None

        def local(frame, event, arg):
            if event == "line" and self.sent is None:
                self.count += 1
                if self.count == self.n:
                    self.send(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            return local
        return local


def sweep(work: Path, trigger: Trigger) -> dict:
    batches = 0
    for i, cmd in enumerate(AGENTS):
        agents.command = lambda agent, cmd=cmd: cmd
        if i == 2 and trigger.n == 0:
            threading.Timer(1.0, trigger.send, ("another thread, during the wait",)).start()
        elif i == 2:  # N is past the lines before the wait: end the agent, and the loop
            threading.Timer(2.0, trigger.past_the_end).start()
        batches += 1
        agents.run("python", "http://127.0.0.1:9", work / "jobs.json", work / f"b{i}.jsonl", timeout=300)
    stop.check()  # as the CLI does before it exits
    return {"outcome": "finished", "batches": batches}


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    work = out.parent
    (work / "jobs.json").write_text("{}")
    stop.install()
    me = psutil.Process()
    with open(out, "w") as f:
        n = 0
        while True:
            stop.reset()
            trigger = Trigger(n, mode)
            started = time.monotonic()
            sys.settrace(trigger.trace)
            try:
                result = sweep(work, trigger)
            except KeyboardInterrupt:
                result = {"outcome": "interrupted"}
            finally:
                sys.settrace(None)
            ended = time.monotonic()
            if trigger.past:
                break  # past the last line before the third agent's wait: nothing was sent
            result.update(n=n, where=trigger.where, seconds=ended - started,
                          after_signal_s=ended - trigger.sent if trigger.sent else None,
                          alive=[c.pid for c in me.children() if c.status() != psutil.STATUS_ZOMBIE])
            f.write(json.dumps(result) + "\n")
            f.flush()
            for c in me.children():
                c.kill()
            n += 1


if __name__ == "__main__":
    main()
