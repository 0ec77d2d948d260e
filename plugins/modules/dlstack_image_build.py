#!/usr/bin/python
"""Ansible module: build the dlstack container images with dlstack.containers (one implementation).

Runs on the control machine (``hosts: localhost``) with the Python that has the ``dlstack``
package and the Docker SDK installed (the project's venv: ``ansible_python_interpreter:
"{{ ansible_playbook_python }}"``).
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: dlstack_image_build
short_description: Build the dlstack container images from the version matrix
description:
  - Plans the images of C(containers/images.yml) through the dlstack resolver, renders their
    Dockerfiles and builds them with the Docker SDK (legacy builder, host network, layer cache),
    parents before children; optionally pushes them to a registry.
  - The same code as C(scripts/dlstack images build) (C(dlstack.containers.build_images)).
  - Reports C(changed) when an image ID differs from the one the tag had before.
options:
  images:
    description: Image names from C(containers/images.yml); empty builds every default image.
    type: list
    elements: str
    default: []
  ubuntu:
    description: Ubuntu releases to build; empty builds the releases each image names.
    type: list
    elements: str
    default: []
  base_image:
    description:
      - Base image of every stage, C({ubuntu}) is replaced by the release.
      - Empty uses the matrix setting (Docker Hub's C(ubuntu:{ubuntu})); without a registry use
        C(dlstack/ubuntu:{ubuntu}-base).
    type: str
    default: ""
  registry:
    description: Registry prefix of the tags and push target; empty uses the matrix setting.
    type: str
    default: ""
  ca_certificates:
    description: Extra CA certificate files (PEM, globs allowed) added to every image.
    type: list
    elements: str
    default: []
  push:
    description: Push each image after its build.
    type: bool
    default: false
author:
  - dlstack
"""

EXAMPLES = r"""
- name: Build the PyTorch image on the local Ubuntu base
  dlstack_image_build:
    images: [pytorch]
    base_image: "dlstack/ubuntu:{ubuntu}-base"
    ca_certificates: ["/usr/local/share/ca-certificates/*.crt"]
"""

RETURN = r"""
images:
  description: One entry per built image.
  returned: always
  type: list
  elements: dict
  sample:
    - name: pytorch
      reference: dlstack/pytorch:2.15.0-cu132-ubuntu24.04
      image_id: sha256:0123
      seconds: 12.3
      size: 5600000000
      steps: 20
      cached_steps: 18
      pushed: false
sizes:
  description: Each image's size next to the official image it replaces.
  returned: always
  type: list
  elements: dict
"""


def _image_ids(client: Any, references: list[str]) -> dict[str, str | None]:
    import docker.errors

    ids: dict[str, str | None] = {}
    for reference in references:
        try:
            ids[reference] = client.images.get(reference).id
        except docker.errors.ImageNotFound:
            ids[reference] = None
    return ids


def run(module: AnsibleModule) -> dict[str, Any]:
    from dlstack import containers

    params = module.params
    options = {
        "names": params["images"],
        "ubuntu": params["ubuntu"],
        "base_image": params["base_image"] or None,
        "registry": params["registry"] or None,
    }
    plans = containers.plan(**options)
    client = containers.docker_client()
    before = _image_ids(client, [p.reference for p in plans])
    if module.check_mode:
        return {"changed": any(v is None for v in before.values()), "images": [], "sizes": []}
    log: list[str] = []
    results = containers.build_images(
        **options,
        ca_certificates=params["ca_certificates"],
        push=params["push"],
        progress=log.append,
        client=client,
    )
    changed = any(before.get(r.reference) != r.image_id for r in results) or params["push"]
    return {
        "changed": changed,
        "images": [r.to_dict() for r in results],
        "sizes": containers.size_rows(plans, client),
        "sizes_text": containers.format_sizes(containers.size_rows(plans, client)),
        "log_tail": log[-40:],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "images": {"type": "list", "elements": "str", "default": []},
            "ubuntu": {"type": "list", "elements": "str", "default": []},
            "base_image": {"type": "str", "default": ""},
            "registry": {"type": "str", "default": ""},
            "ca_certificates": {"type": "list", "elements": "str", "default": []},
            "push": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except ImportError as exc:
        module.fail_json(msg=f"dlstack or the Docker SDK is not importable by {module._name}'s Python: {exc}")
    except (ValueError, LookupError, RuntimeError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
