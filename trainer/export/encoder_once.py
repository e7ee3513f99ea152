"""Does an exported image policy run its encoder once per plan?

The rs_imle generator graph takes one observation ([1, To, ...]) and N latents z. The image encoder
runs once per plan exactly when none of its nodes depends on z: onnxruntime evaluates every node
once per call, and the condition [1, C] meets the N candidates only in the U-Net's FiLM layers.
This reads the dependency from the graph itself, so a change that expanded the observation to N
copies before the encoder (N times the encoder's cost) is an export error, not a slow robot.
"""
from __future__ import annotations

from pathlib import Path

IMAGE_CONV_OPS = ("Conv", "QLinearConv", "FusedConv", "ConvInteger")


def nodes_on(model, source: str) -> set[str]:
    """Names of the nodes that depend on graph input ``source`` (ONNX nodes are in topological order)."""
    tainted, hit = {source}, set()
    for node in model.graph.node:
        if any(i in tainted for i in node.input):
            hit.add(node.name)
            tainted.update(node.output)
    return hit


def image_convs(model) -> list:
    """Convolutions with 4-D weights (over images: the U-Net's are 1-D), directly or through a
    DequantizeLinear of a 4-D initializer (QDQ int8 graphs)."""
    dims = {t.name: len(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:  # QDQ: weight -> DequantizeLinear -> Conv
        if node.op_type == "DequantizeLinear" and dims.get(node.input[0]) == 4:
            dims[node.output[0]] = 4
    return [n for n in model.graph.node if n.op_type in IMAGE_CONV_OPS and any(dims.get(i) == 4 for i in n.input)]


def encoder_convs_on_z(path: str | Path, latent: str = "z") -> tuple[int, list[str]]:
    """(image convolutions in the graph, names of those that depend on ``latent``: must be empty)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    convs = image_convs(model)
    on = nodes_on(model, latent)
    return len(convs), [n.name for n in convs if n.name in on]
