"""tools/uv_sources.py: the Makefile's uv installs from the package sources this machine's pip is configured with."""

import importlib.util
import subprocess
import sys

from s2lpo_testing import ROOT

spec = importlib.util.spec_from_file_location("uv_sources", ROOT / "tools" / "uv_sources.py")
uv_sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_sources)


def test_each_pip_source_becomes_uv_flags():
    flags = uv_sources.uv_flags({"find-links": "/opt/wheels", "extra-index-url": "file:///a file:///b",
                                 "constraint": "/etc/c.txt", "cert": "/etc/ssl/x.crt", "timeout": "180"})
    assert flags == ["--extra-index-url", "file:///a", "--extra-index-url", "file:///b", "--find-links",
                     "/opt/wheels", "--constraint", "/etc/c.txt", "--index-strategy", "unsafe-best-match"]
    assert uv_sources.uv_flags({"index-url": "https://m/simple", "no-index": "false"}) == ["--index-url",
                                                                                          "https://m/simple"]
    assert uv_sources.uv_flags({"no-index": "1", "find-links": "/w"})[:3] == ["--find-links", "/w", "--no-index"]
    assert uv_sources.uv_flags({}) == []


def test_pip_variables_win_over_pip_files(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /from/file\nextra-index-url = file:///mirror\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/from/env")
    found = uv_sources.pip_config()
    assert found["find-links"] == "/from/env" and found["extra-index-url"] == "file:///mirror"
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "uv_sources.py")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[out.index("--find-links") + 1] == "/from/env"
