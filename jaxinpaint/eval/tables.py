"""Report writing: `Results` as Table I's markdown (methods x mask kind x metric, best per column in bold), and
`eval_results.{csv,json,md}`.

'Best' is the lowest for errors, the highest for similarities, and for TV the closest to the ground truth's own TV
over the same pixel pairs (a flat fill has the lowest TV, not the best).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

from jaxinpaint.eval.harness import CLASSICAL_LOSS, TABLE_METRICS, Results
from jaxinpaint.eval.mask_sets import BUCKET_KINDS, kind_label

LOWER_IS_BETTER = {"l1", "l2", "lpips", "fid"}
HIGHER_IS_BETTER = {"ssim", "psnr", "psnr_full", "ssim_full"}
METRIC_LABELS = {
  "l1": "L1",
  "l2": "L2",
  "tv": "TV",
  "ssim": "SSIM",
  "psnr": "PSNR",
  "psnr_full": "PSNR full",
  "ssim_full": "SSIM full",
  "lpips": "LPIPS",
  "fid": "FID",
}
RESULT_FILES = ("eval_results.csv", "eval_results.json", "eval_results.md")


def _best(results: Results, kind: str, metric: str, methods: Sequence[str]) -> set[str]:
  vals = {m: results.value(m, kind, metric) for m in methods}
  if metric == "tv":
    target = results.kinds[kind]["target_tv"]
    key = {m: abs(v - target) for m, v in vals.items()}
  elif metric in HIGHER_IS_BETTER:
    key = {m: -v for m, v in vals.items()}
  else:
    key = dict(vals)
  best = min(key.values())
  return {m for m, v in key.items() if v <= best + 1e-9 * max(1.0, abs(best))}


def format_metric(metric: str, value: float) -> str:
  """A table cell's digits: two for dB and FID, three for the rest."""
  if metric in ("ssim", "ssim_full", "lpips"):
    return f"{value:.3f}"
  return f"{value:.2f}" if metric in ("psnr", "psnr_full", "fid") else f"{value:.3f}"


def _std_note(info: dict[str, Any]) -> str:
  """The line under a table of `mean ± std` cells: how many seeds, and which (`info['seed_values']`)."""
  values = info.get("seed_values", {})
  spans = {method: f"{v[0]}..{v[-1]}" if len(v) > 1 else f"{v[0]}" for method, v in values.items() if v}
  if len(set(spans.values())) == 1:
    which = f" (seeds {next(iter(spans.values()))})"
  else:
    which = " (seeds " + ", ".join(f"{m} {s}" for m, s in spans.items()) + ")" if spans else ""
  return f"Model cells: mean ± sample std over {info.get('seeds', '')} seeds{which}; best in bold by the mean."


def _table(results: Results, kinds: Sequence[str], metrics_: Sequence[str], header) -> list[str]:
  """Markdown rows, best per column in bold; a row averaged over seeds reads `mean ± std` (`Results.std`)."""
  methods = results.methods
  cols = [(k, m) for k in kinds for m in metrics_]
  best = {c: _best(results, *c, methods) for c in cols}
  lines = ["| method | " + " | ".join(header(k, m) for k, m in cols) + " |", "|---|" + "---:|" * len(cols)]
  with_std = False
  for method in methods:
    cells = []
    for k, m in cols:
      text = format_metric(m, results.value(method, k, m))
      std = results.std(method, k, m)
      if std is not None:
        text, with_std = f"{text} ± {format_metric(m, std)}", True
      cells.append(f"**{text}**" if method in best[(k, m)] else text)
    lines.append(f"| {method_label(results, method)} | " + " | ".join(cells) + " |")
  return lines + (["", _std_note(results.info)] if with_std else [])


def method_label(results: Results, method: str) -> str:
  """A table's method cell: the name, and for a trained model the loss it was trained with."""
  loss = results.info.get("losses", {}).get(method, "")
  return f"{method} ({loss})" if loss and loss != CLASSICAL_LOSS else method


