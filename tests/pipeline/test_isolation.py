"""No poison pills: a batch with one item the model refuses is split until that item alone is an
error row and the rest are kept; a failure of the model server is retried with backoff instead."""
from __future__ import annotations

import math

import pytest
from PIL import Image

from leaml.records import MediaRef, StreamCounts
from leaml.streaming import (ItemFailure, RetrySettings, StreamConfig, StreamItem, call_isolating, is_server_failure,
                             read_errors, read_shards, run_sharded)


class Refuses:
    """A fake model: upper-cases items, refuses any batch holding ``bad`` (as a processor would)."""

    def __init__(self, bad: set[str]):
        self.bad, self.calls = bad, []

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if self.bad & set(items):
            raise ValueError("absolute aspect ratio must be smaller than 200")
        return [s.upper() for s in items]


def test_bisection_isolates_the_refused_item_and_keeps_the_rest():
    items = [f"m{i:02d}" for i in range(16)]
    model = Refuses({"m11"})
    out = call_isolating(model, items)
    assert out[11] == ItemFailure("model: ValueError: absolute aspect ratio must be smaller than 200")
    assert [o for i, o in enumerate(out) if i != 11] == [s.upper() for s in items if s != "m11"]
    assert len(model.calls) == 1 + 2 * int(math.log2(16))  # the batch, then two halves per level
    assert sorted(x for c in model.calls if len(c) == 1 for x in c) == ["m10", "m11"]


def test_two_refused_items_and_a_batch_of_one():
    out = call_isolating(Refuses({"a", "e"}), list("abcdefg"))
    assert [isinstance(o, ItemFailure) for o in out] == [True, False, False, False, True, False, False]
    assert call_isolating(Refuses({"x"}), ["x"]) == [ItemFailure("model: ValueError: absolute aspect ratio "
                                                                 "must be smaller than 200")]


def test_a_dead_replica_is_retried_with_backoff_not_blamed_on_items():
    from ray.exceptions import ActorDiedError

    waits, calls = [], []

    def flaky(items):
        calls.append(items)
        if len(calls) <= 3:  # the replica died; Serve is starting another
            raise ActorDiedError()
        return [s.upper() for s in items]

    retry = RetrySettings(attempts=5, backoff_s=0.5, max_backoff_s=1.5)
    assert call_isolating(flaky, ["a", "b"], retry, sleep=waits.append) == ["A", "B"]
    assert waits == [0.5, 1.0, 1.5] and all(c == ["a", "b"] for c in calls)  # never split

    def dead(items):
        raise ActorDiedError()

    with pytest.raises(ActorDiedError):  # attempts spent: the stage fails, a re-run resumes
        call_isolating(dead, ["a", "b"], retry, sleep=waits.append)
    assert is_server_failure(ActorDiedError()) and not is_server_failure(ValueError("bad item"))


def test_reports_captioner_refuses_one_item_and_the_stage_keeps_the_others(tmp_path):
    # the reports backend refuses a batch that has an item without a report: a model-side failure
    from leaml.pipeline.captioner import CaptionRequester

    rows = [StreamItem(item_id=f"m{i}", media=MediaRef(id=f"m{i}", uri=f"media/m{i}.png"), media_root=str(tmp_path),
                       report=None if i == 2 else f"report {i}") for i in range(6)]
    (tmp_path / "media").mkdir()
    for r in rows:
        Image.new("RGB", (32, 32)).save(tmp_path / r.media.uri)
    counts = run_sharded(rows, CaptionRequester, {"target": {"local": {"backend": "reports"}}, "num_frames": 1},
                         str(tmp_path / "out"), "caption", StreamConfig(batch_size=6, shard_size=3),
                         engine="local")
    assert counts == StreamCounts(inputs=6, errors=1, records=5)
    [err] = read_errors(str(tmp_path / "out"))
    assert err.media_id == "m2" and err.reason.startswith("model: ValueError: the reports backend needs")
    assert sorted(c["media_id"] for c in read_shards(str(tmp_path / "out"))) == ["m0", "m1", "m3", "m4", "m5"]


def test_a_real_processor_limit_is_an_error_row_before_the_model_runs(tmp_path, tiny_base):
    # Qwen2.5-VL's processor refuses aspect ratios over 200:1; the check says so without a forward pass
    from leaml.pipeline.captioner import CaptionRequester

    (tmp_path / "media").mkdir()
    sizes = {"ok0": (64, 48), "thin": (1, 300), "ok1": (48, 64)}
    for name, size in sizes.items():
        Image.new("RGB", size, (120, 40, 40)).save(tmp_path / "media" / f"{name}.png")
    rows = [StreamItem(item_id=n, media=MediaRef(id=n, uri=f"media/{n}.png"), media_root=str(tmp_path)) for n in sizes]
    target = {"local": {"model": tiny_base, "max_new_tokens": 3, "device": "cpu"}}
    counts = run_sharded(rows, CaptionRequester, {"target": target, "num_frames": 1}, str(tmp_path / "out"),
                         "caption", StreamConfig(batch_size=3, shard_size=3), engine="local")
    assert counts == StreamCounts(inputs=3, errors=1, records=2)
    [err] = read_errors(str(tmp_path / "out"))
    assert err.media_id == "thin" and "ModelInputError" in err.reason and "200:1" in err.reason


def test_processor_limits_per_backbone(tiny_base):
    from leaml.models.builders import load_model
    from leaml.models.limits import ModelInputError, check_media, context_length, frame_tokens

    model, processor = load_model(tiny_base)
    assert context_length(model) == 2048
    assert frame_tokens(processor, 64, 64) == 16  # (64 / (8 * 2))**2 for the tiny Qwen2.5-VL
    check_media(processor, [Image.new("RGB", (64, 64))] * 8, context_length(model))
    with pytest.raises(ModelInputError) as e:
        check_media(processor, [Image.new("RGB", (64, 64))] * 120, context_length(model))
    assert e.value.code == "too_many_tokens"
    with pytest.raises(ModelInputError) as e:
        check_media(processor, [Image.new("RGB", (1, 300))], context_length(model))
    assert e.value.code == "unsupported_aspect_ratio"


@pytest.mark.parametrize("size", [(64, 64), (1, 1), (7, 1000), (300, 40), (640, 480), (2, 399)])
def test_frame_tokens_match_what_the_processor_makes(tiny_base, size):
    from leaml.models.builders import load_model
    from leaml.models.limits import frame_tokens

    _, processor = load_model(tiny_base)
    ip = processor.image_processor
    grid = ip(images=[Image.new("RGB", size)], return_tensors="pt")["image_grid_thw"][0]
    assert frame_tokens(processor, *size) == int(grid.prod()) // ip.merge_size ** 2


@pytest.fixture(scope="module")
def tiny_llava(tiny_world, tmp_path_factory):
    from leaml.models.init import init_base_model

    return init_base_model("tiny-llava", tiny_world, str(tmp_path_factory.mktemp("llava") / "model"))


def test_llava_frames_cost_a_fixed_token_count_and_any_aspect_ratio_passes(tiny_llava):
    from leaml.models.batching import prompt_texts
    from leaml.models.builders import load_model
    from leaml.models.limits import check_media, context_length, frame_tokens

    model, processor = load_model(tiny_llava)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    for size in [(64, 64), (1, 300), (500, 20)]:
        img = Image.new("RGB", size)
        ids = processor(text=prompt_texts(processor, [[img]], ["q"]), images=[img], return_tensors="pt")["input_ids"]
        assert frame_tokens(processor, *size) == int((ids == image_id).sum())
        check_media(processor, [img], context_length(model))  # CLIP resizes and crops: no ratio limit
