"""The edge <-> cloud contract: generated messages (`edge_cloud_v1_pb2`) and shared helpers.

Bottom layer, beside `onnx_lm`: both the edge client and the cloud service import it.
"""