def arrow(metric: str) -> str:
  """A header's direction: lower is better, higher is better, or closest to the ground truth (TV)."""
  return "↓" if metric in LOWER_IS_BETTER else "↑" if metric in HIGHER_IS_BETTER else "≈"


def markdown(results: Results, title: str = "Evaluation", footer: Sequence[str] = ()) -> str:
  """Table I's layout (methods x mask kind x L1/L2/TV/SSIM/PSNR, best per column in bold) for the non-bucket
  kinds, then the hole-ratio buckets as the partial-conv paper reports them (L1, PSNR, SSIM per bucket), then
  the `footer` lines (e.g. the ablation's orderings)."""
  info = results.info
  out = [f"## {title}", ""]
  step = f"Checkpoint step {info['step']}. " if "step" in info else ""
  out.append(
    f"{step}{info['examples']} held-out examples per mask kind ({info['data']}, {info['image_size']} px), the "
    "same images and masks for every method. L1, L2 (x100) and PSNR (dB, capped at 100) over the hole "
    "pixels of the output; TV (x100) of the composite over the pixel pairs touching the hole, best = "
    "closest to the ground truth's own TV; SSIM of the composite (seed 004's protocol)."
  )
  packs = info.get("packs", {})
  for kind, pack in packs.items():
    seed = "" if pack["seed"] is None else f", seed {pack['seed']}"
    out.append(
      f"Mask pack {pack['pack_id']} ({pack['name']}{seed}, {pack['count']} masks of {pack['size'][0]}x"
      f"{pack['size'][1]}, `{pack['path']}`): example i gets mask i mod {pack['count']}."
    )
  extra = [m for m in ("lpips", "fid") if m in results.metric_names]
  headline = [k for k in info["kinds"] if k not in BUCKET_KINDS]
  buckets = [k for k in info["kinds"] if k in BUCKET_KINDS]
  if headline:
    out += [
      "",
      *_table(
        results,
        headline,
        list(TABLE_METRICS) + extra,
        lambda k, m: f"{kind_label(k, packs)} {METRIC_LABELS[m]} {arrow(m)}",
      ),
    ]
  if buckets:
    for metric in ("l1", "psnr", "ssim"):
      out += [
        "",
        f"{METRIC_LABELS[metric]} {arrow(metric)} by hole ratio (free-form strokes):",
        "",
        *_table(results, buckets, [metric], lambda k, m: k[5:] + " %"),
      ]
  out += list(footer)
  gt = ", ".join(f"{kind_label(k, packs)} {v['target_tv']:.3f}" for k, v in results.kinds.items())
  ratio = ", ".join(f"{kind_label(k, packs)} {v['hole_ratio']:.3f}" for k, v in results.kinds.items())
  out += ["", f"Ground-truth TV over the same pairs: {gt}.", f"Mean hole ratio: {ratio}."]
  out += [f"Note: {n}" for n in results.notes]
  return "\n".join(out) + "\n"


def write_results(
  results: Results,
  directory: str,
  stem: str = "eval_results",
  title: str = "Evaluation",
  *,
  footer: Sequence[str] = (),
  extra: dict[str, Any] | None = None,
) -> dict[str, str]:
  """Writes `<stem>.csv` (one row per method x kind), `<stem>.json` (plus the `extra` keys) and `<stem>.md`
  (`markdown` with `footer`) to `directory`."""
  os.makedirs(directory, exist_ok=True)
  paths = {ext: os.path.join(directory, f"{stem}.{ext}") for ext in ("csv", "json", "md")}
  names = ["method", "kind", "classical", "n"] + [
    m for m in results.rows[0] if m not in ("method", "kind", "classical", "n")
  ]
  with open(paths["csv"], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=names)
    writer.writeheader()
    writer.writerows(results.rows)
  with open(paths["json"], "w") as f:
    json.dump(
      {"info": results.info, "kinds": results.kinds, "results": results.rows, "notes": results.notes, **(extra or {})},
      f,
      indent=2,
      allow_nan=False,
    )
  with open(paths["md"], "w") as f:
    f.write(markdown(results, title, footer))
  return paths
