"""Per-op numerics of ONNX Runtime's statically quantized graphs, measured while they run (the
ONNX Runtime counterpart of ``backends/tflite/numerics.py``; bookkeeping in :mod:`backends.numerics`).

ORT fuses the QDQ model it is given (``DequantizeLinear -> MatMul -> QuantizeLinear`` becomes one
``QLinearMatMul``) when it builds a session. To measure the kernels that actually run, each component
is optimized once at the backend's own graph-optimization level and saved, its measured tensors are
added as graph outputs, and that fused graph is run as saved (no further optimization), so every
fused node runs the kernel the deployed session runs. For every node whose output is a quantized
activation:

* ``QLinearMatMul`` (and ``QLinearAdd``/``QLinearMul`` where present): its output against the float
  matmul (sum, product) of its dequantized inputs, in steps of its output scale;
* ``QuantizeLinear``: its output against its float input (the error is rounding by construction; the
  share beyond the range is what the static calibration clips at run time).

Other quantized node types (QGemm, QLinearSoftmax, QAttention, ...) are counted as not checked. In the
static int8 graphs ORT builds for these models only the linear layers are quantized: attention
matmuls, softmax and layer norms run in float (the audit's op counts say so), so there is less to
check than in a full-INT8 TFLite graph.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError
from backends.numerics import OpErrorStats, dequantize  # per tensor; a weight's [N] scales per column

#: node types whose float reference is modelled here
CHECKED_OPS = ("QLinearMatMul", "QLinearAdd", "QLinearMul", "QuantizeLinear")
#: other node types with a quantized output (counted as not checked)
_OTHER_QUANTIZED = ("QGemm", "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul", "QLinearConv")
_INT_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
              np.dtype(np.int16): (-32768, 32767), np.dtype(np.uint16): (0, 65535)}


def _where(name: str) -> str:
    """A node or tensor name as a location: ``/layers.0/self_attn/q_proj/MatMul`` ->
    ``layers.0/self_attn/q_proj/MatMul``; a tensor's ``_output_0...`` suffix is dropped."""
    name = name.lstrip("/")
    return name.split("_output_")[0] if "_output_" in name else name


class OrtOpNumerics(OpErrorStats):
    """The checked nodes of one fused ONNX graph; ``observe(values)`` after each run, with ``values`` the
    measured tensors by name (:attr:`exposed`)."""

    def __init__(self, model) -> None:
        super().__init__()
        numpy_helper = require("onnx.numpy_helper", "reading ONNX initializers")
        self._consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self._deq_consts: dict[str, np.ndarray] = {}
        self._nodes: list[tuple[str, str, list[str], str]] = []
        self._unmodelled: set[str] = set()
        for k, node in enumerate(model.graph.node):
            op, ins = node.op_type, list(node.input)
            key = node.name or f"{op}_{k}"
            if op in CHECKED_OPS:
                # the quantization parameters: x's (QuantizeLinear), or a's, b's and the output's
                need = 3 if op == "QuantizeLinear" else 8
                params = ins[1:3] + ins[4:8]
                if len(ins) != need or not all(p in self._consts for p in params) \
                        or np.size(self._consts[ins[need - 2]]) != 1:
                    self.not_checked(op)  # computed or per-axis output parameters: not modelled
                    continue
                self._nodes.append((key, op, ins, node.output[0]))
            elif op in _OTHER_QUANTIZED or (op.startswith("QLinear") and op not in CHECKED_OPS):
                self.not_checked(op)
        #: tensors the fused graph must output for :meth:`observe`
        self.exposed = sorted({n for _, op, ins, out in self._nodes
                               for n in [out, ins[0]] + ([ins[3]] if op != "QuantizeLinear" else [])
                               if n not in self._consts})

    def output_types(self) -> dict[str, np.dtype]:
        """Element type of each exposed tensor (from the zero points that quantize it)."""
        types: dict[str, np.dtype] = {}
        for _, op, ins, out in self._nodes:
            if op == "QuantizeLinear":
                types[ins[0]] = np.dtype(np.float32)
                types[out] = self._consts[ins[2]].dtype
            else:  # a and b (b is an activation too in Q.K^T, P.V, QLinearAdd/Mul), and the output
                types[ins[0]] = self._consts[ins[2]].dtype
                types[ins[3]] = self._consts[ins[5]].dtype
                types[out] = self._consts[ins[-1]].dtype
        return {n: types[n] for n in self.exposed}

    def _deq(self, name: str, scale: str, zp: str, values: dict[str, np.ndarray]) -> np.ndarray:
        if name in self._consts:
            x = self._deq_consts.get(name)
            if x is None:
                x = self._deq_consts[name] = dequantize(self._consts[name], self._consts[scale], self._consts[zp])
            return x
        return dequantize(values[name], self._consts[scale], self._consts[zp])

    def observe(self, values: dict[str, np.ndarray]) -> None:
        self.invocations += 1
        for key, op, ins, out in self._nodes:
            if op == "QuantizeLinear":
                ref = np.asarray(values[ins[0]], np.float64)
                scale, zp = ins[1], ins[2]
            else:
                a = self._deq(ins[0], ins[1], ins[2], values)
                b = self._deq(ins[3], ins[4], ins[5], values)
                with np.errstate(all="ignore"):
                    ref = {"QLinearMatMul": np.matmul, "QLinearAdd": np.add, "QLinearMul": np.multiply}[op](a, b)
                scale, zp = ins[-2], ins[-1]
            q = values[out]
            got = dequantize(q, self._consts[scale], self._consts[zp])
            if ref.shape != got.shape:  # a form not modelled here (a broadcast output): counted once
                if key not in self._unmodelled:
                    self._unmodelled.add(key)
                    self.not_checked(op)
                continue
            lo, hi = _INT_RANGE[np.dtype(q.dtype)]
            meta = {"op": op, "tensor": out, "bits": 8 * np.dtype(q.dtype).itemsize,
                    "where": _where(ins[0] if op == "QuantizeLinear" else key)}
            self.record(key, meta, got, ref, float(self._consts[scale]), int(self._consts[zp]), lo, hi)


