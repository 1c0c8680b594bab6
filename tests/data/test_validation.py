import json

import pytest

from leaml.data.endo_world import WorldConfig, build_world
from leaml.data.validation import carve_validation
from leaml.records import MediaRef, VQAExample, load_records


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(seed=4, n_general=4, n_endo_train=40, n_endo_test=8, n_teacher_pool=2,
                            labeled_fraction=0.1), str(out), workers=1)
    return out


def test_carved_split_holds_out_train_media_and_never_reads_test(world, tmp_path):
    sizes = carve_validation(str(world), str(tmp_path / "val"), n_media=10, seed=1)
    read = lambda d, n: load_records(str(d / n), VQAExample)  # noqa: E731
    src_train, src_test = read(world, "train.jsonl"), read(world, "test.jsonl")
    train, val = read(tmp_path / "val", "train.jsonl"), read(tmp_path / "val", "test.jsonl")
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in src_train}
    assert not {e.media.id for e in train} & {e.media.id for e in val}
    assert len({e.media.id for e in val}) == sizes["test_media"] == 10
    assert not {e.media.id for e in val} & {e.media.id for e in src_test}
    assert all(e.split == "test" for e in val)
    labeled = read(tmp_path / "val", "labeled.jsonl")
    assert labeled and {e.id for e in labeled} <= {e.id for e in train}
    unlabeled = load_records(str(tmp_path / "val" / "unlabeled.jsonl"), MediaRef)
    assert not {m.id for m in unlabeled} & ({e.media.id for e in labeled} | {e.media.id for e in val})
    meta = json.loads((tmp_path / "val" / "world.json").read_text())
    assert meta["validation"]["held_out_media"] == 10 and meta["domain"] == "endo"
    assert (tmp_path / "val" / val[0].media.uri).exists()  # media reachable through the link


def test_carving_everything_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="hold out at least one"):
        carve_validation(str(world), str(tmp_path / "val"), n_media=40)
