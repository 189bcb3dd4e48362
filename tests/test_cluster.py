"""The cluster launch files in cluster/: valid for the tools that read them and consistent with the project."""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path, PurePosixPath

import pytest
import yaml

from crs_core.config import load_config
from rayjobs import pipeline

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DATASET_CONFIG = Path(str(resources.files("crs_core") / "configs" / "inspired.yaml"))


def pin(package: str) -> str:
    [spec] = [d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{package}(\[|==)", d)]
    return spec.split("==")[1]


def ray_pin() -> str:
    return pin("ray")


def pipeline_args(command: str) -> argparse.Namespace:
    """A `python -m rayjobs.pipeline ...` command line parsed by the entry's own parser."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "rayjobs.pipeline"], words
    try:
        return pipeline.build_parser().parse_args(words[3:])
    except SystemExit:
        pytest.fail(f"rayjobs.pipeline refuses the arguments: {words[3:]}")


def fetch_args(words: list[str]) -> argparse.Namespace:
    """A `crs data fetch ...` command line parsed by the command's own parser."""
    from rayjobs import cli, data

    assert words[:3] == ["crs", "data", "fetch"] and cli.COMMANDS["data"][0] is data.main, words
    try:
        args = data.build_parser().parse_args(words[2:])
    except SystemExit:
        pytest.fail(f"crs data refuses the arguments: {words[2:]}")
    assert args.data_dir, words  # on a cluster always the shared path, never the user's cache
    return args


def is_under(path: str, folder: str) -> bool:
    return PurePosixPath(path).is_relative_to(folder)


def documented_launcher_job() -> argparse.Namespace:
    """The pipeline command of the `ray job submit` that cluster/README.md documents for the launcher."""
    text = (CLUSTER / "README.md").read_text().replace("\\\n", " ")
    [submit] = [line for line in text.splitlines() if line.startswith("ray job submit")]
    return pipeline_args(submit.split(" -- ", 1)[1])


def ray_start_args(commands: list[str]) -> list[str]:
    """The arguments of the one `ray start` in a list of shell commands."""
    starts = [cmd.split("ray start", 1)[1] for cmd in commands if "ray start" in cmd]
    assert len(starts) == 1, commands
    return shlex.split(starts[0])


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())


def test_launcher_config_passes_rays_own_schema_and_checks(launcher):
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    validate_config(prepare_config(launcher))  # raises on unknown keys, wrong types, min > max workers


def test_launcher_has_a_cpu_head_and_gpu_workers(launcher):
    assert launcher["cluster_name"] and launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    assert types[launcher["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != launcher["head_node_type"] and t["resources"].get("GPU")]
    assert gpu_types
    for node_type in gpu_types:
        assert 1 <= node_type["min_workers"] <= node_type["max_workers"] <= launcher["max_workers"]


def test_launcher_installs_the_gpu_extra_and_keeps_one_faiss(launcher):
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "gpu" in extras
    commands = " && ".join(launcher["setup_commands"])
    assert re.search(r"pip install [^&]*\.\[gpu\]", commands)
    # faiss-cpu and faiss-gpu write the same `faiss` module: the base list has neither, the node only the gpu one
    assert not any(d.startswith("faiss") for d in PYPROJECT["project"]["dependencies"])
    assert any(d.startswith("faiss-gpu") for d in extras["gpu"])
    assert any(d.startswith("faiss-cpu") for d in extras["cpu"])
    assert ".[cpu" not in commands and ",cpu]" not in commands


def test_launcher_dashboard_stays_on_loopback_with_token_auth(launcher):
    head = ray_start_args(launcher["head_start_ray_commands"])
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head
    ray_start_args(launcher["worker_start_ray_commands"])
    everything = yaml.safe_dump(launcher)
    assert "0.0.0.0" not in everything
    for commands in (launcher["head_start_ray_commands"], launcher["worker_start_ray_commands"]):
        assert any("RAY_AUTH_MODE=token" in cmd and "ray start" in cmd for cmd in commands)
    assert "~/.ray/auth_token" in launcher["file_mounts"]  # the same token on every node


def test_launcher_ships_the_code_without_venv_or_runs(launcher):
    assert "." in launcher["file_mounts"].values()
    assert {".venv", ".git", "runs"} <= set(launcher["rsync_exclude"])
    assert launcher["docker"]["image"].startswith(f"rayproject/ray:{ray_pin()}-")


def test_rayjob_runs_the_pipeline_entry_with_arguments_it_accepts(rayjob, tmp_path):
    from rayjobs.common import resolve_config

    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    args = pipeline_args(rayjob["spec"]["entrypoint"])
    assert args.dataset == "inspired" and args.address == "auto"
    assert args.config == [Path("cluster/gpu-profile.yaml")]  # the dataset's own config comes from --dataset
    args.runs_dir = str(tmp_path)  # resolve_config saves config.yaml in the run directory
    config = resolve_config(args)
    dataset_layer = load_config([DATASET_CONFIG])
    assert config.dataset == "inspired"
    assert config.teacher.files == dataset_layer.teacher.files  # from the packaged dataset config
    assert config.encoder.model == "GritLM/GritLM-7B"  # from the profile, on top of it


def test_rayjob_runtime_env_ships_a_working_dir(rayjob):
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    assert all(isinstance(value, str) for value in runtime_env.get("env_vars", {}).values())  # Ray requires str


def test_rayjob_cluster_has_gpu_workers_and_a_private_head(rayjob):
    spec = rayjob["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray_pin()
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    groups = [head, *spec["workerGroupSpecs"]]
    assert all(isinstance(v, str) for group in groups for v in group["rayStartParams"].values())
    gpu_limits = [int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
                  for group in spec["workerGroupSpecs"] for c in group["template"]["spec"]["containers"]]
    assert gpu_limits and min(gpu_limits) >= 1
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_gpu_profile_fits_one_gpu_node_beside_the_driver(launcher, rayjob):
    config = load_config([DATASET_CONFIG, CLUSTER / "gpu-profile.yaml"])
    assert (config.encoder.kind, config.encoder.model) == ("hf", "GritLM/GritLM-7B")
    assert (config.student.kind, config.student.model) == ("llm", "google/gemma-2-9b-it")
    assert config.retrieval.use_gpu and config.train.use_gpu
    driver_gpus = rayjob["spec"]["entrypointNumGpus"]
    node_gpus = max(t["resources"].get("GPU", 0) for t in launcher["available_node_types"].values())
    rayjob_gpus = sum(group["replicas"] * int(group["template"]["spec"]["containers"][0]["resources"]["limits"]
                                              .get("nvidia.com/gpu", 0))
                      for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    for pool_gpus in (config.encoder.pool.actors * config.encoder.pool.num_gpus,
                      config.student.pool.actors * config.student.pool.num_gpus,
                      config.train.num_workers):
        assert 0 < pool_gpus + driver_gpus <= min(node_gpus, rayjob_gpus)


# --- shared storage: the data, run and Hugging Face cache paths the jobs use are mounted and filled


def test_launcher_mounts_shared_storage_where_the_documented_job_reads(launcher):
    [init] = launcher["initialization_commands"]  # on the host, before the container starts
    mount = re.search(r"mount -t nfs4 -o \S+ \"\$EFS_ID\.efs\.([a-z0-9-]+)\.amazonaws\.com:/\" (\S+?)\)", init)
    assert mount, init
    region, host_path = mount.groups()
    assert region == launcher["provider"]["region"]
    assert "fs-REPLACE_ME" in init and "fs-REPLACE_ME" in (CLUSTER / "README.md").read_text()
    assert re.search(r'if \[ "\$EFS_ID" = fs-REPLACE_ME \]; then .*exit 1; fi', init)  # no silent local disk
    options = launcher["docker"]["run_options"]
    [volume] = [o.split()[1] for o in options if o.startswith("--volume ")]
    source, container_path = volume.split(":")
    assert source == host_path
    env = dict(o.split()[1].split("=", 1) for o in options if o.startswith("--env "))
    job = documented_launcher_job()
    assert job.dataset == "inspired" and job.config == [Path("cluster/gpu-profile.yaml")]
    for path in (job.data_dir, job.runs_dir, env["HF_HOME"]):
        assert is_under(path, container_path), path
        assert path in init  # created on the mount with the container user's ownership
    assert env["CRS_DATA_DIR"] == job.data_dir


def test_launcher_head_fetches_the_dataset_into_the_shared_data_dir(launcher):
    job = documented_launcher_job()
    fetches = [fetch_args(shlex.split(cmd)) for cmd in launcher["head_setup_commands"] if "crs data fetch" in cmd]
    assert [(f.dataset, str(f.data_dir)) for f in fetches] == [(job.dataset, job.data_dir)]
    assert not any("crs data fetch" in cmd for cmd in launcher["setup_commands"] + launcher["worker_setup_commands"])


def claim_mounts(pod: dict, claim: str) -> dict[str, str]:
    """Container name -> where the pod mounts PersistentVolumeClaim `claim`, for every container of the pod."""
    volumes = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return {c["name"]: next((m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in volumes), None)
            for c in pod.get("initContainers", []) + pod["containers"]}


def test_rayjob_fills_the_shared_claim_before_the_driver_runs(rayjob):
    job = pipeline_args(rayjob["spec"]["entrypoint"])
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    [fetch] = [c for c in head.get("initContainers", []) if c["command"][:3] == ["crs", "data", "fetch"]]
    args = fetch_args(fetch["command"])
    assert (args.dataset, str(args.data_dir)) == (job.dataset, job.data_dir)
    head_image = head["containers"][0]["image"]
    assert fetch["image"] == head_image  # the image that carries `crs`, already pulled for the head
    pods = [head] + [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]
    mounts = [path for pod in pods for path in claim_mounts(pod, "crs-shared").values()]
    assert len(set(mounts)) == 1 and None not in mounts  # every container, the fetch included, at one path
    for path in (job.data_dir, job.runs_dir):
        assert is_under(path, mounts[0]), path


def test_rayjob_keeps_one_hugging_face_cache_on_the_claim(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        mounts = claim_mounts(pod, "crs-shared")
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["HF_HOME"] and is_under(env["HF_HOME"], mounts[container["name"]]), container["name"]


# --- the images: a cpu and a gpu target, and a build context without .venv or runs


def dockerfile_stages() -> tuple[dict[str, str], dict[str, str]]:
    """ARG defaults, and each stage's text by name (continuation lines joined)."""
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    parts = re.split(r"^FROM ", text, flags=re.M)[1:]
    stages = {re.match(r"\S+ AS (\w+)", part).group(1): "FROM " + part for part in parts}
    return args, stages


def pip_installs(stage: str) -> str:
    return " ".join(re.findall(r"pip install [^&\n]*", stage))


def test_dockerfile_has_a_cpu_and_a_gpu_target_on_the_pinned_versions():
    args, stages = dockerfile_stages()
    assert args["RAY_VERSION"] == ray_pin() and args["TORCH_VERSION"] == pin("torch")
    assert stages["cpu"].startswith("FROM rayproject/ray:${RAY_VERSION}-py311-cpu AS cpu")
    assert stages["gpu"].startswith("FROM rayproject/ray:${RAY_VERSION}-py311-gpu AS gpu")
    assert list(stages)[-1] == "gpu"  # a build without --target still makes the GPU image
    cpu, gpu = pip_installs(stages["cpu"]), pip_installs(stages["gpu"])
    assert "'.[cpu]'" in cpu and ".[gpu" not in cpu
    assert "'.[gpu]'" in gpu and ".[cpu" not in gpu  # one faiss per image
    # the CPU build of the pinned torch, installed before the project so pip keeps it
    torch = re.search(r"--index-url https://download\.pytorch\.org/whl/cpu \"torch==\$\{TORCH_VERSION\}\"", cpu)
    assert torch and torch.start() < cpu.index("'.[cpu]'")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    def regex(pattern: str) -> re.Pattern:
        out = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return re.compile(out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))

    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).fullmatch(p) for p in parents):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_build_sources_and_drops_venv_and_runs():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", "runs/inspired/default/items.parquet", ".git/HEAD", "tests/test_cluster.py",
                 "crs_core/__pycache__/config.cpython-311.pyc", "crs_augment.egg-info/PKG-INFO",
                 ".pytest_cache/README.md", "benchmarks/results.png", "rayjobs/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(path, patterns), path
    _, stages = dockerfile_stages()
    sources = [word for line in re.findall(r"^COPY (?!--from)(.*)$", stages["source"], flags=re.M)
               for word in line.split()[:-1]]
    assert {"pyproject.toml", "README.md", "crs_core", "rayjobs"} <= set(sources)
    for source in sources:
        root = REPO / source
        files = [source] if root.is_file() else [
            str(f.relative_to(REPO)) for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        assert files and not any(dockerignore_excludes(f, patterns) for f in files), source
    assert not dockerignore_excludes("crs_core/configs/inspired.yaml", patterns)


def test_images_carry_every_packaged_config():
    """The images install the project with `pip install .` (not editable): a file read through
    importlib.resources exists there only if package-data names it (the GPU profile's DeepSpeed config)."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["crs_core"]
    package = REPO / "crs_core"
    for path in sorted((package / "configs").iterdir()):
        relative = str(path.relative_to(package))
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in globs), f"{relative} missing from {globs}"
    config = load_config([DATASET_CONFIG, CLUSTER / "gpu-profile.yaml"])
    assert config.train.strategy == "deepspeed"
    assert (package / "configs" / config.train.deepspeed_config).is_file()  # read by name from the package
