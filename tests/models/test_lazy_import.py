"""``leaml.models`` resolves its names lazily: the processor limits (imported by the VQA gateway) come
without torch and transformers, while ``from leaml.models import X`` still works and still registers
the image-only Qwen2.5-VL processor before anything can load a model. Each check runs in a fresh
interpreter, because this test process has long imported torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_limits_and_the_package_import_without_torch():
    assert _run("""
        import sys
        import leaml.models, leaml.models.limits
        from leaml.models.limits import ModelInputError
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """) == "[]"


def test_every_package_name_resolves_and_registers_the_processor_first():
    assert _run("""
        import leaml.models as m
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
        from leaml.models import PRESETS, ModelSpec, build_model, load_model, save_model
        from leaml.models import builders
        assert load_model is builders.load_model and m.build_model is builders.build_model
        assert set(m.__all__) <= set(dir(m))
        assert builders.Qwen2_5_VLImageProcessorOnly in PROCESSOR_MAPPING._extra_content.values()
        try:
            from leaml.models import no_such_name
        except ImportError:
            print("ok")
    """) == "ok"
