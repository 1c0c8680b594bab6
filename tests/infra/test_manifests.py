"""KubeRay manifests (infra/*.yaml) against the vendored CRD schemas, the shipped configs and each other.

- Every manifest validates against its CRD subset (infra/crds/, jsonschema); the subsets are closed,
  so a misspelt key is an error (checked by mutating a manifest).
- The RayService embeds the serve config it names: the applications block is identical except the
  values listed in CLUSTER_SPECIFIC; Ray's own ServeDeploySchema accepts both.
- What each group offers Ray (CPU/GPU per pod x max pods) holds what each stage asks of Ray at once
  (Serve replicas + Ray Data actors, Ray Train workers, eval actors), checked by bin-packing the
  requests onto the pods; the vLLM teacher's tensor-parallel GPUs fit on one node.
- Every Secret and key a manifest reads exists in infra/secrets.example.yaml.
- Images: one Ray version and one Python across images; the GPU pins satisfy the ``vllm`` extra.
"""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from leaml.config import load_config
from leaml.pipeline.config import PipelineConfig

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MANIFESTS = ["raycluster.yaml", "rayjob-pipeline.yaml", "rayservice-vqa.yaml"]
PIPELINE_PRESETS = ["kvasir.yaml", "sportu.yaml"]
SCHEMA_FILES = {"RayCluster": "raycluster.v1.schema.yaml", "RayJob": "rayjob.v1.schema.yaml",
                "RayService": "rayservice.v1.schema.yaml"}
# Values of the RayService's serve config that must differ from the shipped file, and why.
CLUSTER_SPECIFIC = {
    ("http_options", "host"): "the serve Service reaches the proxies on the pod IPs: 0.0.0.0",
    ("applications", 0, "args", "checkpoint"): "a run's VQA model on s3://, not a path in a checkout",
}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest(name: str) -> dict:
    (doc,) = load_docs(INFRA / name)
    return doc


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    schemas = {kind: yaml.safe_load((INFRA / "crds" / f).read_text()) for kind, f in SCHEMA_FILES.items()}
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    return {kind: Draft202012Validator(s, registry=registry) for kind, s in schemas.items()}


