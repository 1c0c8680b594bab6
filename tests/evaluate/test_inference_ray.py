"""Batch inference through a Ray Data actor pool on local Ray gives what the in-process loop gives."""
from __future__ import annotations

import pytest

from leaml.evaluate.inference import InferenceSettings, run_inference
from leaml.records import VQAExample, load_records

pytestmark = pytest.mark.ray


def test_ray_actor_pool_matches_local_loop(tiny_world, tiny_base):
    import ray

    examples = load_records(f"{tiny_world}/test.jsonl", VQAExample)[:20]
    local = run_inference(examples, tiny_base, tiny_world, InferenceSettings(batch_size=8, max_new_tokens=6),
                          engine="local")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # two actors at half a CPU each on 2 cores: the read tasks still get scheduled (no hang)
        cfg = InferenceSettings(batch_size=8, num_actors=2, actor_cpus=0.5, max_new_tokens=6)
        remote = run_inference(examples, tiny_base, tiny_world, cfg, engine="ray")
        options = cfg.model_copy(update={"scoring": "options"})
        remote_options = run_inference(examples[:8], tiny_base, tiny_world, options, engine="ray")
    finally:
        ray.shutdown()
    assert remote == local and len(remote) == 20  # greedy decoding, same order as the input
    local_options = run_inference(examples[:8], tiny_base, tiny_world, options, engine="local")
    assert remote_options == local_options and all(a in ex.options for a, ex in zip(remote_options, examples))
