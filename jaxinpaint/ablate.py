"""One command from configs to a Table-I-shaped comparison: train (or reuse) each run, score all of them and the
classical peers on the same images and masks, write the table, a bar chart and an image grid.

  python -m jaxinpaint.ablate --configs=configs/wconv.py,configs/pconv.py,configs/plain.py --variant=demo \\
      --workdir=runs/ablation_demo [--override=eval.masks=centre,free_form --override=data.source=folder ...]

Each config trains in `WORKDIR/<config name>` through `train.train_and_evaluate` (an interrupted run resumes; a
finished one, whose saved config equals the requested one, is reused without recompiling anything). Then
`eval.harness.evaluate_methods` scores every run and `config.eval.baselines` under the first config's
`config.eval` mask sets and held-out data (every config must share its data settings). Writes
`WORKDIR/ablation.{md,csv,json}`, `ablation_bars.png` (L1/L2/TV/SSIM/PSNR per method and mask kind) and
`ablation_grid.png` (the same examples inpainted by every method). Frozen mask packs join with
`--override=eval.masks=centre,pack:DIR` (tables name their pack ids); every row names the loss its run trained
with (`harness.loss_label`).

`--seeds=N` (N > 1) trains each config N times, seed k in `WORKDIR/<config name>/seed<k>` with
`config.seed + k`, through the same reuse/resume/refuse rules, and scores every run and the peers (once: they are
deterministic) on the same eval set. Each table row then holds the mean over seeds of every metric with its sample
std (ddof=1, `<metric>_std` in the CSV/JSON, `seeds` = N; peers std 0, seeds 1); every model cell reads
`mean ± std` (best in bold by the mean), the bars get error bars, and for each pair of trained methods a line gives
the PSNR and SSIM difference of the means in pooled stds. The per-seed rows are kept in `ablation_seeds.csv` and
under `seed_results` in `ablation.json`. N = 1 (the default) is one run per config in `WORKDIR/<config name>`.
"""

from __future__ import annotations

import ast
import csv
import itertools
import math
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxinpaint import baselines, configs_lib, evaluate, runs
from jaxinpaint.data import sources
from jaxinpaint.eval import harness, mask_sets, tables
from jaxinpaint.eval import perceptual as perceptual_lib

# How tables name the configs this project ships; others appear under their file name.
LABELS = {
  "wconv": "WConv",
  "pconv": "PConv",
  "plain": "Plain conv",
  "gated": "DeepFill v2 (gated)",
  "deepfill_v1": "DeepFill v1",
  "deepfill_v2": "DeepFill v2",
  "dcgan": "DCGAN",
  "lama": "LaMa",
}
# Data settings that define the held-out images; runs that differ here cannot share one table.
SHARED_DATA_KEYS = ("source", "name", "path", "eval_split", "image_size", "resize", "shorter_side")


