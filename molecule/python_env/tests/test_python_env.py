"""Facts about a host converged with the python_env role (real PyPI installs, CPU only).

The CUDA versions are compared with what the resolver chooses for this release (the converge
resolves the stack as the preflight play does, with dlstack_frameworks [torch, tensorflow]).
Conda channels are unreachable here: the conda backend is checked up to its rendered files and
a stand-in installer (checksum verified from a local file); no conda environment is solved.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from dlstack.resolver import resolve

ENVS = "/opt/dlstack/envs"
# the scenario's venvs and their profiles (molecule.yml)
PROFILE_ENVS = {"pytorch": "pytorch", "tensorflow": "tensorflow", "hf": "huggingface", "vision": "vision"}
PORT = 18988

TORCH_TRAIN = """
import torch
torch.manual_seed(0)
x = torch.randn(256, 8)
y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
losses = []
for _ in range(30):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
import json; print(json.dumps({"first": losses[0], "last": losses[-1], "cuda": torch.version.cuda}))
"""

TF_TRAIN = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
tf.random.set_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(256, 1))).astype("float32")
layers = [tf.keras.Input((8,)), tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(1)]
model = tf.keras.Sequential(layers)
model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
hist = model.fit(x, y, epochs=10, batch_size=64, verbose=0).history["loss"]
print(json.dumps({"first": hist[0], "last": hist[-1], "cuda": tf.sysconfig.get_build_info()["cuda_version"]}))
"""


def py(host, env, code):
    out = host.check_output(f"{ENVS}/{env}/bin/python -c {shlex.quote(code)} 2>/dev/null")
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(host):
    release = host.system_info.release
    return resolve(os=release, frameworks=("torch", "torchvision", "tensorflow")).to_dict()


@pytest.fixture(scope="module")
def fact(host):
    return json.loads(host.file("/etc/ansible/facts.d/python_env.fact").content_string)


def test_torch_reports_the_resolved_cuda(host, stack):
    # The check of the issue, literally: the PyTorch environment prints the resolver's CUDA.
    out = host.check_output(f"{ENVS}/pytorch/bin/python -c 'import torch; print(torch.version.cuda)'")
    assert out.strip() == stack["frameworks"]["torch"]["cuda"]


def test_torch_version_is_the_resolved_one(host, stack):
    out = host.check_output(f"{ENVS}/pytorch/bin/python -c 'import torch; print(torch.__version__)'")
    assert out.strip().split("+")[0] == stack["frameworks"]["torch"]["version"]


def test_torch_training_step_lowers_the_loss(host):
    result = py(host, "pytorch", TORCH_TRAIN)
    assert result["last"] < 0.5 * result["first"]


def test_tensorflow_build_reports_the_resolved_cuda(host, stack):
    code = "import json, tensorflow as tf; info = tf.sysconfig.get_build_info()"
    code += "; print(json.dumps({'cuda': info['cuda_version'], 'v': tf.__version__}))"
    result = py(host, "tensorflow", code)
    assert result["v"] == stack["frameworks"]["tensorflow"]["version"]
    wanted = stack["frameworks"]["tensorflow"]["cuda"]
    assert result["cuda"] == wanted or result["cuda"].startswith(wanted + ".")


def test_tensorflow_training_step_lowers_the_loss(host):
    result = py(host, "tensorflow", TF_TRAIN)
    assert result["last"] < 0.5 * result["first"]


@pytest.mark.parametrize("env", ["pytorch", "tensorflow"])
def test_nvidia_cuda_wheels_came_along(host, env):
    out = host.check_output(f"{ENVS}/{env}/bin/python -m pip list --format=json")
    names = {p["name"].lower() for p in json.loads(out)}
    assert any(n.startswith("nvidia-cudnn") for n in names)
    assert any(n.startswith("nvidia-cublas") for n in names)


def test_local_fact_lists_the_built_environments(fact, stack):
    envs = {e["name"]: e for e in fact["environments"]}
    # "forge" (conda) is rendered only: no interpreter, so not published.
    assert sorted(envs) == ["hf", "pytorch", "tensorflow", "vision"]
    torch = envs["pytorch"]
    assert torch["python"] == f"{ENVS}/pytorch/bin/python"
    assert torch["backend"] == "venv"
    assert torch["frameworks"] == ["torch"]
    assert torch["versions"] == {
        "torch": stack["frameworks"]["torch"]["version"],
        "torchvision": stack["frameworks"]["torch"]["companions"]["torchvision"],
        "cuda": stack["frameworks"]["torch"]["cuda"],
    }
    assert set(torch["skipped_companions"]) == (
        set() if stack["frameworks"]["torch"]["companions"]["torchaudio"] else {"torchaudio"}
    )
    assert envs["tensorflow"]["versions"]["tensorflow"] == stack["frameworks"]["tensorflow"]["version"]


def test_requirements_pin_the_resolver_requirement(host, stack):
    lines = host.file("/etc/dlstack/python_env/pytorch/requirements.txt").content_string.splitlines()
    assert stack["frameworks"]["torch"]["requirement"] in lines
    tf_lines = host.file("/etc/dlstack/python_env/tensorflow/requirements.txt").content_string.splitlines()
    assert stack["frameworks"]["tensorflow"]["requirement"] in tf_lines