def schema_errors(validator: Draft202012Validator, doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


# ---------------------------------------------------------------------------------------------
# CRD schemas


def test_vendored_schemas_are_valid_json_schemas():
    for f in SCHEMA_FILES.values():
        schema = yaml.safe_load((INFRA / "crds" / f).read_text())
        Draft202012Validator.check_schema(schema)
        assert "VENDORED SUBSET" in (INFRA / "crds" / f).read_text().split("$schema")[0]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_its_crd(name, validators):
    doc = manifest(name)
    assert doc["kind"] in validators, f"{name}: no vendored schema for kind {doc['kind']!r}"
    assert schema_errors(validators[doc["kind"]], doc) == []


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _rename(doc: dict, path: tuple, new_key: str) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[new_key] = node.pop(path[-1])
    return doc


@pytest.mark.parametrize("mutation, expected", [
    (lambda d: _rename(d, ("spec", "workerGroupSpecs", 0, "maxReplicas"), "maxReplica"), "maxReplica"),
    (lambda d: _rename(d, ("spec", "headGroupSpec", "template", "spec", "containers", 0, "resources"), "resource"),
     "resource"),
    (lambda d: _set(d, ("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources", "limits",
                        "cpu"), "sixty-four"), "sixty-four"),
    (lambda d: _set(d, ("spec", "autoscalerOptions", "version"), "v3"), "v3"),
    (lambda d: _set(d, ("kind",), "RayClusters"), "kind"),
])
def test_schema_rejects_typos(mutation, expected, validators):
    errors = schema_errors(validators["RayCluster"], mutation(manifest("raycluster.yaml")))
    assert errors and any(expected in e for e in errors), errors


def test_rayjob_schema_rejects_selector_plus_shutdown(validators):
    job = _set(manifest("rayjob-pipeline.yaml"), ("spec", "shutdownAfterJobFinishes"), True)
    assert schema_errors(validators["RayJob"], job)  # a job must not tear down a shared cluster


# ---------------------------------------------------------------------------------------------
# RayService <-> serve_configs


def embedded_serve_config() -> tuple[dict, dict]:
    svc = manifest("rayservice-vqa.yaml")
    shipped = REPO / svc["metadata"]["annotations"]["leaml.io/serve-config"]
    return yaml.safe_load(svc["spec"]["serveConfigV2"]), yaml.safe_load(shipped.read_text())


def diff_paths(a, b, path=()) -> set[tuple]:
    """Paths (key/index tuples) where two parsed YAML trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(diff_paths(a.get(k), b.get(k), path + (k,)) for k in a.keys() | b.keys()))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(set(), *(diff_paths(x, y, path + (i,)) for i, (x, y) in enumerate(zip(a, b))))
    return set() if a == b else {path}


def test_rayservice_embeds_the_shipped_serve_config():
    embedded, shipped = embedded_serve_config()
    assert diff_paths(embedded, shipped) == set(CLUSTER_SPECIFIC), (
        "infra/rayservice-vqa.yaml drifted from the serve config it names; copy the shipped file")
    assert embedded["http_options"]["host"] == "0.0.0.0"
    checkpoint = embedded["applications"][0]["args"]["checkpoint"]
    assert checkpoint.startswith("s3://") and checkpoint.rstrip("/").endswith("/vqa/leaml")


def test_serve_configs_pass_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    for cfg in embedded_serve_config():
        ServeDeploySchema.model_validate(cfg)


# ---------------------------------------------------------------------------------------------
# Resources: what the pods offer Ray vs what the stages ask of it

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(q) -> float:
    m = _QUANTITY.match(str(q))
    assert m and m.group(2) in _SUFFIX, f"unparsable quantity {q!r}"
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def ray_resources(group: dict) -> dict[str, float]:
    """What one pod of a head/worker group offers Ray: rayStartParams, else the container limits
    (as KubeRay derives --num-cpus / --num-gpus / --memory)."""
    params = group.get("rayStartParams") or {}
    (ray_container,) = [c for c in group["template"]["spec"]["containers"] if c["name"].startswith("ray-")]
    res = ray_container.get("resources", {})
    limits = {**res.get("requests", {}), **res.get("limits", {})}
    return {"CPU": float(params.get("num-cpus", quantity(limits.get("cpu", 0)))),
            "GPU": float(params.get("num-gpus", quantity(limits.get("nvidia.com/gpu", 0))))}


def cluster_nodes(spec: dict) -> list[dict[str, float]]:
    """Every pod the cluster can have at full scale, as Ray resource dicts."""
    nodes = [ray_resources(spec["headGroupSpec"])]
    for g in spec.get("workerGroupSpecs", []):
        nodes += [ray_resources(g) for _ in range(g["maxReplicas"])]
    return nodes


def fits(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """First-fit decreasing: can every bundle (one actor's request) be placed on some pod?"""
    free = [dict(n) for n in nodes]
    for b in sorted(bundles, key=lambda b: (b.get("GPU", 0), b.get("CPU", 0)), reverse=True):
        for node in free:
            if all(node.get(k, 0) >= v for k, v in b.items()):
                for k, v in b.items():
                    node[k] -= v
                break
        else:
            return False
    return True


def replicas(cfg) -> int:
    return cfg.autoscaling["max_replicas"] if cfg.num_replicas == "auto" else cfg.num_replicas


def stage_demands(cfg: PipelineConfig) -> dict[str, list[dict[str, float]]]:
    """What each pipeline stage asks of Ray at once (stages run one after another)."""
    stream = [{"CPU": cfg.stream.actor_cpus}] * cfg.stream.num_actors
    cap, qa = cfg.captioner, cfg.qagen
    demands = {
        "caption": [{"CPU": cap.replica_cpus, "GPU": cap.replica_gpus}] * replicas(cap) + stream,
        "pseudo-qa": [{"CPU": qa.replica_cpus, "GPU": qa.replica_gpus}] * replicas(qa) + stream,
        "evaluate": [{"CPU": cfg.evaluation.actor_cpus, "GPU": cfg.evaluation.actor_gpus}] * cfg.evaluation.num_actors,
    }
    trainings = {f"generator {v}": getattr(cfg.generators, v) for v in ("baseline", "distill", "leaml")}
    trainings |= {"vqa": cfg.vqa, "lora": cfg.lora, "fully_supervised": cfg.fully_supervised}
    for name, t in trainings.items():
        s = t.scaling
        demands[name] = [{"CPU": s.cpus_per_worker, "GPU": 1.0 if s.use_gpu else 0.0}] * s.num_workers
    return demands


def preset(name: str) -> PipelineConfig:
    return load_config(PipelineConfig, str(REPO / "ray_jobs" / "configs" / name))


@pytest.mark.parametrize("name", PIPELINE_PRESETS)
def test_pipeline_cluster_holds_every_stage_of_the_preset(name):
    cfg, spec = preset(name), manifest("raycluster.yaml")["spec"]
    nodes = cluster_nodes(spec)
    for stage, bundles in stage_demands(cfg).items():
        assert fits(bundles, nodes), f"{name}: stage {stage} asks {bundles} of pods {nodes}"
    gpus_per_node = max(n["GPU"] for n in nodes)
    cap = cfg.captioner
    assert cap.backend == "vllm" and cap.replica_gpus == cap.tensor_parallel_size, (
        "a vLLM replica must own exactly its engine's tensor-parallel GPUs")
    assert gpus_per_node >= cap.tensor_parallel_size, "tensor parallelism must fit on one node"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # nothing lands on the head


def test_rayservice_cluster_holds_every_deployment_at_max_replicas():
    from leaml.serve.vqa_deployment import MODEL_NAME

    svc = manifest("rayservice-vqa.yaml")
    serve_cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
    bundles = []
    for app in serve_cfg["applications"]:
        for dep in app.get("deployments", []):
            opts = dep.get("ray_actor_options", {})
            n = dep.get("autoscaling_config", {}).get("max_replicas", dep.get("num_replicas", 1))
            bundles += [{"CPU": float(opts.get("num_cpus", 1)), "GPU": float(opts.get("num_gpus", 0))}] * n
            if dep["name"] == MODEL_NAME:  # the replica that holds the model runs it on args.device
                device = app["args"].get("device", "cpu")
                assert (device != "cpu") == (opts.get("num_gpus", 0) > 0), "device and num_gpus must agree"
            else:
                assert opts.get("num_gpus", 0) == 0, f"{dep['name']} holds no model: it needs no GPU"
    assert bundles
    assert fits(bundles, cluster_nodes(svc["spec"]["rayClusterConfig"]))


def all_containers(doc) -> list[dict]:
    if isinstance(doc, dict):
        found = [doc] if "image" in doc and "name" in doc else []
        return found + [c for v in doc.values() for c in all_containers(v)]
    if isinstance(doc, list):
        return [c for v in doc for c in all_containers(v)]
    return []


@pytest.mark.parametrize("name", MANIFESTS)
def test_requests_do_not_exceed_limits(name):
    for c in all_containers(manifest(name)):
        req, lim = c["resources"].get("requests", {}), c["resources"].get("limits", {})
        for k, v in req.items():
            assert k in lim and quantity(v) <= quantity(lim[k]), f"{name}: {c['name']} {k}"
        if "nvidia.com/gpu" in lim:
            assert req.get("nvidia.com/gpu") == lim["nvidia.com/gpu"], "GPU request must equal the limit"


# ---------------------------------------------------------------------------------------------
# The RayJob runs a shipped config


def dockerfile_value(name: str, pattern: str) -> str:
    m = re.search(pattern, (INFRA / name).read_text(), re.MULTILINE)
    assert m, f"{name}: no match for {pattern}"
    return m.group(1)


def test_rayjob_runs_a_shipped_preset_on_the_pipeline_cluster():
    import importlib.util

    job, cluster = manifest("rayjob-pipeline.yaml"), manifest("raycluster.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ray_jobs.pipeline"] and importlib.util.find_spec("ray_jobs.pipeline")
    config, overrides = argv[argv.index("--config") + 1], [a for a in argv[3:] if "=" in a]
    workdir = dockerfile_value("Dockerfile.cpu", r"^WORKDIR\s+(\S+)")
    assert config.startswith(workdir + "/"), f"--config must be a path inside the image's {workdir}"
    local = REPO / config[len(workdir) + 1:]
    assert local.parent == REPO / "ray_jobs" / "configs" and local.exists()
    cfg = load_config(PipelineConfig, str(local), overrides)
    assert cfg.run_dir.startswith("s3://") and cfg.engine == "ray"


# ---------------------------------------------------------------------------------------------
# Secrets


def example_secrets() -> dict[str, set[str]]:
    docs = load_docs(INFRA / "secrets.example.yaml")
    assert all(d["kind"] == "Secret" for d in docs)
    return {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {})) for d in docs}


