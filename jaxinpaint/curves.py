"""Learning curves: a run's eval PSNR/SSIM at each kept checkpoint against training wall-clock, next to the best
classical peer.

  python -m jaxinpaint.curves --workdir=RUN [--out=RUN/learning_curve.png] [--config.eval.masks=centre,free_form ...]

The trainer appends the step and the training wall-clock so far to `RUN/timeline.jsonl` at each checkpoint save
(`train.Timeline`). For every step listed there whose checkpoint is still kept (`config.train.keep_checkpoints`,
0 = keep all), this restores that step (the EMA params when the run kept them) and scores it with
`eval.harness.evaluate_methods` on the run's eval set (`config.eval.masks`, `config.eval.examples`: the examples and
masks `evaluate` scores); the classical peers (`config.eval.baselines`, less the mean-colour floor, as in
`report.margins`) are scored once. Plots per mask kind two panels, PSNR on the hole and SSIM on the composite
against training minutes: the model as a line with markers (labelled with their steps), the best peer of each
panel as a dashed horizontal line named in the legend. Writes the PNG, the plotted numbers as JSON beside it (same
stem, `.json`), and prints them as a Markdown table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import logging

from jaxinpaint import baselines, report, runs, train
from jaxinpaint.eval import harness, mask_sets

CURVE_METRICS = (("psnr", "PSNR hole (dB)"), ("ssim", "SSIM composite"))
DEFAULT_OUT = "learning_curve.png"


def curve_steps(workdir: str) -> list[dict[str, float]]:
  """The timeline lines (`train.read_timeline`) of the steps whose checkpoint is kept, in step order; ValueError
  (one line) when the run has no timeline or none of its steps is kept."""
  timeline = train.read_timeline(workdir)
  path = os.path.join(workdir, train.TIMELINE_FILE)
  if not timeline:
    raise ValueError(
      f"{path} is missing or empty: the trainer writes it at each checkpoint save, so this run has no "
      "checkpoint with a recorded wall-clock (runs trained before timelines existed have none)"
    )
  folder = os.path.join(workdir, "checkpoints")
  kept = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
  points = [e for e in timeline if e["step"] in kept]
  if not points:
    raise ValueError(
      f"none of the steps in {path} ({', '.join(str(e['step']) for e in timeline)}) has a kept checkpoint "
      f"(kept: {', '.join(map(str, kept)) or 'none'}); train with --config.train.keep_checkpoints=0 to keep them all"
    )
  return points


def _scores(results: harness.Results, method: str) -> dict[str, dict[str, float]]:
  """{kind: {'psnr': ..., 'ssim': ...}} of one method."""
  kinds = results.info["kinds"]
  return {k: {m: results.value(method, k, m) for m, _ in CURVE_METRICS} for k in kinds}


def best_peers(peers: dict[str, dict[str, dict[str, float]]], kinds: Sequence[str]) -> dict[str, Any]:
  """{kind: {metric: {'method', 'value'}}}: the highest-scoring peer per kind and metric ({} without peers)."""
  best = {}
  for kind in kinds if peers else ():
    best[kind] = {}
    for metric, _ in CURVE_METRICS:
      name = max(peers, key=lambda n: peers[n][kind][metric])
      best[kind][metric] = {"method": name, "value": peers[name][kind][metric]}
  return best


def learning_curves(
  config: ml_collections.ConfigDict, workdir: str, *, progress: bool = False, devices=None
) -> dict[str, Any]:
  """Scores every kept checkpoint of the timeline and the classical peers (module docstring); returns the numbers
  plotted: {'run', 'kinds', 'points': [{'step', 'train_seconds', 'minutes', 'model': {kind: {metric: value}}}],
  'peers': {name: {kind: {metric: value}}}, 'best_peer': {kind: {metric: {'method', 'value'}}}, ...}."""
  config = runs.with_defaults(config)
  runs.check_same_run(config, workdir, hint="pass only --config.eval.* overrides of the run's saved config")
  points = curve_steps(workdir)
  devices = jax.devices() if devices is None else devices
  eval_set = mask_sets.EvalSet.from_config(config, len(devices))
  label = os.path.basename(os.path.normpath(workdir))
  predict, scored = None, []
  for entry in points:
    run = runs.restore(workdir, config, devices, batch_size=eval_set.batch_size, step=entry["step"])
    if predict is None:  # one compiled predict for every step: the params are arguments, not constants
      predict, mesh = harness.compiled_predict(run.task), run.mesh
    method = harness.model_method(
      run.task, run.params, run.model_state, loss=harness.loss_label(run.config), predict=predict
    )
    logging.info("scoring %s at step %d (%.1f training minutes)", label, run.step, entry["train_seconds"] / 60)
    results = harness.evaluate_methods({label: method}, eval_set, mesh=mesh, progress=progress)
    scored.append(
      {
        "step": run.step,
        "train_seconds": entry["train_seconds"],
        "minutes": entry["train_seconds"] / 60.0,
        "model": _scores(results, label),
      }
    )
  peer_methods = harness.baseline_methods(baselines.parse_names(config.eval.baselines))
  peer_methods = {k: v for k, v in peer_methods.items() if k != report.FLOOR}  # a floor, not a peer
  peers = {}
  if peer_methods:
    peer_results = harness.evaluate_methods(peer_methods, eval_set, mesh=mesh, progress=progress)
    peers = {name: _scores(peer_results, name) for name in peer_methods}
  return {
    "run": label,
    "workdir": os.path.abspath(workdir),
    "loss": harness.loss_label(config),
    "kinds": list(eval_set.kinds),
    "kind_labels": {
      k: mask_sets.kind_label(k, {p: v.summary() for p, v in eval_set.packs.items()}) for k in eval_set.kinds
    },
    "metrics": dict(CURVE_METRICS),
    "examples": eval_set.num_examples,
    "image_size": config.data.image_size,
    "data": f"{config.data.source}/{config.data.name}",
    "points": scored,
    "peers": peers,
    "best_peer": best_peers(peers, list(eval_set.kinds)),
  }


# ------------------------------------------------------------------------------------------------ output


def markdown(data: dict[str, Any]) -> str:
  """One row per scored step (step, training minutes, the model's PSNR/SSIM per kind), then the best peer's."""
  cols = [(k, m) for k in data["kinds"] for m, _ in CURVE_METRICS]
  digits = {"psnr": 2, "ssim": 4}
  header = [f"{data['kind_labels'][k]} {data['metrics'][m]}" for k, m in cols]
  lines = ["| step | minutes | " + " | ".join(header) + " |", "|---:|---:|" + "---:|" * len(cols)]
  for p in data["points"]:
    cells = [f"{p['model'][k][m]:.{digits[m]}f}" for k, m in cols]
    lines.append(f"| {p['step']} | {p['minutes']:.2f} | " + " | ".join(cells) + " |")
  if data["best_peer"]:
    best = data["best_peer"]
    cells = [f"{best[k][m]['value']:.{digits[m]}f} ({best[k][m]['method']})" for k, m in cols]
    lines.append("| best classical peer | | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(data: dict[str, Any], path: str) -> str:
  """Rows: mask kinds; columns: PSNR on the hole, SSIM on the composite, against training minutes."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  kinds = data["kinds"]
  fig, axes = plt.subplots(len(kinds), len(CURVE_METRICS), figsize=(9.0, 3.0 * len(kinds) + 0.4), squeeze=False)
  minutes = [p["minutes"] for p in data["points"]]
  for i, kind in enumerate(kinds):
    for j, (metric, name) in enumerate(CURVE_METRICS):
      ax = axes[i, j]
      values = [p["model"][kind][metric] for p in data["points"]]
      ax.plot(minutes, values, "o-", color="tab:blue", label=data["run"])
      for p, x, y in zip(data["points"], minutes, values):
        ax.annotate(str(p["step"]), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=6)
      if data["best_peer"]:
        best = data["best_peer"][kind][metric]
        ax.axhline(best["value"], color="tab:red", ls="--", lw=1.2, label=f"{best['method']} (best classical peer)")
      ax.set_xlim(left=0, right=max(minutes) * 1.08 or 1.0)
      ax.set_title(f"{data['kind_labels'][kind]}: {name}", fontsize=9)
      ax.set_xlabel("training wall-clock (minutes)", fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7, loc="best", framealpha=0.8)
  fig.suptitle(f"{data['run']}: {data['examples']} held-out crops per mask kind ({data['data']})", fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write(data: dict[str, Any], out: str) -> dict[str, str]:
  """The PNG at `out` and the numbers as JSON beside it (same stem)."""
  json_path = os.path.splitext(out)[0] + ".json"
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(json_path + ".tmp", "w") as f:
    json.dump(data, f, indent=2, allow_nan=False)
  os.replace(json_path + ".tmp", json_path)
  return {"png": plot(data, out), "json": json_path}


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m jaxinpaint.curves --workdir=RUN [--out=PNG] [--config.eval.k=v ...]`: the run's saved config,
  with overrides, defines `--config`."""
  from absl import flags

  from jaxinpaint import cli

  argv = list(sys.argv if argv is None else argv)
  cli.define_run_config(argv, "The run's saved config; override eval keys with --config.k=v.")
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, config.json, timeline.jsonl).")
  flags.DEFINE_string("out", None, f"Where the plot goes (default WORKDIR/{DEFAULT_OUT}); the JSON goes beside it.")
  flags.mark_flags_as_required(["workdir"])
  FLAGS = flags.FLAGS

  def run() -> None:
    data = learning_curves(FLAGS.config, FLAGS.workdir, progress=True)
    if jax.process_index() == 0:
      paths = write(data, FLAGS.out or os.path.join(FLAGS.workdir, DEFAULT_OUT))
      print(
        f"\n{data['run']}: {data['examples']} held-out crops per mask kind ({data['data']}, {data['image_size']} px;"
        " PSNR on the hole, SSIM on the composite) against training wall-clock:\n"
      )
      print(markdown(data))
      print(f"\nwrote {paths['png']} and {paths['json']}", flush=True)

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
