"""The bottom package: the project's error root and the environment-twin helper.

It imports nothing outside the standard library, so every role (edge, cloud, export, bench) may
import it without pulling in ONNX Runtime, Triton or torch.
"""
