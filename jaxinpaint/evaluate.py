"""Evaluation of a trained run: its model and the classical peers scored on the same images and masks.

  python -m jaxinpaint.evaluate --workdir=RUN [--config.eval.masks=centre,free_form,buckets]
  python -m jaxinpaint.main --config=configs/wconv.py:demo --workdir=RUN --mode=eval

Restores the run's latest checkpoint (EMA params when the run keeps them) and scores its held-out split under
fixed, seeded mask sets (`eval.mask_sets`: the mask kinds of `config.eval.masks`) with seed 004's protocol
(`eval.harness`: L1, L2, TV and PSNR on the hole, SSIM on the composite; L1/L2/TV x100), next to the classical
peers of `baselines` and, when their weights are given, LPIPS (composite vs target) and FID (composites vs
targets). Writes `eval_results.{csv,json,md}` to the workdir (`eval.tables`) and the same numbers to TensorBoard
(`eval_<kind>/<metric>` scalars at the checkpoint step, the table as text). Every table and `eval_results.*` says
which loss trained each run (`harness.loss_label`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging

from jaxinpaint import baselines, runs
from jaxinpaint.eval import harness, mask_sets, tables
from jaxinpaint.eval import perceptual as perceptual_lib
from jaxinpaint.runs import with_defaults


# ------------------------------------------------------------------------------------------------ runs


@dataclasses.dataclass
class Run(runs.Restored):
  """A restored run (`runs.Restored`: config, task, step, params with the EMA choice, ...) as a scored method."""

  def method(self) -> harness.Method:
    return harness.model_method(self.task, self.params, self.model_state, loss=harness.loss_label(self.config))


def restore_run(
  workdir: str, config: ml_collections.ConfigDict | None = None, devices=None, batch_size: int | None = None
) -> Run:
  """Rebuilds the model of the run in `workdir` and restores its latest checkpoint.

  `config` defaults to the run's saved config. FileNotFoundError (naming the directory) when the run has no
  config or no checkpoint.
  """
  run = runs.restore(workdir, config, devices, batch_size)
  return Run(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})  # asdict would deep-copy the arrays


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> harness.Results:
  """`main --mode=eval`: scores the run in `workdir` (built with `config`) and the classical peers."""
  from clu import metric_writers

  config = with_defaults(config)
  # the checkpoint means what its saved config says: another model config would score (or fail on) the wrong model
  runs.check_same_run(config, workdir, hint="pass the --config the run was trained with")
  devices = jax.devices()
  eval_set = mask_sets.EvalSet.from_config(config, len(devices))
  run = restore_run(workdir, config, devices, batch_size=eval_set.batch_size)
  label = os.path.basename(os.path.normpath(workdir))
  methods = {label: run.method(), **harness.baseline_methods(baselines.parse_names(config.eval.baselines))}
  perceptual = perceptual_lib.Perceptual.from_config(config.eval)
  logging.info(
    "evaluating %s (step %d) and %d classical peers on %s, %d examples each",
    label,
    run.step,
    len(methods) - 1,
    ", ".join(eval_set.kinds),
    eval_set.num_examples,
  )
  results = harness.evaluate_methods(methods, eval_set, mesh=run.mesh, perceptual=perceptual, progress=progress)
  results.info["step"] = run.step
  if jax.process_index() == 0:
    paths = tables.write_results(results, workdir, title=f"Evaluation of {label}")
    logging.info("wrote %s", ", ".join(paths.values()))
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  scalars = {f"eval_{r['kind']}/{m}": r[m] for r in results.rows if r["method"] == label for m in results.metric_names}
  writer.write_scalars(run.step, scalars)
  writer.write_texts(run.step, {"eval_table": tables.markdown(results, f"Evaluation of {label}")})
  writer.flush()
  writer.close()
  for note in results.notes:
    logging.warning("%s", note)
  return results


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m jaxinpaint.evaluate --workdir=RUN [--config.eval.k=v ...]`: the run's saved config, with
  overrides, defines `--config` (so only keys that exist can be overridden)."""
  from absl import flags

  from jaxinpaint import cli

  argv = list(sys.argv if argv is None else argv)
  cli.define_run_config(argv, "The run's saved config; override keys with --config.k=v.")
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints + config.json).")
  flags.mark_flags_as_required(["workdir"])

  def run() -> None:
    evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