@pytest.mark.parametrize("env", ["pytorch", "tensorflow"])
def test_pip_conf_trusts_the_system_bundle(host, env):
    out = host.check_output(f"{ENVS}/{env}/bin/python -m pip config list")
    assert "global.cert='/etc/ssl/certs/ca-certificates.crt'" in out.splitlines()


@pytest.mark.parametrize("env", ["pytorch", "tensorflow"])
def test_lock_pins_what_is_installed(host, env, stack):
    fw = "torch" if env == "pytorch" else "tensorflow"
    lock = host.file(f"{ENVS}/{env}/dlstack-lock.txt").content_string.splitlines()
    assert f"{fw}=={stack['frameworks'][fw]['version']}" in lock
    assert any(line.startswith("ipykernel==") for line in lock)


def test_user_added_package_survives_a_rerun(host):
    # converge adds cowsay with pip after the role; the idempotence run re-applies the role.
    assert host.run(f"{ENVS}/pytorch/bin/python -c 'import cowsay'").rc == 0
    assert "cowsay==" in host.file(f"{ENVS}/pytorch/dlstack-lock.txt").content_string


def test_shared_environment_belongs_to_its_owner_and_group(host):
    d = host.file(f"{ENVS}/tensorflow")
    assert (d.user, d.group) == ("labuser", "dlstack")
    assert d.mode & 0o2070 == 0o2070
    site = host.check_output(
        f"ls -ld {ENVS}/tensorflow/lib/python3*/site-packages/tensorflow | awk '{{print $3\":\"$4}}'"
    )
    assert site.strip() == "labuser:dlstack"


@pytest.mark.parametrize("env", ["pytorch", "tensorflow"])
def test_kernel_registered_system_wide(host, env, fact):
    spec = json.loads(host.file(f"/usr/local/share/jupyter/kernels/dlstack-{env}/kernel.json").content_string)
    assert spec["argv"][0] == f"{ENVS}/{env}/bin/python"
    entry = next(e for e in fact["environments"] if e["name"] == env)
    fw = entry["frameworks"][0]
    assert spec["display_name"].startswith("Python 3.")
    assert f"({env}, {fw} {entry['versions'][fw]} cu" in spec["display_name"]


def test_jupyter_finds_both_kernels(host):
    out = host.check_output(f"{ENVS}/pytorch/bin/jupyter kernelspec list --json")
    specs = json.loads(out)["kernelspecs"]
    assert {"dlstack-pytorch", "dlstack-tensorflow"} <= set(specs)
    assert specs["dlstack-tensorflow"]["resource_dir"] == "/usr/local/share/jupyter/kernels/dlstack-tensorflow"


def test_jupyterlab_service_runs_for_the_user(host):
    svc = host.service("dlstack-jupyterlab-labuser")
    assert svc.is_enabled
    assert svc.is_running


def test_jupyterlab_listens_on_loopback_only(host):
    out = host.check_output(
        f"for i in $(seq 60); do ss -Hltn 'sport = :{PORT}' | grep -q . && break; sleep 1; done; "
        f"ss -Hltn 'sport = :{PORT}'"
    )
    assert out.split()[3] == f"127.0.0.1:{PORT}"


def test_condarc_has_no_defaults_channel(host):
    rc = yaml.safe_load(host.file("/opt/miniforge3/.condarc").content_string)
    assert rc["channels"] == ["conda-forge", "bioconda"]
    assert "defaults" not in rc["channels"]
    assert all("repo.anaconda.com" not in url for url in rc["default_channels"])
    assert rc["envs_dirs"] == [ENVS]
    assert rc["ssl_verify"] == "/etc/ssl/certs/ca-certificates.crt"


def test_conda_environment_file_rendered(host):
    env = yaml.safe_load(host.file("/etc/dlstack/python_env/forge/environment.yml").content_string)
    python = host.check_output("python3 -c 'import sys; print(f\"{sys.version_info[0]}.{sys.version_info[1]}\")'")
    assert env["name"] == "forge"
    assert env["channels"] == ["conda-forge", "bioconda", "nodefaults"]
    assert env["dependencies"] == [f"python={python.strip()}", "pip", "numpy"]


def test_conda_environment_not_solved_without_channels(host):
    # python_env_conda_create: false in this scenario (no channel reachable): nothing created.
    assert not host.file(f"{ENVS}/forge").exists


def test_miniforge_installer_checked_and_run(host):
    installer = host.file("/var/cache/dlstack/python_env/Miniforge3-fake-Linux-x86_64.sh")
    assert installer.sha256sum == host.file("/root/fake-miniforge/sha256").content_string.strip()
    assert host.run("/opt/miniforge3/bin/conda --version").stdout.startswith("conda 0.0.0-fake")


def test_wrong_checksum_left_nothing_installed(host):
    assert not host.file("/opt/miniforge-wrong-checksum").exists


