"""The VQA REST service: a FastAPI app (``vqa_app``) served on Ray Serve (``vqa_deployment``).

``client`` needs only httpx; ``vqa_app`` needs the ``serve`` extra; nothing here imports Ray until
a deployment is built. See ``serve_configs/vqa.yaml`` and the README for running it.
"""