class ObservedSession:
    """An InferenceSession over a fused graph with extra outputs: ``run(None, feed)`` returns the
    original outputs (in their order) and hands the extra ones to ``observer``."""

    def __init__(self, session, outputs: list[str], extra: list[str], observer: Callable[[dict], None]):
        self._session, self._outputs, self._extra, self._observer = session, outputs, extra, observer

    def run(self, output_names, feed):
        names = list(output_names or self._outputs)
        vals = self._session.run(names + self._extra, feed)
        self._observer(dict(zip(self._extra, vals[len(names):])))
        return vals[:len(names)]


def observed_sessions(files: dict[str, str], roles: tuple[str, ...], threads: int, graph_optimization: str,
                      workdir: str | Path) -> dict[str, tuple[ObservedSession, OrtOpNumerics]]:
    """For each role: the component optimized at ``graph_optimization`` as a session would build it,
    saved under ``workdir``, its measured tensors made outputs, and run as saved."""
    ort = require("onnxruntime", "ONNX Runtime per-op numerics")
    onnx = require("onnx", "ONNX Runtime per-op numerics")
    from backends.onnxrt.sessions import session_options

    out: dict[str, tuple[ObservedSession, OrtOpNumerics]] = {}
    for role in roles:
        fused = Path(workdir) / f"{role}.fused.onnx"
        so, _ = session_options(threads, graph_optimization)
        so.optimized_model_filepath = str(fused)
        try:
            outputs = [o.name for o in ort.InferenceSession(str(files[role]), sess_options=so,
                                                            providers=["CPUExecutionProvider"]).get_outputs()]
            model = onnx.load(str(fused))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"onnxruntime could not optimize {files[role]} for per-op numerics: {exc}") from exc
        stats = OrtOpNumerics(model)
        have = {o.name for o in model.graph.output}
        for name, dtype in stats.output_types().items():
            if name not in have:
                model.graph.output.append(onnx.helper.make_tensor_value_info(
                    name, onnx.helper.np_dtype_to_tensor_dtype(dtype), None))
        onnx.save(model, str(fused))
        raw, _ = session_options(threads, "disable")  # the fused graph as saved: the deployed kernels
        session = ort.InferenceSession(str(fused), sess_options=raw, providers=["CPUExecutionProvider"])
        out[role] = (ObservedSession(session, outputs, [n for n in stats.exposed if n not in outputs],
                                     stats.observe), stats)
    return out


def measure(backend, sessions, files: dict[str, str], input_ids, attention_mask, max_new_tokens: int,
            graph_optimization: str) -> dict[str, Any]:
    """Swap ``sessions`` (a :class:`~backends.onnxrt.sessions.Seq2SeqSessions`) to observed ones, translate
    as :func:`backends.numerics.translate_for_numerics` does, and put the originals back."""
    from backends.numerics import translate_for_numerics

    roles = tuple(r for r in ("encoder", "decoder", "decoder_with_past") if r in sessions.sessions)
    originals = dict(sessions.sessions)
    with tempfile.TemporaryDirectory(prefix="seqquant-ort-numerics-") as tmp:
        observed = observed_sessions(files, roles, backend.threads, graph_optimization, tmp)
        stats = {role: st for role, (_, st) in observed.items()}
        try:
            sessions.sessions.update({role: s for role, (s, _) in observed.items()})
            translate_for_numerics(backend, stats, input_ids, attention_mask, max_new_tokens)
        finally:
            sessions.sessions.update(originals)
    return {"kernels": f"onnxruntime CPU, graph optimization '{graph_optimization}' (the fused graph as saved)",
            "saturation_padding_rows": False,
            "graphs": {role: st.summary() for role, st in stats.items()}}
