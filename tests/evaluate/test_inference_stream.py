"""Evaluation on the one stream: a question whose media is broken is an error row (answered "", so
wrong) while the others are answered; a re-run resumes the written shards; other settings redo them."""
from __future__ import annotations

import shutil

import pytest

from leaml.evaluate.inference import InferenceSettings, VQAAnswerer, run_inference
from leaml.records import VQAExample, load_records
from leaml.streaming import read_errors


def test_broken_media_is_an_error_row_and_a_rerun_resumes(tiny_world, tiny_base, tmp_path, monkeypatch):
    examples = load_records(f"{tiny_world}/test.jsonl", VQAExample)[:6]
    root = tmp_path / "data"
    shutil.copytree(f"{tiny_world}/media", root / "media")
    broken = examples[2].media
    (root / broken.uri).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    bad = [i for i, ex in enumerate(examples) if ex.media.uri == broken.uri]
    settings = InferenceSettings(batch_size=4, shard_size=2, max_new_tokens=4)
    stream = str(tmp_path / "stream")

    answers = run_inference(examples, tiny_base, str(root), settings, engine="local", stream_dir=stream)
    intact = run_inference(examples, tiny_base, tiny_world, settings, engine="local")
    assert [a for i, a in enumerate(answers) if i in bad] == [""] * len(bad)
    assert [a for i, a in enumerate(answers) if i not in bad] == [a for i, a in enumerate(intact) if i not in bad]
    errors = read_errors(stream)
    assert [e.media_id for e in errors] == [broken.id] * len(bad) and all("MediaError" in e.reason for e in errors)

    def no_model(*_):
        raise AssertionError("a resumed evaluation loads no model")

    with monkeypatch.context() as m:
        m.setattr(VQAAnswerer, "__init__", no_model)
        assert run_inference(examples, tiny_base, str(root), settings, engine="local", stream_dir=stream) == answers
        with pytest.raises(AssertionError, match="loads no model"):  # other answering settings: redone
            run_inference(examples, tiny_base, str(root), settings.model_copy(update={"max_new_tokens": 5}),
                          engine="local", stream_dir=stream)
