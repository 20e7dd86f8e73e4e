"""The admin API's list of calls in progress names each call's client, flow and current node (a real daemon)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ivr.simulator.lab import IvrLab
from ivr.simulator.virtual import run_virtual

REPO = Path(__file__).resolve().parents[2]


def test_active_calls_show_the_node_each_call_is_in() -> None:
    async def main() -> list[list[dict[str, object]]]:
        seen = []
        async with IvrLab(config=REPO / "configs" / "ivr.yaml") as lab:
            assert lab.server is not None
            call = await lab.call("2000", at=dt.datetime(2026, 11, 24, 10, 0))
            await call.expect_prompt("welcome")
            seen.append(lab.server.active_calls())
            await call.press("2")
            await call.expect_prompt("main-menu")
            seen.append(lab.server.active_calls())
            await call.finish()
            seen.append(lab.server.active_calls())
        return seen

    first, second, after = run_virtual(main)
    where = [(c["client"], c["flow"], c["node"]) for c in first]
    assert where == [("vitosha-telecom", "vitosha-main", "choose-language")]
    assert [c["node"] for c in second] == ["main-menu"]
    assert after == []
