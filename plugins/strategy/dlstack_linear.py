"""Ansible's linear strategy; hosts reached with the ``docker`` connection run their modules through
Mitogen's persistent interpreters.

ansible-core starts a new Python and unpacks a new module payload on the host for every task (about
0.3 s each, whatever the connection: docker, docker_api and local measured alike). A no-op run of
site.yml executes about 150 modules, so that floor alone is 45 s. Mitogen keeps one interpreter per
host for the whole run and sends each module once.

Only the ``docker`` connection (the sandbox's, redirected to ``mitogen_docker``) takes that path.
SSH (real lab machines, the VM tier), local, and the community collection's docker connection named
in full (the test hosts) run exactly as with ``linear``: Mitogen's action wrapper steps aside for
connections that are not its own.
Without the ``mitogen`` package installed this is plain ``linear``.
"""

from __future__ import annotations

DOCUMENTATION = """
name: dlstack_linear
short_description: linear, with Mitogen for hosts on the docker connection
description:
  - Ansible's linear strategy. Hosts whose connection is C(docker) run their modules in one
    persistent interpreter each (Mitogen's C(mitogen_docker)); every other connection is unchanged.
  - Falls back to plain linear when the mitogen package is not installed.
author: dlstack
"""

try:
    import ansible_mitogen.affinity as _mitogen_affinity
    import ansible_mitogen.strategy as _mitogen_strategy
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as _Base
except ImportError:  # the toolchain without mitogen: plain linear
    from ansible.plugins.strategy.linear import StrategyModule as _Base
else:
    # only the sandbox's connection is redirected; ssh and local stay Ansible's own
    _mitogen_strategy.REDIRECTED_CONNECTION_PLUGINS = ("docker",)
    # Mitogen pins the controller, its workers and every process they start to CPUs of its choice;
    # on a 2-CPU machine all of them to the same one, so two runs side by side (the test tiers), and
    # the SSH processes of other connections, shared one core. The scheduler places them here.
    _mitogen_affinity.policy = _mitogen_affinity.Policy()


class StrategyModule(_Base):  # type: ignore[misc,valid-type]  # one of two bases, chosen at import
    pass
