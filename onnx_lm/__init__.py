"""onnx_lm"""
