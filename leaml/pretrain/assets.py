"""Shipped base models: ``assets/base_models/`` -> a verified checkpoint directory for a recipe key.

Layout (a release is a directory per model plus one manifest)::

    assets/base_models/MANIFEST.json        {"version", "models": [{key, role, preset, recipe,
                                              corpus, quality, files: {name: sha256}}]}
    assets/base_models/<key>/               save_pretrained output in bfloat16 + pretrain.json

A model is used only when its key (recipe version, preset, role, settings, corpus; see
:func:`leaml.pipeline.base_models.cache_key`) equals the one asked for and every file's sha256
matches the manifest: a changed recipe falls back to pretraining instead of a silently stale model.
``make base-models`` (``leaml model pretrain --release``) regenerates them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

MANIFEST = "MANIFEST.json"


def assets_dir() -> Path:
    """``$LEAML_ASSETS`` or the repository's ``assets/base_models``."""
    env = os.environ.get("LEAML_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets" / "base_models"


def load_manifest(root: Path | None = None) -> dict:
    path = (root or assets_dir()) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"version": 0, "models": []}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(entry: dict, root: Path | None = None) -> list[str]:
    """Problems with a manifest entry's files (empty: every file present and matching)."""
    folder = (root or assets_dir()) / entry["key"]
    problems = []
    for name, digest in sorted(entry["files"].items()):
        f = folder / name
        if not f.exists():
            problems.append(f"{entry['key']}/{name}: missing")
        elif sha256_file(f) != digest:
            problems.append(f"{entry['key']}/{name}: sha256 differs from the manifest")
    return problems


@lru_cache(maxsize=None)
def _find(key: str, root: str) -> str | None:
    for entry in load_manifest(Path(root))["models"]:
        if entry["key"] == key:
            problems = verify(entry, Path(root))
            if problems:
                raise RuntimeError(f"shipped base model {key} is corrupt: {'; '.join(problems)} "
                                   "(re-checkout assets/ or regenerate with `make base-models`)")
            return str(Path(root) / key)
    return None


def find_asset(key: str) -> str | None:
    """The verified directory of the shipped model with this key, or None when none matches."""
    return _find(key, str(assets_dir()))


def release(model_dir: str, key: str, quality: dict, root: Path | None = None) -> dict:
    """Copy ``model_dir`` into the assets as ``key`` in bfloat16 and record it in the manifest."""
    from leaml.models.builders import load_model, save_model

    root = root or assets_dir()
    folder = root / key
    if folder.exists():
        shutil.rmtree(folder)
    model, processor = load_model(model_dir, dtype="bfloat16")
    save_model(model, processor, str(folder))
    shutil.copy(Path(model_dir) / "pretrain.json", folder / "pretrain.json")
    record = json.loads((folder / "pretrain.json").read_text())
    entry = {"key": key, "role": record["role"], "preset": record["preset"], "recipe": record["settings"],
             "recipe_version": record["recipe_version"], "corpus": record["corpus"], "quality": quality,
             "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}}
    manifest = load_manifest(root)
    manifest["models"] = [m for m in manifest["models"] if m["key"] != key] + [entry]
    manifest["version"] = int(manifest.get("version", 0)) + 1
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _find.cache_clear()
    return entry
