"""Print the ``uv pip install`` flags that give uv the package sources this machine's pip is configured with.

uv reads no pip configuration, but a machine's pip.conf and PIP_* variables say where its wheels come from (a
local wheel directory with the CPU build of torch, mirrors, constraints). The Makefile installs with uv, so it
passes these on. Standard library only: it runs before anything is installed.

    python tools/uv_sources.py   ->   --find-links /opt/wheels --extra-index-url file:///opt/pypi/simple ...
"""

from __future__ import annotations

import re
import subprocess
import sys

# pip's option -> uv's (each value its own flag); an option uv has no flag for is left out
FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint", "no-index": "--no-index"}
LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


def pip_config() -> dict[str, str]:
    """pip's effective configuration (``pip config list``)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():  # the files from the least to the most binding; PIP_* variables (:env:) win
        m = LINE.match(line.strip())
        if m:
            (env if m["scope"] == ":env:" else files)[m["key"]] = m["value"]
    return {**files, **env}


def uv_flags(config: dict[str, str]) -> list[str]:
    flags: list[str] = []
    for key, flag in FLAGS.items():
        value = config.get(key)
        if value is None:
            continue
        if key == "no-index":
            flags += [flag] if value.lower() in ("1", "true", "yes", "on") else []
            continue
        for v in value.split():
            flags += [flag, v]
    if "extra-index-url" in config or "find-links" in config:
        flags += ["--index-strategy", "unsafe-best-match"]  # pip's choice: the best version over every source
    return flags


if __name__ == "__main__":
    print(" ".join(uv_flags(pip_config())))
