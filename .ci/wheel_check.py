"""Publishing check: the built wheel, installed alone in a fresh venv, runs `pat demo`
and every curl line the demo prints gets the status it announces.

Run by `.ci/run` after `twine check`: ``python .ci/wheel_check.py dist/*.whl``.
Catches what the editable install of the test run hides: a file left out of the
wheel (templates, scripts, the embedded example), a dependency missing from an extra.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

_EXPECT = re.compile(r"^# expect (\d{3}): (.*)$")
_BASE = re.compile(r"demo: (http://\S+)")


def request(words: list[str]) -> int:
    """Run one of the demo's ``curl -i ...`` lines with urllib; return the status."""
    method, headers, body, url = "GET", {}, None, words[-1]
    args = iter(words[2:-1])
    for word in args:
        if word == "-X":
            method = next(args)
        elif word == "-H":
            name, _, value = next(args).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(args).encode()
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def main(wheel: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"{Path(wheel).resolve()}[starlette]"], check=True, cwd=tmp)
        demo = subprocess.Popen(
            [str(venv / "bin" / "pat"), "--store", f"sqlite:///{tmp}/demo.db", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,  # not the checkout: the wheel alone must do
        )
        assert demo.stdout is not None
        try:
            lines: list[str] = []
            deadline = time.monotonic() + 60
            while "management API" not in "".join(lines[-1:]):
                line = demo.stdout.readline()
                if not line or time.monotonic() > deadline:
                    raise SystemExit("wheel check: pat demo did not start:\n" + "".join(lines) + line)
                lines.append(line)
            checked = 0
            for comment, command in itertools.pairwise(lines):
                if (expect := _EXPECT.match(comment.strip())) is None:
                    continue
                status = request(shlex.split(command))
                if status != int(expect.group(1)):
                    raise SystemExit(f"wheel check: {command.strip()} gave {status}, the demo says {expect.group(0)}")
                checked += 1
            if checked < 3:
                raise SystemExit("wheel check: the demo printed no curl lines:\n" + "".join(lines))
            print(f"wheel check: {Path(wheel).name} in a fresh venv, pat demo: {checked} requests as announced")
        finally:
            demo.terminate()
            demo.wait(10)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python .ci/wheel_check.py dist/<wheel>.whl")
    main(sys.argv[1])
