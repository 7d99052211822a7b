"""The decode benchmark (`glimp bench-decode`) and the GPU checks (`glimp gpu-check`).

The genai venv's Python imports this package: nothing here may import beyond the standard library.
"""