def secret_refs(doc) -> list[tuple[str, str | None]]:
    """(secret name, key or None for a whole-secret reference) for every reference in ``doc``."""
    out = []
    if isinstance(doc, dict):
        if "secretKeyRef" in doc:
            out.append((doc["secretKeyRef"]["name"], doc["secretKeyRef"]["key"]))
        if "secretRef" in doc:
            out.append((doc["secretRef"]["name"], None))
        if "secretName" in doc:
            out.append((doc["secretName"], None))
        out += [r for v in doc.values() for r in secret_refs(v)]
    elif isinstance(doc, list):
        out += [r for v in doc for r in secret_refs(v)]
    return out


def test_every_referenced_secret_and_key_exists():
    secrets = example_secrets()
    refs = [r for name in MANIFESTS for r in secret_refs(manifest(name))]
    assert refs
    for name, key in refs:
        assert name in secrets, f"secret {name!r} is not in infra/secrets.example.yaml"
        assert key is None or key in secrets[name], f"secret {name!r} has no key {key!r}"


def ray_pods(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"] if c["name"].startswith("ray-")]


def test_pods_get_s3_credentials_and_the_service_gets_its_keys():
    for spec in (manifest("raycluster.yaml")["spec"], manifest("rayservice-vqa.yaml")["spec"]["rayClusterConfig"]):
        for c in ray_pods(spec):  # run dirs and checkpoints are on s3:// everywhere
            assert {"secretRef": {"name": "leaml-s3"}} in c.get("envFrom", []), c["name"]
    embedded, _ = embedded_serve_config()
    key_env = embedded["applications"][0]["args"]["api_keys"]["env"]
    for c in ray_pods(manifest("rayservice-vqa.yaml")["spec"]["rayClusterConfig"]):
        (var,) = [e for e in c.get("env", []) if e["name"] == key_env]
        assert "secretKeyRef" in var.get("valueFrom", {}), f"{key_env} must come from a Secret"


# ---------------------------------------------------------------------------------------------
# Images and pins


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.lower()] = version
    return out


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_images_share_ray_python_and_version():
    version = pyproject()["project"]["version"]
    ray_pin = pins(REPO / "constraints.txt")["ray"]
    for name in MANIFESTS:
        doc = manifest(name)
        specs = [doc["spec"].get("rayClusterConfig", doc["spec"])] if doc["kind"] != "RayJob" else []
        assert all(s["rayVersion"] == ray_pin for s in specs)
        for c in all_containers(doc):
            m = re.fullmatch(r".+/leaml:(.+)-(cpu|gpu)", c["image"])
            assert m and m.group(1) == version, f"{name}: {c['image']} is not leaml:{version}-cpu|gpu"
            wants_gpu = "nvidia.com/gpu" in c["resources"].get("limits", {})
            assert (m.group(2) == "gpu") == wants_gpu, f"{name}: {c['name']} runs the wrong image"
    py = {f: dockerfile_value(f, r"^ARG PYTHON_VERSION=(\S+)") for f in ("Dockerfile.cpu", "Dockerfile.gpu")}
    assert len(set(py.values())) == 1, f"Ray needs one Python on every node: {py}"
    assert dockerfile_value("Dockerfile.cpu", r"^WORKDIR\s+(\S+)") == dockerfile_value("Dockerfile.gpu", r"^WORKDIR\s+(\S+)")


