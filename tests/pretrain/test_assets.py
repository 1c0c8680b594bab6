"""Shipped base models: every file matches its manifest, the demo config's sources resolve to them,
they load, and a corrupt or stale asset is never used silently."""
from __future__ import annotations

import json
import shutil

import pytest

from leaml.config import load_config
from leaml.data.endo_world import CORPUS_SEED
from leaml.models.builders import load_model
from leaml.pipeline.base_models import cache_key
from leaml.pipeline.config import PipelineConfig
from leaml.pretrain import assets

MANIFEST = assets.load_manifest()
ENTRIES = MANIFEST["models"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["key"] for e in ENTRIES])
def test_shipped_files_match_the_manifest_and_load(entry):
    assert assets.verify(entry) == []
    folder = assets.assets_dir() / entry["key"]
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["settings"] == entry["recipe"] and record["role"] == entry["role"]
    assert entry["corpus"]["seed"] == CORPUS_SEED  # the corpus has its own seed, no world's
    assert entry["quality"]["general_vqa_accuracy"] > entry["quality"]["general_vqa_prior"]
    model, processor = load_model(str(folder))
    assert model.config.model_type == "qwen2_5_vl" and processor.tokenizer.eos_token


def test_demo_config_uses_the_shipped_base_models():
    cfg = load_config(PipelineConfig, "ray_jobs/configs/demo.yaml", [])
    keys = {e["key"] for e in ENTRIES}
    for role in ("student", "teacher"):
        key = cache_key("", role, getattr(cfg, role))
        assert key in keys, f"{role}: demo.yaml's recipe key {key} has no shipped asset; run `make base-models`"
        assert assets.find_asset(key) is not None
    # whatever the world's seed, the same base models
    other = load_config(PipelineConfig, "ray_jobs/configs/demo.yaml", ["world.seed=17"])
    assert cache_key("", "student", other.student) == cache_key("", "student", cfg.student)


def test_corrupt_asset_is_refused(tmp_path, monkeypatch):
    if not ENTRIES:
        pytest.skip("no shipped assets")
    entry = ENTRIES[0]
    shutil.copytree(assets.assets_dir() / entry["key"], tmp_path / entry["key"])
    (tmp_path / assets.MANIFEST).write_text(json.dumps({"version": 1, "models": [entry]}))
    monkeypatch.setenv("LEAML_ASSETS", str(tmp_path))
    assert assets.find_asset(entry["key"]) == str(tmp_path / entry["key"])
    weights = next(p for p in (tmp_path / entry["key"]).iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assets._find.cache_clear()
    with pytest.raises(RuntimeError, match="sha256 differs"):
        assets.find_asset(entry["key"])
    assert assets.find_asset("no-such-key") is None


def test_release_writes_bf16_files_and_a_manifest_entry(tiny_base, tmp_path):
    (tmp_path / "src").mkdir()
    shutil.copytree(tiny_base, tmp_path / "src" / "m")
    (tmp_path / "src" / "m" / "pretrain.json").write_text(json.dumps(
        {"role": "student", "preset": "tiny-qwen2.5-vl", "settings": {"x": 1}, "recipe_version": 2,
         "corpus": {"seed": CORPUS_SEED}}))
    root = tmp_path / "assets"
    root.mkdir()
    entry = assets.release(str(tmp_path / "src" / "m"), "k1", {"general_vqa_accuracy": 0.5}, root=root)
    assert assets.verify(entry, root) == [] and assets.load_manifest(root)["models"][0]["key"] == "k1"
    model, _ = load_model(str(root / "k1"))
    saved = json.loads((root / "k1" / "config.json").read_text())
    assert "bfloat16" in json.dumps(saved)