def load_config_file(path: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """`configs_lib.load_config_file` with every eval key filled in (`runs.with_defaults`)."""
  return runs.with_defaults(configs_lib.load_config_file(path, variant))


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
  """'eval.masks=centre,free_form' -> config.eval.masks = 'centre,free_form', typed like the current value."""
  key, sep, text = item.partition("=")
  if not sep:
    raise ValueError(f"--override {item!r}: write key=value, e.g. eval.masks=centre,free_form")
  *parents, leaf = key.strip().split(".")
  node = config
  for part in parents:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ValueError(f"--override {item!r}: config has no section {part!r}")
    node = node[part]
  if leaf not in node:
    raise ValueError(f"--override {item!r}: config has no key {key!r}")
  current = node[leaf]
  if isinstance(current, str):
    value = text
  else:
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      raise ValueError(f"--override {item!r}: {text!r} is not a Python literal") from None
    if isinstance(current, bool):
      ok = isinstance(value, bool)
    elif isinstance(current, (int, float)):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
      value = type(current)(value) if ok and (isinstance(current, float) or float(value).is_integer()) else value
      ok = ok and isinstance(value, type(current))
    elif isinstance(current, tuple):
      ok = isinstance(value, (list, tuple))
      value = tuple(value) if ok else value
    else:
      ok = True
    if not ok:
      raise ValueError(f"--override {item!r}: expected {type(current).__name__}, got {value!r}")
  node[leaf] = value


def run_names(paths: Sequence[str]) -> list[str]:
  """Run directory names: the config file stems, numbered when one appears twice."""
  stems = [
    os.path.splitext(os.path.basename(p.rsplit(":", 1)[0] if ":" in os.path.basename(p) else p))[0] for p in paths
  ]
  return [s if stems.count(s) == 1 else f"{s}_{stems[: i + 1].count(s)}" for i, s in enumerate(stems)]


def check_shared_data(configs: dict[str, ml_collections.ConfigDict]) -> None:
  """ValueError naming the key when two configs would be evaluated on different held-out images."""
  (first_name, first), *rest = configs.items()
  for name, config in rest:
    for key in SHARED_DATA_KEYS:
      a, b = first.data.get(key), config.data.get(key)
      if (tuple(a) if isinstance(a, (list, tuple)) else a) != (tuple(b) if isinstance(b, (list, tuple)) else b):
        raise ValueError(
          f"configs {first_name} and {name} differ in data.{key} ({a!r} vs {b!r}); an ablation "
          "compares methods on the same held-out images"
        )


def _same_config(saved: ml_collections.ConfigDict, wanted: ml_collections.ConfigDict) -> list[str]:
  """Keys (dotted) whose values differ, ignoring `configs_lib.LAYOUT_KEYS` (the eval section, the device mesh, ...)."""
  return configs_lib.run_differences(saved, wanted, ignore=configs_lib.LAYOUT_KEYS)


def ensure_trained(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains `config` in `workdir` unless a finished run of the same config is there; returns what it did."""
  from jaxinpaint import checkpointing, runs, train

  config_path = os.path.join(workdir, runs.CONFIG_FILE)
  if os.path.isfile(config_path):
    diffs = _same_config(runs.load_config(workdir), config)
    if diffs:
      raise ValueError(
        f"{workdir} holds a run of another config (differs in {', '.join(diffs[:5])}); use another "
        "--workdir or remove it"
      )
    ckpt = checkpointing.Checkpointer(workdir)
    latest = ckpt.latest_step()
    ckpt.close()
    if latest is not None and latest >= config.num_train_steps:
      logging.info("reusing the finished run in %s (step %d)", workdir, latest)
      return "reused"
  logging.info("training %s in %s", config.model.name, workdir)
  train.train_and_evaluate(config, workdir)
  return "trained"


# ------------------------------------------------------------------------------------------------ figures


def bar_chart(results: harness.Results, path: str) -> str:
  """One panel per (mask kind, metric) for the non-bucket kinds: a bar per method, classical peers hatched."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  kinds = [k for k in results.info["kinds"] if k not in mask_sets.BUCKET_KINDS] or results.info["kinds"][:2]
  metrics_ = list(harness.TABLE_METRICS)
  methods = results.methods
  classical = {r["method"] for r in results.rows if r["classical"]}
  colours = matplotlib.colormaps["tab10"](np.arange(len(methods)) % 10)
  fig, axes = plt.subplots(
    len(kinds), len(metrics_), figsize=(3.0 * len(metrics_), 2.6 * len(kinds) + 0.8), squeeze=False
  )
  for i, kind in enumerate(kinds):
    for j, metric in enumerate(metrics_):
      ax = axes[i, j]
      values = [results.value(m, kind, metric) for m in methods]
      stds = [results.std(m, kind, metric) for m in methods]  # over seeds; None for peers and single runs
      errors = (
        {"yerr": [np.nan if s is None else s for s in stds], "capsize": 3} if any(s is not None for s in stds) else {}
      )
      bars = ax.bar(range(len(methods)), values, color=colours, **errors)
      for bar, method in zip(bars, methods):
        if method in classical:
          bar.set_hatch("//")
      if metric == "tv":
        ax.axhline(results.kinds[kind]["target_tv"], color="k", ls="--", lw=1, label="ground truth")
        ax.legend(fontsize=7, loc="lower right")
      label = mask_sets.kind_label(kind, results.info.get("packs"))
      ax.set_title(f"{label}: {tables.METRIC_LABELS[metric]} {tables.arrow(metric)}", fontsize=9)
      ax.set_xticks([])
      ax.tick_params(labelsize=7)
  handles = [
    plt.Rectangle((0, 0), 1, 1, color=colours[i], hatch="//" if m in classical else "") for i, m in enumerate(methods)
  ]
  height = 2.6 * len(kinds) + 0.8
  seeds = results.info.get("seeds", 1)
  fig.legend(
    handles,
    methods,
    loc="lower center",
    ncol=min(len(methods), 4),
    fontsize=8,
    frameon=False,
    **({"title": f"error bars: sample std over {seeds} seeds", "title_fontsize": 8} if seeds > 1 else {}),
  )
  fig.tight_layout(rect=(0, 0.6 / height, 1, 1))  # leave the bottom strip to the legend
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def image_grid(results: harness.Results, path: str, rows_per_kind: int = 2) -> str:
  """Rows: the first examples of each non-bucket kind; columns: input (holes white) | every method's
  composite | ground truth."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from jaxinpaint import visualize

  kinds = [k for k in results.info["kinds"] if k not in mask_sets.BUCKET_KINDS] or results.info["kinds"][:2]
  methods = results.methods
  rows = [(k, i) for k in kinds for i in range(min(rows_per_kind, len(results.samples[k]["image"])))]
  cols = ["input", *methods, "ground truth"]
  fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.6 * len(cols), 1.6 * len(rows) + 0.4), squeeze=False)
  for r, (kind, i) in enumerate(rows):
    sample = results.samples[kind]
    valid = sample["valid"][i]
    tiles = [np.where(valid > 0.5, visualize.to_uint8(sample["image"][i]), 255)]
    tiles += [visualize.to_uint8(sample["outputs"][m][i]) for m in methods]
    tiles.append(visualize.to_uint8(sample["image"][i]))
    for c, tile in enumerate(tiles):
      ax = axes[r, c]
      ax.imshow(tile, interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if r == 0:
        ax.set_title(cols[c], fontsize=7)
      if c == 0:
        ax.set_ylabel(mask_sets.kind_label(kind, results.info.get("packs")), fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ------------------------------------------------------------------------------------------------ driver


# ------------------------------------------------------------------------------------------------ seeds


def seed_runs(
  config: ml_collections.ConfigDict, rundir: str, seeds: int
) -> list[tuple[ml_collections.ConfigDict, str]]:
  """(config, workdir) of each run of one config: `rundir` itself for one seed; for N seeds, seed k trains in
  `rundir/seed<k>` with `config.seed + k`."""
  if seeds == 1:
    return [(config, rundir)]
  out = []
  for k in range(seeds):
    seeded = config.copy_and_resolve_references()
    seeded.seed = config.seed + k
    out.append((seeded, os.path.join(rundir, f"seed{k}")))
  return out


def aggregate_seeds(per_seed: Sequence[harness.Results]) -> harness.Results:
  """One row per (method, kind) from the per-seed results (seed k's run of every config in `per_seed[k]`; the
  classical peers only in `per_seed[0]`): every metric's mean over seeds, its sample std (ddof=1) as
  `<metric>_std` and `seeds` (peers: std 0, seeds 1). Samples, kinds and notes are seed 0's."""
  first = per_seed[0]
  rows = []
  for row in first.rows:
    same = [row] if row["classical"] else [r.row(row["method"], row["kind"]) for r in per_seed]
    metrics_ = [k for k, v in row.items() if isinstance(v, float)]
    out = {k: v for k, v in row.items() if k not in metrics_}
    values = {m: np.asarray([r[m] for r in same], np.float64) for m in metrics_}
    out.update({m: float(v.mean()) for m, v in values.items()})
    out.update({f"{m}_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()})
    out["seeds"] = len(same)
    rows.append(out)
  notes = list(dict.fromkeys(n for r in per_seed for n in r.notes))
  return harness.Results(rows, first.kinds, first.samples, notes, dict(first.info))


ORDER_METRICS = ("psnr", "ssim")


def orderings(results: harness.Results) -> list[dict]:
  """For each non-bucket kind, PSNR and SSIM, and each pair (a, b) of trained methods in table order: the
  difference of the means a - b and that difference in pooled stds sqrt((s_a^2 + s_b^2) / 2) (None when both
  stds are 0)."""
  trained = [m for m in results.methods if results.std(m, results.info["kinds"][0], "psnr") is not None]
  kinds = [k for k in results.info["kinds"] if k not in mask_sets.BUCKET_KINDS] or results.info["kinds"]
  out = []
  for kind in kinds:
    for a, b in itertools.combinations(trained, 2):
      for metric in ORDER_METRICS:
        diff = results.value(a, kind, metric) - results.value(b, kind, metric)
        pooled = math.sqrt((results.std(a, kind, metric) ** 2 + results.std(b, kind, metric) ** 2) / 2)
        sigmas = diff / pooled if pooled > 0 else None
        out.append(dict(kind=kind, metric=metric, a=a, b=b, difference=diff, pooled_std=pooled, sigmas=sigmas))
  return out


def ordering_lines(results: harness.Results) -> list[str]:
  """Markdown under the tables: 'Free-form, WConv − PConv: +0.31 dB PSNR (1.8 σ), +0.004 SSIM (0.9 σ)' per
  kind and pair of trained methods (`orderings`); [] without seeds or with fewer than two trained methods."""
  items = orderings(results)
  if not items:
    return []
  lines = ["", "Ordering of the trained methods (difference of the means, in pooled stds sqrt((s1² + s2²) / 2)):", ""]
  packs = results.info.get("packs")
  for i in range(0, len(items), len(ORDER_METRICS)):
    group = items[i : i + len(ORDER_METRICS)]
    parts = []
    for item in group:
      unit = " dB PSNR" if item["metric"] == "psnr" else f" {tables.METRIC_LABELS[item['metric']]}"
      size = "std 0" if item["sigmas"] is None else f"{abs(item['sigmas']):.1f} σ"
      sign = "−" if item["difference"] < 0 else "+"
      parts.append(f"{sign}{tables.format_metric(item['metric'], abs(item['difference']))}{unit} ({size})")
    head = group[0]
    lines.append(f"- {mask_sets.kind_label(head['kind'], packs)}, {head['a']} − {head['b']}: " + ", ".join(parts))
  return lines


def _write_seed_rows(rows: Sequence[dict], path: str) -> str:
  """`ablation_seeds.csv`: one row per trained method x seed x kind, every metric as measured."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


# ------------------------------------------------------------------------------------------------ driver


def ablate(
  config_paths: Sequence[str],
  workdir: str,
  *,
  variant: str | None = None,
  overrides: Sequence[str] = (),
  seeds: int = 1,
  progress: bool = True,
) -> harness.Results:
  """Trains or reuses each config's run under `workdir` (`seeds` runs each, `seed_runs`), then writes the
  comparison (module docstring); with several seeds every model cell is `mean ± std` over them."""
  if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
    raise ValueError(f"--seeds must be a whole number of runs per config, at least 1; got {seeds!r}")
  seeds = int(seeds)
  if not config_paths:
    raise ValueError("--configs names no config file")
  names = run_names(config_paths)
  configs = {}
  for name, path in zip(names, config_paths):
    config = load_config_file(path, variant)
    for item in overrides:
      apply_override(config, item)
    configs[name] = config
  check_shared_data(configs)
  first = next(iter(configs.values()))
  devices = jax.devices()
  eval_set = mask_sets.EvalSet.from_config(first, len(devices))  # checks the mask kinds before any training
  todo = {name: seed_runs(config, os.path.join(workdir, name), seeds) for name, config in configs.items()}
  status = {
    os.path.relpath(rundir, workdir): ensure_trained(config, rundir) for name in names for config, rundir in todo[name]
  }
  labels = {name: LABELS.get(name, name) for name in names}
  peers = harness.baseline_methods(baselines.parse_names(first.eval.baselines))
  perceptual = perceptual_lib.Perceptual.from_config(first.eval)
  source = sources.make_source(eval_set.data, "eval")
  # seed k's run of every config, scored on the same eval set; the peers are deterministic, so only once
  per_seed, steps = [], {label: [] for label in labels.values()}
  for k in range(seeds):
    methods = {}
    for name in names:
      config, rundir = todo[name][k]
      run = evaluate.restore_run(rundir, config, devices, batch_size=eval_set.batch_size)
      methods[labels[name]] = run.method()
      steps[labels[name]].append(run.step)
      mesh = run.mesh
    if k == 0:
      methods.update(peers)
    per_seed.append(
      harness.evaluate_methods(methods, eval_set, mesh=mesh, source=source, perceptual=perceptual, progress=progress)
    )
    del methods, run  # the next seed's models replace these
  steps = {label: s[0] if len(set(s)) == 1 else s for label, s in steps.items()}
  seed_rows = []
  if seeds == 1:
    results = per_seed[0]
  else:
    results = aggregate_seeds(per_seed)
    seed_values = {labels[name]: [config.seed for config, _ in todo[name]] for name in names}
    results.info.update(seeds=seeds, seed_values=seed_values, orderings=orderings(results))
    by_label = {label: name for name, label in labels.items()}
    for k, result in enumerate(per_seed):
      for row in result.rows:
        if not row["classical"]:
          name = by_label[row["method"]]
          seed_rows.append(
            {"method": row["method"], "kind": row["kind"], "seed": todo[name][k][0].seed, "run": f"{name}/seed{k}"}
            | {key: v for key, v in row.items() if key not in ("method", "kind")}
          )
  results.info.update(steps=steps, runs=status, configs=list(config_paths), variant=variant or "")
  if jax.process_index() == 0:
    seeds_text = f", {seeds} seeds" if seeds > 1 else ""

    def steps_text(s):
      return f"{s}" if isinstance(s, int) else f"{min(s)}-{max(s)}"

    title = "Ablation: " + ", ".join(f"{labels[n]} ({steps_text(steps[labels[n]])} steps{seeds_text})" for n in names)
    extra = {"seed_results": seed_rows} if seed_rows else None
    paths = tables.write_results(
      results, workdir, stem="ablation", title=title, footer=ordering_lines(results), extra=extra
    )
    if seed_rows:
      paths["seeds"] = _write_seed_rows(seed_rows, os.path.join(workdir, "ablation_seeds.csv"))
    paths["bars"] = bar_chart(results, os.path.join(workdir, "ablation_bars.png"))
    paths["grid"] = image_grid(results, os.path.join(workdir, "ablation_grid.png"))
    logging.info("wrote %s", ", ".join(paths.values()))
  return results


def main(argv=None) -> None:
  from absl import flags

  from jaxinpaint import cli

  flags.DEFINE_list("configs", None, "Config files to compare, e.g. configs/wconv.py,configs/pconv.py.")
  flags.DEFINE_string("variant", "", "Variant for every config (demo, tiny); '' = full size.")
  flags.DEFINE_string("workdir", None, "Directory for the runs (one sub-directory each) and the outputs.")
  flags.DEFINE_multi_string("override", [], "key=value applied to every config, e.g. eval.masks=centre,free_form.")
  flags.DEFINE_integer(
    "seeds", 1, "Runs per config (seed k: config.seed + k in WORKDIR/<config>/seed<k>); 1 = one run."
  )
  flags.mark_flags_as_required(["configs", "workdir"])
  FLAGS = flags.FLAGS

  def run() -> None:
    results = ablate(
      FLAGS.configs, FLAGS.workdir, variant=FLAGS.variant or None, overrides=FLAGS.override, seeds=FLAGS.seeds
    )
    print(tables.markdown(results, "Ablation", ordering_lines(results)))

  def errors() -> tuple[type[BaseException], ...]:
    from jaxinpaint import train

    return ValueError, FileNotFoundError, train.NonFiniteLossError

  cli.run_main(run, argv, errors=errors)


if __name__ == "__main__":
  main()
