"""Numerics: per-op local error and saturation of a quantized graph while it translates test sentences.

For backends that can expose their intermediate tensors (``supports_op_numerics()``: the quantized
TFLite variants, on LiteRT's built-in kernels with every tensor kept; ``onnx-static-int8``, on the fused
graph ORT builds, run as saved with its quantized tensors as extra outputs), ``run()`` translates the
first ``sentences`` test sources greedily through the backend's own host loop -- once as one batch, as
deployed (padded: the mask paths run), then one sentence at a time at its own length (no padding row,
no row stepping on after its EOS) -- and measures, for every quantized op of each graph, the op's
output against the same op computed in float on its dequantized inputs (``backends/numerics.py``,
``backends/tflite/numerics.py``, ``backends/onnxrt/numerics.py``):

* **local error** in units of the output's scale (LSB): rounding alone gives ~0.29 LSB rms, never more
  than 0.5; an op beyond ``DEFECT_RMS_LSB`` rms or ``DEFECT_BIAS_LSB`` mean is a *numerics defect*
  (a kernel or quantization parameter that computes something else than the float op);
* **saturation**: the share of the float op's values outside the output's representable range
  (what the calibration's range clips at run time) and how far beyond, counted in the one-sentence
  runs only (padding rows reach no output).

This tells apart the two ways an INT8 graph loses accuracy: every op at the rounding floor means the
loss is the 8-bit grid itself (more bits or fewer quantized tensors are the only levers); a defect or
heavy saturation names the op to fix. The tensors are those of the real test inputs, not of the
calibration set.

Options (``[suites.numerics]``; defaults):

    sentences = 8   # test sources translated (each alone, greedy) while measuring
"""
from __future__ import annotations

from typing import Any

from orchestrator.suites.base import Suite, SuiteContext
from orchestrator.suites.util import check_suite_options, suite_table

DEFAULTS: dict[str, Any] = {"sentences": 8}


class NumericsSuite(Suite):
    name = "numerics"
    description = "per-op local error (LSB) and saturation of a quantized graph while it translates"
    defaults = DEFAULTS
    metrics = ("numerics_defects", "numerics_rms_lsb_max", "numerics_saturated_max")
    lower_is_better = frozenset(metrics)

    def options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        from backends.errors import InvalidInputError

        opts = check_suite_options(table, self.defaults, where)
        if opts["sentences"] < 1:
            raise InvalidInputError(f"{where}: sentences must be >= 1, got {opts['sentences']}")
        return opts

    def supports(self, backend) -> bool:
        return bool(backend.supports_op_numerics())

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        opt = self.options(suite_table(ctx, self.name), f"[suites.{self.name}]")
        sources = ctx.sources[:int(opt["sentences"])]
        enc = ctx.model.encode_sources(sources, backend.max_source_length,
                                       strict=bool(ctx.settings.get("strict_length", False)))
        ctx.report(0, 1, self.name)
        res = backend.op_numerics(enc.input_ids, enc.attention_mask)
        ctx.report(1, 1, self.name)
        graphs = res["graphs"]
        worst = max((r for g in graphs.values() for r in g["worst_error"]), key=lambda r: r["rms_lsb"], default=None)
        sat = max((r for g in graphs.values() for r in g["most_saturated"]), key=lambda r: r["saturated"],
                  default=None)
        return {"sentences": len(sources), "truncated": enc.truncated, **res,
                "metrics": {"numerics_defects": sum(len(g["defects"]) for g in graphs.values()),
                            "numerics_rms_lsb_max": worst["rms_lsb"] if worst else None,
                            "numerics_saturated_max": sat["saturated"] if sat else 0.0}}
