#!/usr/bin/python
"""Refresh one apt source on its own and take it out again when apt refuses its signature."""

from __future__ import annotations

import re
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: dlstack_apt_source
short_description: Check that apt accepts the signature of one source, and take the source out when it does not
description:
  - Runs C(apt-get update) for the one source file O(path) (its own package lists only, the others
    are left as they are).
  - When apt refuses the repository's signature (C(NO_PUBKEY), C(BADSIG), C(EXPKEYSIG), an
    unsigned or invalidly signed C(InRelease)), removes O(path) and O(keyring), so that the host's
    next C(apt-get update) (unattended-upgrades, the user's own) does not fail on a source nothing
    can be installed from, and fails with a message that names the source, apt's reason and
    O(settings).
  - Other errors (an unreachable mirror) are returned as warnings and change nothing; the source stays,
    and the apt task that needs it reports the failure.
  - Does nothing when O(path) does not exist (check mode on a host that never had the source).
options:
  path:
    description: The source file (deb822 C(.sources) or one-line C(.list)).
    type: path
    required: true
  keyring:
    description: The keyring its C(Signed-By) names, removed with it.
    type: path
    required: true
  settings:
    description: The settings a user changes when the vendor rotates its key or a mirror re-signs.
    type: str
    required: true
author: dlstack
"""

RETURN = r"""
refused:
  description: apt's lines that refuse the signature (empty when apt accepted it).
  type: list
  elements: str
  returned: always
"""

SIGNATURE_ERROR = re.compile(r"NO_PUBKEY|BADSIG|EXPKEYSIG|REVKEYSIG|is not signed|GPG error|signatures were invalid")


def refusals(output: str) -> list[str]:
    """apt's lines that say it did not accept the source's signature."""
    return list(dict.fromkeys(line.strip() for line in output.splitlines() if SIGNATURE_ERROR.search(line)))


def update_argv(path: str) -> list[str]:
    """``apt-get update`` for this one source, keeping the other sources' lists."""
    return ["apt-get", "update", "-o", f"Dir::Etc::SourceList={path}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", "APT::Get::List-Cleanup=0"]  # fmt: skip


def refusal_message(path: str, keyring: str, settings: str, refused: list[str], removed: bool) -> str:
    what = "taken out again" if removed else "would be taken out (check mode)"
    return (
        f"apt refused the source {path}: its index is not signed by the key in {keyring} ({'; '.join(refused)}). "
        f"The source and its key were {what}, so that the host's other updates keep working; nothing was "
        f"installed from it. If the vendor rotated its signing key, or a mirror re-signs the repository with "
        f"its own, set {settings} to the new key and its fingerprint."
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "keyring": {"type": "path", "required": True},
            "settings": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    path, keyring, settings = (module.params[k] for k in ("path", "keyring", "settings"))
    if not Path(path).exists():
        module.exit_json(changed=False, refused=[])
    rc, out, err = module.run_command(update_argv(path), environ_update={"LC_ALL": "C"})
    output = out + "\n" + err
    refused = refusals(output)
    if not refused:
        warnings = [line for line in output.splitlines() if line.startswith(("E:", "W:"))] if rc else []
        for warning in warnings:
            module.warn(f"apt-get update for {path}: {warning}")
        module.exit_json(changed=False, refused=[])
    if not module.check_mode:
        for doomed in (path, keyring):
            Path(doomed).unlink(missing_ok=True)
    module.fail_json(msg=refusal_message(path, keyring, settings, refused, not module.check_mode), changed=True,
                     refused=refused)  # fmt: skip


if __name__ == "__main__":
    main()
