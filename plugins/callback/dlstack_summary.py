"""Callback: at the end of a run, one paragraph naming each host that failed, where and why.

With many hosts, one bad host fails alone (the others go on; ``dlstack_all_or_nothing: true`` stops
them all), so the run's end must say plainly which hosts to look at. Enabled in ansible.cfg
(``callbacks_enabled``); prints nothing when every host succeeded.
"""

from __future__ import annotations

from typing import Any

from ansible import constants
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: dlstack_summary
type: aggregate
short_description: Name the failed hosts, the task and the message at the end of the run
description:
  - Records the last failure (or unreachability) of each host, the one that stopped it, and prints
    them after the play recap. A failure a rescue block handled is replaced by the rescue's own
    failure, whose message says what to do.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""


def _message(result: dict[str, Any]) -> str:
    text = str(result.get("msg") or result.get("stderr") or result.get("reason") or "").strip()
    first = text.splitlines()[0] if text else "(no message)"
    return first if len(first) <= 300 else first[:297] + "..."


class CallbackModule(CallbackBase):
    """Collect the failure that stopped each host; print them at the end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "dlstack_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, tuple[str, str]] = {}

    def _record(self, result: Any, kind: str) -> None:
        # the last one: a host stops at its first unhandled failure, and a rescued one is followed by the rescue's
        self.failures[result._host.get_name()] = (f"{kind} in '{result._task.get_name()}'", _message(result._result))

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._record(result, "failed")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        stdout = str(constants.config.get_config_value("DEFAULT_STDOUT_CALLBACK"))
        if stdout.rsplit(".", 1)[-1] in {"json", "yaml_json", "tree", "junit"}:
            return  # machine-read output: a paragraph of text would break it
        # a failure a rescue block handled is not a failed host: the recap's counts decide
        failed = {
            host: self.failures[host]
            for host in sorted(self.failures)
            if stats.summarize(host)["failures"] or stats.summarize(host)["unreachable"]
        }
        if not failed:
            return
        self._display.banner("DLSTACK SUMMARY")
        total = len(stats.processed)
        heading = f"{len(failed)} of {total} host(s) did not finish; the others went on:"
        self._display.display(heading, color="bright red")
        for host, (where, message) in failed.items():
            self._display.display(f"  {host}: {where}: {message}", color="red")
        self._display.display("Fix them and rerun (with --limit, or for all hosts: the others change nothing).")
