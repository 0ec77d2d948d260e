"""ansible.cfg's strategy: linear, with Mitogen for the docker connection only (the sandbox's), and plain
linear when the mitogen package is missing."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from file_module import load_file

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "strategy" / "dlstack_linear.py"


def load() -> ModuleType:
    module = load_file("dlstack_linear_under_test", PLUGIN)
    return module


def test_only_the_docker_connection_is_redirected() -> None:
    import ansible_mitogen.strategy

    module = load()
    # ssh (lab hosts, the VM tier), local and community.docker.docker keep Ansible's own plugins
    assert ansible_mitogen.strategy.REDIRECTED_CONNECTION_PLUGINS == ("docker",)
    assert issubclass(module.StrategyModule, ansible_mitogen.strategy.StrategyMixin)


def test_without_mitogen_it_is_plain_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible.plugins.strategy.linear import StrategyModule as Linear

    real_import = builtins.__import__

    def no_mitogen(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("ansible_mitogen"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mitogen)
    for name in [m for m in sys.modules if m.startswith("ansible_mitogen")]:
        monkeypatch.delitem(sys.modules, name)
    module = load()
    assert module.StrategyModule.__mro__[1] is Linear


def test_processes_are_not_pinned_to_cpus() -> None:
    """Mitogen's default policy pins a run's controller, workers and their children to one CPU of two."""
    import ansible_mitogen.affinity

    load()
    assert type(ansible_mitogen.affinity.policy) is ansible_mitogen.affinity.Policy