@pytest.mark.parametrize(("env", "fw"), [("pytorch", "torch"), ("tensorflow", "tensorflow")])
def test_gpu_verify_report_passes_on_cpu(host, env, fw, fact):
    # Written by the gpu_verify role in converge (gpu_verify.py --cpu --json-out ...).
    report = json.loads(host.file(f"/var/lib/dlstack/verify/{env}.json").content_string)
    entry = next(e for e in fact["environments"] if e["name"] == env)
    assert report["mode"] == "cpu"
    assert report["environment"]["python"] == entry["python"]
    # what an IDE connects to, in the report too: the interpreter (above) and the Jupyter kernel
    assert entry["kernel"] and report["environment"]["jupyter_kernel"] == entry["kernel"]
    assert report["environment"]["required_frameworks"] == [fw]
    assert report["environment"]["frameworks"][fw].split("+")[0] == entry["versions"][fw]
    assert report["summary"]["status"] == "pass"
    checks = {c["id"]: c["status"] for c in report["checks"]}
    assert checks[f"{fw}.import"] == "pass"
    trained = "torch.lenet[cpu]" if fw == "torch" else "tensorflow.fit[/CPU:0]"
    assert checks[trained] == "pass"


# --- complete environments: the profiles' packages, and the guides' programs as written


@pytest.mark.parametrize(
    ("env", "modules"),
    [
        ("pytorch", ["torchvision", "numpy", "pandas", "matplotlib", "sklearn", "tensorboard", "tqdm"]),
        ("tensorflow", ["keras", "numpy", "pandas", "matplotlib", "sklearn", "tensorboard"]),
        ("hf", ["torchvision", "transformers", "datasets", "diffusers", "accelerate", "safetensors", "evaluate"]),
        ("vision", ["torchvision", "ultralytics", "cv2", "PIL", "pandas"]),
    ],
)
def test_profiles_are_complete_environments(host, env, modules):
    code = f"import {', '.join(modules)}; import json; print(json.dumps(1))"
    assert py(host, env, code) == 1


def test_torchvision_is_the_release_paired_with_torch(host, stack):
    paired = stack["frameworks"]["torch"]["companions"]["torchvision"]
    out = host.check_output(f"{ENVS}/pytorch/bin/python -c 'import torchvision; print(torchvision.__version__)'")
    assert out.split("+")[0] == paired
    # and torch was not moved by it (torchvision pins its torch exactly)
    assert (
        py(host, "pytorch", "import torch, json; print(json.dumps(torch.__version__))").split("+")[0]
        == (stack["frameworks"]["torch"]["version"])
    )


@pytest.mark.parametrize(
    ("program", "env"),
    [
        ("seed000_cnn_rnn.py", "pytorch"),
        ("seed004_simple_nn.py", "pytorch"),
        ("seed001_keras.py", "tensorflow"),
        ("seed003_huggingface.py", "hf"),
        ("seed003_yolo.py", "vision"),
    ],
)
def test_the_guides_programs_run_as_written(host, program, env):
    # a login shell: HF_HOME, TORCH_HOME and KERAS_HOME point at the data directory (role common)
    run = host.run(f"cd /tmp && bash -lc '{ENVS}/{env}/bin/python /root/guides/{program}'")
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().endswith(f"{program.split('_')[0]}: OK")


def test_jupyterlab_gets_the_data_directory_caches(host):
    # a service reads no /etc/profile.d: the unit's EnvironmentFile (role common's data.env) gives them
    pid = host.check_output("systemctl show -p MainPID --value dlstack-jupyterlab-labuser")
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    data_dir = json.loads(host.file("/etc/ansible/facts.d/common.fact").content_string)["data_dir"]
    assert f"HF_HOME={data_dir}/cache/huggingface" in environ.splitlines()
    assert f"TORCH_HOME={data_dir}/cache/torch" in environ.splitlines()


def test_the_headless_host_has_no_gui_opencv(host):
    # libGL is not on this host: with opencv-python kept out (uv override), cv2 is the headless build
    assert not host.file("/usr/lib/x86_64-linux-gnu/libGL.so.1").exists
    out = host.check_output(f"{ENVS}/vision/bin/python -m pip list --format=json")
    names = {p["name"].lower() for p in json.loads(out)}
    assert "opencv-python-headless" in names
    assert "opencv-python" not in names
    overrides = host.file("/etc/dlstack/python_env/vision/overrides.txt").content_string
    assert "opencv-python ; sys_platform == 'never'" in overrides


def test_extended_profiles_hold_the_pytorch_set_and_their_sizes_are_recorded(host):
    """huggingface and vision extend pytorch, so each is larger than the pytorch environment. The
    sizes go to .cache/logs/python-env-sizes.json for scripts/benchmark (not asserted as figures)."""
    sizes = {name: int(host.check_output(f"du -sb {ENVS}/{name}").split()[0]) for name in PROFILE_ENVS}
    assert sizes["hf"] > sizes["pytorch"] and sizes["vision"] > sizes["pytorch"], sizes
    logs = Path(__file__).resolve().parents[3] / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    record = {"environments": {name: {"profile": PROFILE_ENVS[name], "bytes": b} for name, b in sizes.items()}}
    (logs / "python-env-sizes.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
