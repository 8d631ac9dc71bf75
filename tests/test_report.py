"""The margin table `make demo` ends with: model minus the best classical peer, per mask kind and metric."""

from jaxinpaint import report
from jaxinpaint.eval import harness


def _results():
  def row(method, kind, psnr, ssim, classical=True):
    return {"method": method, "kind": kind, "classical": classical, "n": 32, "psnr": psnr, "ssim": ssim}

  rows = [
    row("demo", "free_form", 22.0, 0.93, classical=False),
    row("demo", "centre", 15.0, 0.80, classical=False),
    row("demo", "hole_0-10", 30.0, 0.99, classical=False),
  ]
  for name, (p_ff, s_ff, p_c, s_c) in {
    "OpenCV Telea": (19.5, 0.917, 16.0, 0.778),
    "Biharmonic (skimage)": (21.0, 0.929, 16.4, 0.788),
    "Mean colour fill": (14.0, 0.95, 30.0, 0.99),
  }.items():
    rows += [row(name, "free_form", p_ff, s_ff), row(name, "centre", p_c, s_c), row(name, "hole_0-10", 40.0, 1.0)]
  return harness.Results(rows, {}, {}, [], {})


def test_margins_are_over_the_best_classical_peer_without_mean_fill_or_buckets():
  gaps = report.margins(_results(), "demo")
  assert set(gaps) == {("free_form", "psnr"), ("free_form", "ssim"), ("centre", "psnr"), ("centre", "ssim")}
  assert abs(gaps[("free_form", "psnr")] - 1.0) < 1e-9  # 22.0 - biharmonic's 21.0
  assert abs(gaps[("free_form", "ssim")] - 0.001) < 1e-9
  assert abs(gaps[("centre", "psnr")] + 1.4) < 1e-9  # behind biharmonic: negative


def test_margin_table_lists_model_peers_and_signed_margin():
  lines = report.margin_table(_results(), "demo").splitlines()
  assert lines[0] == "| mask | metric | demo | OpenCV Telea | Biharmonic (skimage) | margin over best peer |"
  assert "| Free-form | PSNR hole (dB) | 22.00 | 19.50 | 21.00 | +1.00 |" in lines
  assert "| Centre | SSIM | 0.8000 | 0.7780 | 0.7880 | +0.0120 |" in lines
  assert "| Centre | PSNR hole (dB) | 15.00 | 16.00 | 16.40 | -1.40 |" in lines
  assert len(lines) == 6 and not any("Mean colour" in line or "holes" in line for line in lines)


def test_margin_table_with_the_fill_shows_what_learning_adds():
  results = _results()
  results.rows += [
    {"method": "fill", "kind": k, "classical": False, "n": 32, "psnr": p, "ssim": s}
    for k, p, s in (("free_form", 21.5, 0.925), ("centre", 15.2, 0.79))
  ]
  lines = report.margin_table(results, "demo", fill="fill").splitlines()
  assert lines[0].endswith(
    "| demo | fill | OpenCV Telea | Biharmonic (skimage) | margin over best peer | learned (model - fill) |"
  )
  assert "| Free-form | PSNR hole (dB) | 22.00 | 21.50 | 19.50 | 21.00 | +1.00 | +0.50 |" in lines
  assert report.margins(results, "demo") == report.margins(_results(), "demo")  # the fill is not a peer


def test_learned_cell_gives_the_paired_standard_error_and_wins():
  import numpy as np

  results = _results()
  model, fill = np.array([22.0, 21.0, 23.5, 20.0]), np.array([21.0, 21.5, 22.0, 19.0])
  results.rows += [{"method": "fill", "kind": "free_form", "classical": False, "n": 4, "psnr": fill.mean()}]
  results.rows[0]["psnr"] = model.mean()
  results.per_example = {("demo", "free_form"): {"psnr": model}, ("fill", "free_form"): {"psnr": fill}}
  d = model - fill  # +1, -0.5, +1.5, +1: mean 0.75, ahead on 3 of 4
  se = np.sqrt(np.sum((d - d.mean()) ** 2) / 3) / 2
  assert report.learned_cell(results, "demo", "fill", "free_form", "psnr", 2) == f"+0.75 ± {se:.2f} (3/4)"
  results.per_example = {}  # rows averaged over seeds carry no per-example values: the mean alone
  assert report.learned_cell(results, "demo", "fill", "free_form", "psnr", 2) == "+0.75"


