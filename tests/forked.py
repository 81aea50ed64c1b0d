"""Commands in processes of their own that do not each spend seconds importing torch.

A test that signals `harmosearch index` (kill -9, Ctrl-C, SIGTERM) needs the command in a process
of its own, and a new Python process spends about five seconds on this machine importing torch
and open_clip before the command starts. `run_command` forks the command instead from
multiprocessing's fork server, a process that has imported them once and has run no numeric work
(so no thread pool is copied into the child). What the child then does is what
`python -c SCRIPT ARGV` does: its own process, signals, exit status and files; its stdout and
stderr go to files the returned handle reads. One difference: what the PRELOADED modules read
from the environment when imported comes from the server's; a test of such a switch (the
Hugging Face offline one) starts a new Python instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

PRELOADED = ["torch", "open_clip", "torchvision.ops", "harmosearch.cli", "harmosearch.indexing"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOADED)


def _child(script: str, argv: list[str], env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a process started from a shell
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-c", *argv]
    exec(compile(script, "<forked>", "exec"), {"__name__": "__main__"})


class ForkedCommand:
    """The subset of subprocess.Popen the tests use, for a command run by run_command; its
    stdout and stderr read as Popen's pipes do, text, line by line or what is left."""

    def __init__(self, script: str, argv: list[str], env: dict[str, str]) -> None:
        handles = [tempfile.mkstemp(prefix="forked-", suffix=part) for part in (".out", ".err")]
        for fd, _ in handles:
            os.close(fd)
        out, err = (path for _, path in handles)
        self._process = _CONTEXT.Process(target=_child, args=(script, argv, env, out, err))
        self._process.start()
        self.pid = self._process.pid
        self.stdout, self.stderr = _Reader(Path(out), self), _Reader(Path(err), self)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise TimeoutError(f"the forked command {self.pid} is still running after {timeout} s")
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()

    def send_signal(self, sent: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sent)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        for reader in (self.stdout, self.stderr):
            reader.path.unlink(missing_ok=True)


class _Reader:
    """One of a forked command's output files, read from where the last read stopped."""

    def __init__(self, path: Path, command: ForkedCommand) -> None:
        self.path, self.command, self.offset = path, command, 0

    def read(self) -> str:
        data = self.path.read_bytes()[self.offset :]
        self.offset += len(data)
        return data.decode()

    def readline(self, timeout: float = 120) -> str:
        """The next whole line, waiting for it while the command runs; at its end, what is left."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.command.poll() is not None
            data = self.path.read_bytes()[self.offset :]
            end = data.find(b"\n") + 1
            if end or ended or time.monotonic() > deadline:
                line = data[:end] if end else data
                self.offset += len(line)
                return line.decode()
            time.sleep(0.01)


# `python -m harmosearch ARGV` as a script
HARMOSEARCH = "from harmosearch.cli import main\nmain()\n"


def run_command(script: str, argv: list[str], env: dict[str, str] | None = None) -> ForkedCommand:
    """`python -c script argv...` with `env` (default: this process's), forked from the server."""
    return ForkedCommand(script, argv, dict(os.environ if env is None else env))