def test_cpu_image_pins_torch_like_the_makefile():
    make_torch = re.search(r"pip install -q torch==(\S+)", (REPO / "Makefile").read_text()).group(1)
    assert dockerfile_value("Dockerfile.cpu", r"^ARG TORCH_VERSION=(\S+)") == make_torch
    assert "-c constraints.txt" in (INFRA / "Dockerfile.cpu").read_text()


def test_gpu_pins_satisfy_the_vllm_extra_and_replace_cpu_pins():
    from packaging.requirements import Requirement

    gpu, cpu = pins(INFRA / "gpu-pins.txt"), pins(REPO / "constraints.txt")
    merged = {**cpu, **gpu}  # what Dockerfile.gpu builds: constraints.txt with gpu-pins.txt on top
    extra = pyproject()["project"]["optional-dependencies"]["vllm"]
    for req in map(Requirement, extra):
        name = req.name.lower()
        assert name in merged, f"the GPU image does not pin {name}"
        assert req.specifier.contains(merged[name], prereleases=True), f"{name}=={merged[name]} violates {req}"
    assert {"vllm", "torch", "transformers"} <= gpu.keys()
    dockerfile = (INFRA / "Dockerfile.gpu").read_text()
    assert "infra/gpu-pins.txt" in dockerfile and "constraints.txt" in dockerfile and "vllm]" in dockerfile
