"""playbooks/cloud.yml against a local EC2 emulator (moto in server mode on loopback).

The tests run in file order on one emulator: up (guarded, on-demand, spot), status, the dynamic
inventory, then down. The configuration half (SSH, roles) is skipped with cloud_vm_configure=false:
it is the same roles the Molecule scenarios test. Nothing here reaches AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

# With pytest --dist loadscope one worker runs the whole module against one emulator.
pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REGION = "us-east-1"
CIDR = "198.51.100.7/32"
OWNER = "alice"
CANONICAL = "099720109477"
NEWEST_NOBLE = "ami-0a0a0a0a0a0a0a002"
FAKE_SECRET = "testing"  # noqa: S105 - moto accepts any credentials; this is not a secret
R1_LAUNCH = ("-e", "cloud_vm_instance_type=g5.xlarge", "-e", "cloud_vm_count=2", "-e", "cloud_vm_root_volume_gb=120")


def _ami(ami_id: str, name: str, date: str, arch: str = "x86_64", owner: str = CANONICAL) -> dict[str, Any]:
    return {
        "ami_id": ami_id,
        "name": name,
        "owner_id": owner,
        "architecture": arch,
        "creation_date": date,
        "public": True,
        "virtualization_type": "hvm",
        "state": "available",
        "root_device_type": "ebs",
        "root_device_name": "/dev/sda1",
        "image_type": "machine",
        "hypervisor": "xen",
    }


# A fake Canonical catalogue with decoys: an older noble image, a newer arm64 one, a newer jammy
# one, and a newer "noble" image from another owner. Only NEWEST_NOBLE is the right answer.
FAKE_AMIS = [
    _ami("ami-0a0a0a0a0a0a0a001", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101", "2025-01-01"),
    _ami(NEWEST_NOBLE, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20251101", "2025-11-01"),
    _ami(
        "ami-0a0a0a0a0a0a0a003",
        "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20251115",
        "2025-11-15",
        arch="arm64",
    ),
    _ami("ami-0a0a0a0a0a0a0a004", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20251110", "2025-11-10"),
    _ami(
        "ami-0a0a0a0a0a0a0a005",
        "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20251120",
        "2025-11-20",
        owner="111111111111",
    ),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - loopback URL we built
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"moto server did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """moto's EC2 emulator on 127.0.0.1 with the fake Canonical images; stopped in teardown."""
    workdir = tmp_path_factory.mktemp("moto")
    amis = workdir / "amis.json"
    amis.write_text(json.dumps(FAKE_AMIS), encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MOTO_AMIS_PATH": str(amis),  # read when moto's EC2 models are imported: the server's own env
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    log = (workdir / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def aws_env(emulator: str) -> dict[str, str]:
    """Environment for Ansible and boto3: fake credentials, the emulator as endpoint."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_SESSION_TOKEN=FAKE_SECRET,
        AWS_DEFAULT_REGION=REGION,
        AWS_URL=emulator,  # the amazon.aws inventory plugin's endpoint setting
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return env


@pytest.fixture(scope="module")
def ec2(emulator: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=emulator,
        aws_access_key_id="testing",
        aws_secret_access_key=FAKE_SECRET,
    )


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Ed25519 public key in OpenSSH format (cryptography comes with moto; no ssh-keygen needed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    text = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519.pub"
    path.write_text(f"{text} dlstack-emulator-test\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def playbook(emulator: str, aws_env: dict[str, str], ssh_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run playbooks/cloud.yml with the emulator settings; returns (result, status file JSON or None)."""
    outdir = tmp_path_factory.mktemp("status")

    def run(action: str, run_id: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], Any]:
        status = outdir / f"{action}-{run_id}-{time.monotonic_ns()}.json"
        command = [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",  # an inventory without other hosts: nothing but the emulator is touched
            str(ROOT / "playbooks" / "cloud.yml"),
            "-e",
            f"cloud_vm_action={action}",
            "-e",
            f"cloud_vm_run={run_id}",
            "-e",
            f"cloud_vm_owner={OWNER}",
            "-e",
            f"cloud_vm_ssh_cidr={CIDR}",
            "-e",
            f"cloud_vm_ssh_public_key_file={ssh_key}",
            "-e",
            f"cloud_vm_aws_endpoint_url={emulator}",
            "-e",
            f"cloud_vm_aws_region={REGION}",
            "-e",
            "cloud_vm_configure=false",
            "-e",
            f"cloud_vm_status_file={status}",
            *extra,
        ]
        result = subprocess.run(command, cwd=ROOT, env=aws_env, capture_output=True, text=True, timeout=240)
        data = json.loads(status.read_text(encoding="utf-8")) if status.exists() else None
        return result, data

    return run


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"ansible-playbook failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def _tag_filters(run_id: str, owner: str = OWNER) -> list[dict[str, Any]]:
    return [
        {"Name": "tag:dlstack:project", "Values": ["dlstack"]},
        {"Name": "tag:dlstack:owner", "Values": [owner]},
        {"Name": "tag:dlstack:run", "Values": [run_id]},
    ]


def _live_instances(ec2: Any, filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    states = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    pages = ec2.describe_instances(Filters=[*(filters or []), states])["Reservations"]
    return [instance for reservation in pages for instance in reservation["Instances"]]


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


@pytest.fixture(scope="module")
def bystanders(ec2: Any) -> dict[str, str]:
    """Resources `down` must never touch: an untagged instance, another owner's instance with the
    same run name, another run's security group and key pair."""
    untagged = ec2.run_instances(ImageId=NEWEST_NOBLE, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    other_owner = ec2.run_instances(
        ImageId=NEWEST_NOBLE,
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "dlstack:project", "Value": "dlstack"},
                    {"Key": "dlstack:owner", "Value": "bob"},
                    {"Key": "dlstack:run", "Value": "r1"},
                ],
            }
        ],
    )
    other_run_tags = [
        {"Key": "dlstack:project", "Value": "dlstack"},
        {"Key": "dlstack:owner", "Value": OWNER},
        {"Key": "dlstack:run", "Value": "keep"},
    ]
    sg = ec2.create_security_group(
        GroupName="dlstack-keep-ssh",
        Description="another run",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": other_run_tags}],
    )
    ec2.create_key_pair(
        KeyName="dlstack-keep-key", TagSpecifications=[{"ResourceType": "key-pair", "Tags": other_run_tags}]
    )
    return {
        "untagged": untagged["Instances"][0]["InstanceId"],
        "other_owner": other_owner["Instances"][0]["InstanceId"],
        "sg": sg["GroupId"],
        "key": "dlstack-keep-key",
    }


