"""``write_html(report, path)``: a self-contained report.html (no scripts, no external files).

Plots are inline SVG written by hand: BLEU vs p50 latency scatter, size bars, divergence-step
histograms (one small chart per backend), cross-source first-step cosine per backend (with the
source-blind threshold). Tables: summary, verdicts with evidence, selection, boundary matrix,
divergence margins, per-op numerics, baseline regressions. Missing data (a suite that did not run)
just leaves its section out.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from orchestrator.report_tables import (artifacts_texts, bar_text, baseline_machine_text, baseline_reuse_text,
                                        evidence_text, first_step_texts, fmt, margins_table, machine_text,
                                        numerics_table, outputs_texts, ranking_text, teacher_forced_texts)

COLORS = {"pass": "#2a9d4b", "calibration": "#d9822b", "mask": "#d35400", "kernel": "#a0522d", "precision": "#e67e22",
          "boundary": "#b5651d", "activation-ranges": "#8e44ad", "tflite-specific": "#c0392b", "runtime-specific": "#c0392b",
          "model-inherent": "#7d3c98", "export-convention": "#2c6fbb", None: "#888888"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.kind{padding:1px 6px;border-radius:3px;color:#fff;font-size:12px}
.muted{color:#777;font-size:12px}svg text{font-family:system-ui,sans-serif}ul.ev{margin:2px 0 8px 0;font-size:12px}
.bad{color:#c0392b;font-weight:600}.good{color:#2a9d4b}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(x: Any, nd: int = 2) -> str:
    return "–" if x is None else _e(fmt(x, nd))


def _m(b: dict[str, Any], key: str) -> Any:
    return (b.get("metrics") or {}).get(key)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _kind(b: dict[str, Any]) -> str | None:
    return (b.get("verdict") or {}).get("kind")


def _badge(kind: str | None) -> str:
    if kind is None:
        return "–"
    return f'<span class="kind" style="background:{COLORS.get(kind, "#888")}">{_e(kind)}</span>'


def _size(b: dict[str, Any]) -> Any:
    from orchestrator.attribution import size_bytes

    return size_bytes({"backends": {"x": b}}, "x")


# ---------------------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------------------
def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def svg_scatter(points: list[tuple[str, float, float, str]], xlabel: str, ylabel: str,
                w: int = 640, h: int = 360) -> str:
    """points: (label, x, y, color)."""
    if not points:
        return ""
    ml, mr, mt, mb = 60, 150, 16, 44
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = max(0.0, min(ys) - 5), max(ys) + 2
    px = lambda x: ml + (x - x0) / (x1 - x0) * (w - ml - mr)  # noqa: E731
    py = lambda y: h - mb - (y - y0) / (y1 - y0) * (h - mt - mb)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="{_e(ylabel)} vs {_e(xlabel)}">',
           f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="none" stroke="#ccc"/>']
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{px(t):.1f}" y1="{h - mb}" x2="{px(t):.1f}" y2="{h - mb + 4}" stroke="#999"/>'
                   f'<text x="{px(t):.1f}" y="{h - mb + 16}" font-size="11" text-anchor="middle">{t:.0f}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{ml - 4}" y1="{py(t):.1f}" x2="{ml}" y2="{py(t):.1f}" stroke="#999"/>'
                   f'<text x="{ml - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end">{t:.1f}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2:.0f}" y="{h - 8}" font-size="12" text-anchor="middle">{_e(xlabel)}</text>'
               f'<text x="14" y="{(mt + h - mb) / 2:.0f}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {(mt + h - mb) / 2:.0f})">{_e(ylabel)}</text>')
    for label, x, y, color in points:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{color}" fill-opacity="0.85">'
                   f'<title>{_e(label)}: {ylabel} {y:.2f}, {xlabel} {x:.1f}</title></circle>'
                   f'<text x="{px(x) + 7:.1f}" y="{py(y) + 4:.1f}" font-size="11">{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_hbars(rows: list[tuple[str, float, str]], unit: str, w: int = 640, line: float | None = None,
              line_label: str = "", xmax: float | None = None) -> str:
    """Horizontal bars: (label, value, color); optional vertical marker line at ``line``."""
    if not rows:
        return ""
    ml, mr, bh, gap, mt = 170, 70, 16, 6, 8
    h = mt + len(rows) * (bh + gap) + 24
    vmax = xmax if xmax is not None else max(max(v for _, v, _ in rows), line or 0.0) or 1.0
    sx = lambda v: ml + max(0.0, v) / vmax * (w - ml - mr)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    for i, (label, v, color) in enumerate(rows):
        y = mt + i * (bh + gap)
        out.append(f'<text x="{ml - 6}" y="{y + bh - 4}" font-size="11" text-anchor="end">{_e(label)}</text>'
                   f'<rect x="{ml}" y="{y}" width="{sx(v) - ml:.1f}" height="{bh}" fill="{color}"/>'
                   f'<text x="{sx(v) + 4:.1f}" y="{y + bh - 4}" font-size="11">{v:.4g} {_e(unit)}</text>')
    if line is not None:
        x = sx(line)
        out.append(f'<line x1="{x:.1f}" y1="{mt - 4}" x2="{x:.1f}" y2="{h - 20}" stroke="#c0392b" '
                   f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{h - 6}" font-size="11" fill="#c0392b" '
                   f'text-anchor="middle">{_e(line_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_histogram(title: str, hist: dict[str, int], color: str, w: int = 280, h: int = 120) -> str:
    if not hist:
        return ""
    labels = list(hist)
    vals = [hist[k] for k in labels]
    vmax = max(vals) or 1
    ml, mb, mt = 8, 28, 18
    bw = (w - 2 * ml) / len(labels)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">'
           f'<text x="{ml}" y="12" font-size="12" font-weight="600">{_e(title)}</text>']
    for i, (k, v) in enumerate(zip(labels, vals)):
        bh = (h - mt - mb) * v / vmax
        x = ml + i * bw
        fill = "#bbb" if k == "identical" else color
        out.append(f'<rect x="{x + 1:.1f}" y="{h - mb - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="{fill}">'
                   f'<title>{_e(k)}: {v}</title></rect>'
                   f'<text x="{x + bw / 2:.1f}" y="{h - mb + 11}" font-size="9" text-anchor="middle">{_e(k)}</text>')
        if v:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{h - mb - bh - 2:.1f}" font-size="9" '
                       f'text-anchor="middle">{v}</text>')
    out.append(f'<text x="{w / 2:.0f}" y="{h - 3}" font-size="10" text-anchor="middle" fill="#777">first divergent '
               f'token index (identical = grey)</text></svg>')
    return "".join(out)


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------
def _summary_table(report: dict[str, Any]) -> str:
    head = ["backend", "status", "runtime", "precision", "BLEU", "ΔBLEU", "p (bootstrap)", "chrF", "exact match",
            "x-src cos", "source-blind", "p50 ms", "p90 ms", "MB", "verdict"]
    rows = ["<table><tr>" + "".join(f'<th class="{"l" if i < 4 else ""}">{_e(h)}</th>' for i, h in enumerate(head))
            + "</tr>"]
    for name, b in report.get("backends", {}).items():
        sig = b.get("signature") or {}
        size = _size(b)
        blind = _m(b, "source_blind")
        cells = [f'<td class="l">{_e(name)}</td>',
                 f'<td class="l">{_e(b.get("status"))}</td>', f'<td class="l">{_e(sig.get("runtime"))}</td>',
                 f'<td class="l">{_e(sig.get("precision"))}</td>',
                 f"<td>{_fmt(_m(b, 'bleu'))}</td>", f"<td>{_fmt(_m(b, 'bleu_delta_vs_reference'))}</td>",
                 f"<td>{_fmt(_m(b, 'bleu_p_value_vs_reference'), 3)}</td>", f"<td>{_fmt(_m(b, 'chrf'))}</td>",
                 f"<td>{_fmt(_m(b, 'exact_match_vs_reference'), 3)}</td>",
                 f"<td>{_fmt(_m(b, 'cross_source_cosine'), 3)}</td>",
                 f'<td class="{"bad" if blind else ""}">{_fmt(blind)}</td>',
                 f"<td>{_fmt(_m(b, 'latency_p50_ms'), 1)}</td>", f"<td>{_fmt(_m(b, 'latency_p90_ms'), 1)}</td>",
                 f"<td>{_fmt(size / 1e6 if _num(size) else None, 1)}</td>", f"<td>{_badge(_kind(b))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
        if b.get("status") != "ok" and b.get("reason"):
            rows.append(f'<tr><td></td><td class="l muted" colspan="{len(head) - 1}">{_e(b["reason"])}</td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _verdict_section(report: dict[str, Any]) -> str:
    parts = []
    v = report.get("verdict") or {}
    if v.get("headline"):
        parts.append(f"<p><b>{_e(v['headline'])}</b></p>")
    if isinstance(v.get("bar"), dict) and v["bar"]:
        judged = v.get("judged") or {}
        parts.append(f"<p class='muted'>bar: {_e(bar_text(v['bar']))}"
                     + (f" · re-judged {_e(judged.get('created'))} by <code>{_e(judged.get('command'))}</code>"
                        if judged else "") + "</p>")
    for name, b in report.get("backends", {}).items():
        ver = b.get("verdict")
        if not ver:
            continue
        evs = "".join(f"<li>{_e(evidence_text(e))}</li>" for e in ver.get("evidence") or [])
        parts.append(f"<p>{_badge(ver.get('kind'))} <b>{_e(name)}</b> — {_e(ver.get('summary'))}</p>"
                     f'<ul class="ev">{evs}</ul>')
    return "".join(parts)


def _selection_section(report: dict[str, Any]) -> str:
    sel = report.get("selection")
    if not sel:
        return ""
    chosen = sel.get("chosen")
    out = [f"<p>chosen: <b class=\"{'good' if chosen else 'bad'}\">{_e(chosen or 'nothing feasible')}</b>"
           f"; fallback chain: {_e(' → '.join(sel.get('fallback_chain') or []) or '–')}"
           f" <span class=\"muted\">(ranked by {_e(ranking_text(sel))}"
           f"{'; decided by ' + _e(sel['decided_by']) if sel.get('decided_by') else ''})</span></p>"]
    rej = sel.get("rejected") or {}
    if rej:
        out.append("<table><tr><th class='l'>rejected</th><th class='l'>reason</th></tr>"
                   + "".join(f"<tr><td class='l'>{_e(n)}</td><td class='l'>{_e(r)}</td></tr>" for n, r in rej.items())
                   + "</table>")
    cons = sel.get("constraints")
    if cons:
        out.append(f"<p class='muted'>constraints: {_e(json.dumps(cons))}</p>")
    return "".join(out)


def _boundary_section(report: dict[str, Any]) -> str:
    out = []
    for name, b in report.get("backends", {}).items():
        bd = ((b.get("suites") or {}).get("split-generation") or {}).get("boundary")
        if not bd:
            continue
        vs_ref = ((b.get("suites") or {}).get("split-generation") or {}).get("boundary_vs_reference") or {}
        out.append(f"<p><b>{_e(name)}</b> <span class='muted'>({bd.get('n')} sentences, beams "
                   f"{bd.get('num_beams')})</span></p><table><tr><th class='l'>mode</th><th>BLEU</th><th>ΔBLEU vs FP32 row"
                   f"</th><th>agreement with FP32 row</th><th>agreement with reference</th></tr>")
        for mode, row in (bd.get("rows") or {}).items():
            out.append(f"<tr><td class='l'>{_e(mode)}</td><td>{_fmt(row.get('bleu'))}</td>"
                       f"<td>{_fmt(row.get('bleu_delta_vs_fp32_row'))}</td>"
                       f"<td>{_fmt(row.get('agreement_with_fp32_row'), 3)}</td><td>{_fmt(vs_ref.get(mode), 3)}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _baseline_section(report: dict[str, Any]) -> str:
    base = report.get("baseline")
    if not isinstance(base, dict):
        return ""
    regs = base.get("regressions") or []
    notes = "".join(f"; {_e(t)}" for t in (baseline_machine_text(base), baseline_reuse_text(base)) if t)
    out = [f"<p>baseline {_e(base.get('file'))}: <b class=\"{'bad' if regs else 'good'}\">"
           f"{'REGRESSION' if regs else 'no regression'}</b>{notes}</p>"]
    if regs:
        out.append("<table><tr><th class='l'>backend</th><th class='l'>metric</th><th>baseline</th><th>current</th>"
                   "<th class='l'>reason</th></tr>" + "".join(
                       f"<tr><td class='l'>{_e(r.get('backend'))}</td><td class='l'>{_e(r.get('metric'))}</td>"
                       f"<td>{_fmt(r.get('baseline'))}</td><td>{_fmt(r.get('current'))}</td>"
                       f"<td class='l'>{_e(r.get('reason'))}</td></tr>" for r in regs) + "</table>")
    lines = [f"{n}: " + "; ".join(f"{f} {a} → {c}" for f, (a, c) in ch.items())
             for n, ch in (base.get("signature_changes") or {}).items() if isinstance(ch, dict)]
    if lines:
        out.append("<p>signature changes:</p><ul>" + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul>")
    for title, lines in (("artifacts vs the baseline's (sha256)", artifacts_texts(base)),
                         ("outputs vs the baseline's saved tokens", outputs_texts(base)),
                         ("first-step logits vs the baseline's", first_step_texts(base)),
                         ("teacher-forced logits vs the baseline's", teacher_forced_texts(base))):
        if lines:
            out.append(f"<p>{title}:</p><ul>" + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul>")
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    backends = report.get("backends") or {}
    ok = {n: b for n, b in backends.items() if b.get("status") == "ok"}
    model = report.get("model") or {}
    data = report.get("data") or {}
    sections = [f"<h1>seqquant report</h1><p class='muted'>model {_e(model.get('path'))} ({_e(model.get('family'))},"
                f" {_e(str(model.get('content_hash'))[:12])}) · data {_e(data.get('src'))} "
                f"({_e(data.get('n_sentences'))} sentences) · reference {_e(report.get('reference_backend'))} · "
                f"{_e(report.get('created'))}"
                + (f" · {_e(machine_text(report['machine']))}" if isinstance(report.get("machine"), dict) else "")
                + "</p>",
                "<h2>Summary</h2>", _summary_table(report)]
    verdict = _verdict_section(report)
    if verdict:
        sections += ["<h2>Verdicts</h2>", verdict]
    sel = _selection_section(report)
    if sel:
        sections += ["<h2>Selection</h2>", sel]
    pts = [(n, _m(b, "latency_p50_ms"), _m(b, "bleu"), COLORS.get(_kind(b), "#888")) for n, b in ok.items()
           if _num(_m(b, "latency_p50_ms")) and _num(_m(b, "bleu"))]
    if pts:
        sections += ["<h2>BLEU vs latency</h2>", svg_scatter(pts, "p50 latency, ms per sentence (batch 1)", "BLEU")]
    sizes = [(n, _size(b) / 1e6, COLORS.get(_kind(b), "#888")) for n, b in ok.items() if _num(_size(b))]
    if sizes:
        sections += ["<h2>Size on disk</h2>", svg_hbars(sizes, "MB")]
    hists = []
    for n, b in ok.items():
        div = ((b.get("suites") or {}).get("split-generation") or {}).get("divergence")
        if div and div.get("histogram"):
            hists.append(svg_histogram(n, div["histogram"], COLORS.get(_kind(b), "#888")))
    if hists:
        sections += ["<h2>First divergence step vs the reference</h2>", "<div>" + "".join(hists) + "</div>"]
    sens = [(n, float(_m(b, "cross_source_cosine")), "#c0392b" if _m(b, "source_blind") else "#2c6fbb")
            for n, b in ok.items() if _num(_m(b, "cross_source_cosine"))]
    if sens:
        thr = None
        for b in ok.values():
            rule = ((b.get("suites") or {}).get("source-sensitivity") or {}).get("source_blind_rule") or {}
            thr = rule.get("blind_threshold", thr)
        sections += ["<h2>Source sensitivity (mean cross-source first-step cosine; 1 = source-blind)</h2>",
                     svg_hbars(sens, "", line=thr, line_label=f"blind ≥ {thr}" if thr else "", xmax=1.0)]
    bd = _boundary_section(report)
    if bd:
        sections += ["<h2>Boundary matrix</h2>", bd]
    for table in (margins_table(report), numerics_table(report)):
        if table:
            title, header, rows = table
            sections += [f"<h2>{_e(title)}</h2>", "<table><tr>" + "".join(f"<th class='l'>{_e(h)}</th>"
                                                                             for h in header)
                         + "</tr>" + "".join("<tr>" + "".join(f"<td class='l'>{_e(c)}</td>" for c in r) + "</tr>"
                                             for r in rows) + "</table>"]
    base = _baseline_section(report)
    if base:
        sections += ["<h2>Baseline</h2>", base]
    if report.get("warnings"):
        sections += ["<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in report["warnings"]) + "</ul>"]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>seqquant report</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def write_html(report: dict[str, Any], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(path)
    return path
