"""`make cluster-up` on a machine without a needed tool: it names the tool, says how to
get it, and exits 2 before it touches anything (no root, no test bed needed)."""

from __future__ import annotations

import pytest

from testbed import cli, controlplane


def test_up_without_nft_and_runc_names_them_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no host tool at all
    monkeypatch.setattr(controlplane, "running", lambda: None)

    def must_not_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("up must not start anything when a tool is missing")

    monkeypatch.setattr(controlplane, "acquire", must_not_start)
    assert cli.main(["up"]) == 2
    message = capsys.readouterr().err
    assert "nft: apt-get install nftables" in message
    assert "runc: apt-get install runc" in message
    assert "podman: `make images`" in message