def test_guard_stops_64_h100_before_any_create(ec2: Any, playbook: Any, bystanders: dict[str, str]) -> None:
    groups_before = len(ec2.describe_security_groups()["SecurityGroups"])
    keys_before = len(ec2.describe_key_pairs()["KeyPairs"])
    result, _ = playbook("up", "guard", "-e", "cloud_vm_instance_type=p5.48xlarge", "-e", "cloud_vm_count=8")
    assert result.returncode != 0
    assert "64 x H100 SXM" in result.stdout
    assert "cloud_vm_confirm_large" in result.stdout
    assert _live_instances(ec2, _tag_filters("guard")) == []
    assert len(ec2.describe_security_groups()["SecurityGroups"]) == groups_before
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == keys_before


def test_guard_stops_uncatalogued_type(ec2: Any, playbook: Any) -> None:
    result, _ = playbook("up", "guard", "-e", "cloud_vm_instance_type=m7i.large")
    assert result.returncode != 0
    assert "not in the aws catalogue" in result.stdout
    assert _live_instances(ec2, _tag_filters("guard")) == []


def test_bad_action_is_refused(playbook: Any) -> None:
    result, _ = playbook("launch", "r1")
    assert result.returncode != 0
    assert "cloud_vm_action" in result.stdout
    assert "launch" in result.stdout
    assert "up, status, down" in result.stdout


def test_up_launches_on_demand_instances(ec2: Any, playbook: Any, bystanders: dict[str, str]) -> None:
    result, status = playbook("up", "r1", *R1_LAUNCH)
    _ok(result)
    instances = _live_instances(ec2, _tag_filters("r1"))
    assert len(instances) == 2
    assert {i["InstanceId"] for i in instances} == {i["id"] for i in status["instances"]}
    for instance in instances:
        assert instance["InstanceType"] == "g5.xlarge"
        assert instance["ImageId"] == NEWEST_NOBLE
        assert instance["KeyName"] == "dlstack-r1-key"
        assert instance.get("InstanceLifecycle", "on-demand") != "spot"
        assert _tags(instance)["dlstack:owner"] == OWNER


def test_up_tags_root_volumes_with_the_size(ec2: Any) -> None:
    instances = _live_instances(ec2, _tag_filters("r1"))
    ids = [i["InstanceId"] for i in instances]
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    assert len(volumes) == 2
    for volume in volumes:
        assert volume["Size"] == 120
        assert _tags(volume)["dlstack:run"] == "r1"
    for instance in instances:
        assert [m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]] == [True]


