"""``evaluation.scoring=options``: each question is answered with the option the model finds most
likely, questions without options are still generated, and a re-scored run keeps its own rows."""
from __future__ import annotations

import numpy as np

from leaml.config import load_config
from leaml.evaluate.inference import InferenceSettings, VQAAnswerer, run_inference
from leaml.pipeline.config import PipelineConfig
from leaml.pipeline.graph import Run, gap_note
from leaml.records import EvalRow, EvalScores, VQAExample, load_records


def test_options_scoring_answers_with_the_most_likely_option(tiny_world, tiny_base):
    from leaml.media import load_media
    from leaml.models.answer import score_options
    from leaml.prompts import vqa_prompt

    examples = load_records(f"{tiny_world}/test.jsonl", VQAExample)[:6]
    assert all(len(ex.options) >= 2 for ex in examples)
    answers = run_inference(examples, tiny_base, tiny_world,
                            InferenceSettings(batch_size=4, scoring="options"), engine="local")
    predictor = VQAAnswerer({"model": tiny_base})
    media = [load_media(ex.media, root=tiny_world) for ex in examples]
    probs = score_options(predictor.model, predictor.processor, media,
                          [vqa_prompt(ex.question, ex.options) for ex in examples], [ex.options for ex in examples])
    assert answers == [ex.options[int(np.argmax(p))] for ex, p in zip(examples, probs)]


def test_a_question_without_options_is_generated(tiny_world, tiny_base):
    ex = load_records(f"{tiny_world}/test.jsonl", VQAExample)[0]
    open_ended = ex.model_copy(update={"options": []})
    cfg = dict(max_new_tokens=6)
    scored = run_inference([open_ended, ex], tiny_base, tiny_world, InferenceSettings(**cfg, scoring="options"),
                           engine="local")
    generated = run_inference([open_ended], tiny_base, tiny_world, InferenceSettings(**cfg), engine="local")
    assert scored[0] == generated[0] and scored[1] in ex.options


def test_rescoring_a_run_writes_its_own_rows():
    cfg = load_config(PipelineConfig, "ray_jobs/configs/demo_quick.yaml", ["run_dir=/tmp/r"])
    rescored = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"scoring": "options"})})
    assert Run(cfg).eval_dir == "/tmp/r/eval" and Run(rescored).eval_dir == "/tmp/r/eval-options"


def test_gap_note_cites_the_paper_figure_of_its_domain():
    rows = [EvalRow(method=r, model=r, row=r, scores=EvalScores(categories={}, mean_of_categories=v, overall=v, n=0))
            for r, v in (("leaml", 0.42), ("full", 0.40), ("fully_supervised", 0.44))]
    assert "SPORTU" in gap_note(rows, "sport") and "Kvasir-VQA" in gap_note(rows, "endo")