def test_a_residual_run_is_printed_beside_the_very_fill_it_corrects(tmp_path, capsys):
  """An untrained residual net returns its fill exactly (zero output conv), so `learned` must read +0.00 for the
  biharmonic fill the config names — and would not if the report scored push-pull instead."""
  from jaxinpaint import runs

  from helpers import load_config  # tests/helpers.py

  config = runs.with_defaults(load_config("wconv"))
  config.model.residual_fill, config.model.fill, config.model.conv = True, "biharmonic", "plain"
  header, rows, learned = _untrained_run_table(config, tmp_path, capsys)
  assert "| run | JAX biharmonic fill (no learning) | OpenCV Telea | Biharmonic (skimage) |" in header
  assert len(rows) == 4 and max(map(abs, learned)) < 1e-3, rows


def _untrained_run_table(config, tmp_path, capsys):
  """The margin table printed for an untrained run of `config`: (header, the four rows, their learned column)."""
  from helpers import save_run  # tests/helpers.py

  config.eval.update(masks="centre,free_form", examples=8, baselines="telea,biharmonic")
  workdir = str(tmp_path / "run")
  save_run(config, workdir)
  report.evaluate_and_print(config, workdir)
  lines = capsys.readouterr().out.splitlines()
  header = next(line for line in lines if line.startswith("| mask"))
  rows = [line for line in lines if line.startswith("| Centre") or line.startswith("| Free-form")]
  learned = [float(row.rstrip(" |").split(" | ")[-1].split(" ")[0]) for row in rows]  # rounded: -0.0000 from noise
  assert all(row.rstrip(" |").endswith("/8)") for row in rows), rows  # the paired s.e. over the 8 crops
  return header, rows, learned


def test_the_diffusion_model_is_printed_beside_the_biharmonic_fill_it_starts_from(tmp_path, capsys):
  """Untrained, the diffusion fill is the biharmonic fill of its own iteration count (20 in :tiny), so `learned`
  reads +0.00; scoring the default 100-step fill instead would show a difference."""
  from jaxinpaint import runs

  from helpers import load_config  # tests/helpers.py

  config = runs.with_defaults(load_config("diffusion"))
  header, rows, learned = _untrained_run_table(config, tmp_path, capsys)
  assert "| run | JAX biharmonic fill (no learning) | OpenCV Telea |" in header
  assert len(rows) == 4 and max(map(abs, learned)) < 1e-3, rows


def test_main_report_mode_prints_the_margin_table_for_a_finished_run(tmp_path):
  import os
  import subprocess
  import sys

  from helpers import ROOT, cli_env, make_run  # tests/helpers.py

  workdir = str(tmp_path / "run")
  make_run(workdir)
  env = cli_env()
  cmd = [sys.executable, "-m", "jaxinpaint.main", "--mode=report", f"--workdir={workdir}"]
  cmd += [f"--config={ROOT}/configs/wconv.py:tiny", "--config.eval.examples=8", "--config.eval.baselines=telea"]
  out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| mask | metric | run | OpenCV Telea | margin over best peer |" in out.stdout
  assert os.path.isfile(os.path.join(workdir, "eval_results.md"))


def test_the_closing_sentence_names_the_set_it_scored():
  from ml_collections import ConfigDict

  def label(**data):
    return report.eval_set_label(ConfigDict(data))

  assert label(source="demo", eval_split="eval") == "the held-out photos"
  assert "TRAINING photos (not held out" in label(source="demo", eval_split="training_photos")
  assert "package that ships no training photo" in label(source="demo", eval_split="other_package")
  assert label(source="tfds", eval_split="validation") == "the held-out split 'validation'"
