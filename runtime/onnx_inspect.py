"""What an ONNX file holds, read without the ``onnx`` package (the robot has only onnxruntime).

A minimal, bounded protobuf walk over the few ONNX messages a check needs: the operators (domain and
type) of the main graph, the opset imports, the graph's inputs and outputs (element type and shape),
the element types of the initialisers, and anything a robot must refuse before onnxruntime ever sees
the file: subgraphs (control flow), model-local functions, training info, external data.
Every length is checked against the buffer; a truncated or malformed file is an :class:`OnnxFormatError`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_NODES = 200_000
MAX_VALUE_INFOS = 1024


class OnnxFormatError(ValueError):
    """Not a well-formed ONNX model (truncated, corrupt, or using a form the runtime does not accept)."""


# TensorProto.DataType -> onnxruntime's type string
ELEM_TYPES = {1: "tensor(float)", 2: "tensor(uint8)", 3: "tensor(int8)", 4: "tensor(uint16)", 5: "tensor(int16)",
              6: "tensor(int32)", 7: "tensor(int64)", 8: "tensor(string)", 9: "tensor(bool)", 10: "tensor(float16)",
              11: "tensor(double)", 12: "tensor(uint32)", 13: "tensor(uint64)", 16: "tensor(bfloat16)"}


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str  # e.g. "tensor(float)"
    shape: tuple  # ints for fixed axes, strings for named axes, None for unknown


@dataclass
class GraphSummary:
    ir_version: int = 0
    opsets: dict = field(default_factory=dict)  # domain -> version
    ops: Counter = field(default_factory=Counter)  # (domain, op_type) -> count
    inputs: list = field(default_factory=list)  # [ValueInfo]
    outputs: list = field(default_factory=list)
    initializer_types: Counter = field(default_factory=Counter)  # data_type -> count
    initializer_names: set = field(default_factory=set)
    external_data: list = field(default_factory=list)  # names of initialisers stored outside the file
    subgraphs: int = 0  # attributes holding graphs (If/Loop/Scan bodies)
    functions: int = 0  # model-local functions
    training_info: bool = False


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end:
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value) for each field of the message in buf[start:end]; value is an int for
    varints and fixed fields, and a (start, end) span for length-delimited ones."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise OnnxFormatError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos, end)
            yield num, wt, val
        elif wt == 1:
            if pos + 8 > end:
                raise OnnxFormatError("truncated fixed64")
            yield num, wt, int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 5:
            if pos + 4 > end:
                raise OnnxFormatError("truncated fixed32")
            yield num, wt, int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise OnnxFormatError(f"field {num} claims {n} bytes, {end - pos} remain (truncated file)")
            yield num, wt, (pos, pos + n)
            pos += n
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wt}")
    if pos != end:
        raise OnnxFormatError("message overruns its length")


def _str(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise OnnxFormatError("a name is not UTF-8") from None


def _need_span(wt: int, what: str) -> None:
    if wt != 2:
        raise OnnxFormatError(f"{what} has the wrong wire type")


def _value_info(buf: memoryview, span) -> ValueInfo:
    name, dtype, shape = "", "unknown", None
    for num, wt, v in _fields(buf, *span):
        if num == 1 and wt == 2:
            name = _str(buf, v)
        elif num == 2 and wt == 2:  # TypeProto
            for tn, twt, tv in _fields(buf, *v):
                if tn == 1 and twt == 2:  # TypeProto.Tensor
                    dims = []
                    for en, ewt, ev in _fields(buf, *tv):
                        if en == 1 and ewt == 0:
                            dtype = ELEM_TYPES.get(ev, f"type{ev}")
                        elif en == 2 and ewt == 2:  # TensorShapeProto
                            for dn, dwt, dv in _fields(buf, *ev):
                                if dn == 1 and dwt == 2:  # Dimension
                                    dim = None
                                    for xn, xwt, xv in _fields(buf, *dv):
                                        if xn == 1 and xwt == 0:
                                            dim = xv - (1 << 64) if xv >= 1 << 63 else xv
                                        elif xn == 2 and xwt == 2:
                                            dim = _str(buf, xv)
                                    dims.append(dim)
                                    if len(dims) > 64:
                                        raise OnnxFormatError("tensor with more than 64 dimensions")
                            shape = tuple(dims)
                    if shape is None:
                        shape = ()
                else:
                    dtype = "non-tensor"
    return ValueInfo(name, dtype, shape if shape is not None else ())


def _tensor(buf: memoryview, span, s: GraphSummary, initializer: bool) -> None:
    name, dtype, external = "", 0, False
    for num, wt, v in _fields(buf, *span):
        if num == 8 and wt == 2:
            name = _str(buf, v)
        elif num == 2 and wt == 0:
            dtype = v
        elif num == 14 and wt == 0 and v == 1:  # data_location EXTERNAL
            external = True
        elif num == 13:  # external_data entries
            external = True
    if external:
        s.external_data.append(name or "?")
    if initializer:
        s.initializer_types[dtype] += 1
        s.initializer_names.add(name)


def _node(buf: memoryview, span, s: GraphSummary) -> None:
    op, domain = "", ""
    for num, wt, v in _fields(buf, *span):
        if num == 4 and wt == 2:
            op = _str(buf, v)
        elif num == 7 and wt == 2:
            domain = _str(buf, v)
        elif num == 5 and wt == 2:  # AttributeProto
            for an, awt, av in _fields(buf, *v):
                if an in (6, 11):  # g / graphs: a subgraph
                    s.subgraphs += 1
                elif an in (5, 10) and awt == 2:  # t / tensors (e.g. a Constant's value)
                    _tensor(buf, av, s, initializer=False)
    s.ops[("" if domain == "ai.onnx" else domain, op)] += 1
    if sum(s.ops.values()) > MAX_NODES:
        raise OnnxFormatError(f"more than {MAX_NODES} nodes")


def inspect_model(data: bytes) -> GraphSummary:
    """Summarise an ONNX ModelProto held in ``data``; OnnxFormatError for anything malformed."""
    buf = memoryview(data)
    s = GraphSummary()
    graphs = 0
    for num, wt, v in _fields(buf, 0, len(buf)):
        if num == 1 and wt == 0:
            s.ir_version = v
        elif num == 8:
            _need_span(wt, "opset_import")
            dom, ver = "", 0
            for on, owt, ov in _fields(buf, *v):
                if on == 1 and owt == 2:
                    dom = _str(buf, ov)
                elif on == 2 and owt == 0:
                    ver = ov
            s.opsets["" if dom == "ai.onnx" else dom] = ver
        elif num == 25:
            s.functions += 1
        elif num == 20:
            s.training_info = True
        elif num == 7:
            _need_span(wt, "graph")
            graphs += 1
            for gn, gwt, gv in _fields(buf, *v):
                if gwt != 2:
                    continue
                if gn == 1:
                    _node(buf, gv, s)
                elif gn == 5:
                    _tensor(buf, gv, s, initializer=True)
                elif gn == 15:  # sparse initializer: values and indices tensors
                    for sn, swt, sv in _fields(buf, *gv):
                        if sn in (1, 2) and swt == 2:
                            _tensor(buf, sv, s, initializer=True)
                elif gn in (11, 12):
                    vi = _value_info(buf, gv)
                    (s.inputs if gn == 11 else s.outputs).append(vi)
                    if len(s.inputs) + len(s.outputs) > MAX_VALUE_INFOS:
                        raise OnnxFormatError(f"more than {MAX_VALUE_INFOS} graph inputs and outputs")
    if graphs != 1:
        raise OnnxFormatError(f"expected one graph, found {graphs} (not an ONNX model, or truncated)")
    if not s.ops:
        raise OnnxFormatError("the graph has no operators")
    # graph inputs that are initialisers (older exporters) are weights, not feeds
    s.inputs = [vi for vi in s.inputs if vi.name not in s.initializer_names]
    return s
