"""The VQA REST service: a FastAPI app (``vqa_app``) served on Ray Serve as a light gateway
(``gateway``: keys, decoding, limits) in front of model replicas (``vqa_deployment``).

``client`` needs only httpx; ``vqa_app`` needs the ``serve`` extra; nothing here imports Ray until
a deployment is built, nor torch outside a model replica. See ``serve_configs/vqa.yaml`` and the
README for running it.
"""