def test_up_opens_ssh_only_to_the_cidr(ec2: Any) -> None:
    groups = ec2.describe_security_groups(Filters=_tag_filters("r1"))["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["dlstack-r1-ssh"]
    permissions = groups[0]["IpPermissions"]
    assert len(permissions) == 1
    assert (permissions[0]["IpProtocol"], permissions[0]["FromPort"], permissions[0]["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in permissions[0]["IpRanges"]] == [CIDR]
    assert permissions[0].get("Ipv6Ranges", []) == []
    instance_groups = {g["GroupId"] for i in _live_instances(ec2, _tag_filters("r1")) for g in i["SecurityGroups"]}
    assert instance_groups == {groups[0]["GroupId"]}


def test_up_imports_a_tagged_key_pair(ec2: Any) -> None:
    keys = ec2.describe_key_pairs(Filters=_tag_filters("r1"))["KeyPairs"]
    assert [k["KeyName"] for k in keys] == ["dlstack-r1-key"]


def test_up_again_changes_nothing(ec2: Any, playbook: Any) -> None:
    before = {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r1"))}
    result, _ = playbook("up", "r1", *R1_LAUNCH)
    _ok(result)
    assert {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r1"))} == before


def test_up_spot_requests_the_spot_market(ec2: Any, playbook: Any) -> None:
    result, _ = playbook("up", "r2", "-e", "cloud_vm_instance_type=g6.xlarge", "-e", "cloud_vm_spot=true")
    _ok(result)
    assert len(_live_instances(ec2, _tag_filters("r2"))) == 1
    templates = ec2.describe_launch_templates(Filters=_tag_filters("r2"))["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in templates] == ["dlstack-r2-lt"]
    version = ec2.describe_launch_template_versions(LaunchTemplateId=templates[0]["LaunchTemplateId"])
    options = version["LaunchTemplateVersions"][0]["LaunchTemplateData"]["InstanceMarketOptions"]
    assert options["MarketType"] == "spot"
    # the on-demand run has no launch template at all
    assert ec2.describe_launch_templates(Filters=_tag_filters("r1"))["LaunchTemplates"] == []


def test_status_lists_the_run(ec2: Any, playbook: Any) -> None:
    result, status = playbook("status", "r1")
    _ok(result)
    expected = {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r1"))}
    assert {i["id"] for i in status["instances"]} == expected
    for instance_id in expected:
        assert instance_id in result.stdout


def _unwrap(value: Any) -> Any:
    """ansible-inventory --list may wrap strings as {"__ansible_unsafe": ...}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: _unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


def test_dynamic_inventory_finds_the_run(ec2: Any, aws_env: dict[str, str], bystanders: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(ROOT / "inventories" / "cloud" / "aws_ec2.yml"), "--list"],
        cwd=ROOT,
        env=aws_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    inventory = _unwrap(json.loads(result.stdout))
    r1 = {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r1"))}
    assert r1 <= set(inventory["dlstack_run_r1"]["hosts"])
    assert r1 <= set(inventory["dlstack_workstations"]["hosts"])
    hostvars = inventory["_meta"]["hostvars"]
    assert bystanders["untagged"] not in hostvars
    for instance_id in r1:
        assert hostvars[instance_id]["dlstack_cloud_gpu_model"] == "A10G"
        assert hostvars[instance_id]["dlstack_cloud_gpu_count"] == 1


def test_down_removes_exactly_the_run(ec2: Any, playbook: Any, bystanders: dict[str, str]) -> None:
    r1 = {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r1"))}
    r2 = {i["InstanceId"] for i in _live_instances(ec2, _tag_filters("r2"))}
    result, _ = playbook("down", "r1")
    _ok(result)
    assert _live_instances(ec2, _tag_filters("r1")) == []
    assert ec2.describe_security_groups(Filters=_tag_filters("r1"))["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=_tag_filters("r1"))["KeyPairs"] == []
    assert ec2.describe_volumes(Filters=_tag_filters("r1"))["Volumes"] == []
    states = {i["InstanceId"]: i["State"]["Name"] for i in _live_instances(ec2) + _terminated(ec2)}
    assert {states[i] for i in r1} == {"terminated"}
    # bystanders and the other run are untouched
    live = {i["InstanceId"] for i in _live_instances(ec2)}
    assert {bystanders["untagged"], bystanders["other_owner"], *r2} <= live
    assert ec2.describe_security_groups(GroupIds=[bystanders["sg"]])["SecurityGroups"]
    assert ec2.describe_key_pairs(KeyNames=[bystanders["key"]])["KeyPairs"]
    assert ec2.describe_security_groups(Filters=_tag_filters("r2"))["SecurityGroups"]


def _terminated(ec2: Any) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["terminated"]}])
    return [instance for reservation in pages["Reservations"] for instance in reservation["Instances"]]


def test_down_spot_run_leaves_nothing_tagged(ec2: Any, playbook: Any, bystanders: dict[str, str]) -> None:
    result, _ = playbook("down", "r2")
    _ok(result)
    assert _live_instances(ec2, _tag_filters("r2")) == []
    assert ec2.describe_launch_templates(Filters=_tag_filters("r2"))["LaunchTemplates"] == []
    assert ec2.describe_security_groups(Filters=_tag_filters("r2"))["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=_tag_filters("r2"))["KeyPairs"] == []
    live = {i["InstanceId"] for i in _live_instances(ec2)}
    assert live == {bystanders["untagged"], bystanders["other_owner"]}
