"""Learning curves: the trainer's `timeline.jsonl` (its steps are the checkpoint steps, the wall-clock continues
across a resume, lines of lost steps and a torn last line are dropped), and `jaxinpaint.curves` on a tiny run (its
numbers equal `evaluate.evaluate`'s on the same examples, the plot is drawn, a run without a timeline fails in one
line)."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import curves, evaluate, runs, train

from helpers import ROOT, cli_env, load_config  # tests/helpers.py

FAKE_SECONDS = 1000.0  # step 10's recorded wall-clock, set before the resume: the resumed clock must start there
LOST_SECONDS = 1e6  # a line for step 20 whose checkpoint was lost: the resume must drop it


def write_lines(path, lines, tail=""):
  with open(path, "w") as f:
    f.write("".join(json.dumps(line) + "\n" for line in lines) + tail)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A :tiny run trained to step 10 (stop_at), its timeline then given step 10 at FAKE_SECONDS, a lost step 20
  and a torn line, then resumed to step 20."""
  config = load_config()
  config.eval.update(examples=8, masks="centre,free_form", baselines="telea,biharmonic")
  workdir = str(tmp_path_factory.mktemp("curve_run"))
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir, stop_at=10)
  first_wall = time.perf_counter() - t0
  first = train.read_timeline(workdir)
  path = os.path.join(workdir, train.TIMELINE_FILE)
  lost = {"step": 20, "train_seconds": LOST_SECONDS, "time": first[0]["time"] + 1}
  write_lines(path, [dict(first[0], train_seconds=FAKE_SECONDS), lost], tail='{"step": 30, "train_sec')
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  second_wall = time.perf_counter() - t0
  return dict(
    config=config,
    workdir=workdir,
    first=first,
    first_wall=first_wall,
    second_wall=second_wall,
    final=train.read_timeline(workdir),
  )


def test_timeline_continues_across_a_resume(run):
  first, final = run["first"], run["final"]
  assert [e["step"] for e in first] == [10]
  assert 0 < first[0]["train_seconds"] < run["first_wall"]
  checkpoints = sorted(int(n) for n in os.listdir(os.path.join(run["workdir"], "checkpoints")) if n.isdigit())
  assert [e["step"] for e in final] == checkpoints == [10, 20]
  assert final[0] == dict(first[0], train_seconds=FAKE_SECONDS)  # the restored step's line is kept as it was
  # continued from step 10's clock, not from 0 and not from the lost step's line; grew by at most this call's time
  assert FAKE_SECONDS < final[1]["train_seconds"] < FAKE_SECONDS + run["second_wall"]
  assert final[0]["time"] < final[1]["time"] <= time.time()
  # every line of the file parses: the torn line was dropped before appending, not glued to the next line
  lines = open(os.path.join(run["workdir"], train.TIMELINE_FILE)).read().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [10, 20]


def test_torn_last_line_is_skipped(tmp_path):
  lines = [{"step": 5, "train_seconds": 1.5, "time": 100.0}, {"step": 10, "train_seconds": 3.0, "time": 102.0}]
  write_lines(tmp_path / train.TIMELINE_FILE, lines, tail='{"step": 15, "train_seconds": 4.')
  assert train.read_timeline(str(tmp_path)) == lines
  assert train.read_timeline(str(tmp_path / "nothing_here")) == []


def test_timeline_resumed_at_a_step_drops_later_lines_and_continues_its_clock(tmp_path):
  lines = [{"step": s, "train_seconds": 2.0 * s, "time": 100.0 + s} for s in (10, 20, 30)]
  write_lines(tmp_path / train.TIMELINE_FILE, lines, tail='{"step": 40')
  timeline = train.Timeline(str(tmp_path), start_step=20)
  assert train.read_timeline(str(tmp_path)) == lines[:2]  # rewritten without step 30 and the torn line
  timeline.start()
  timeline.record(30)
  entries = train.read_timeline(str(tmp_path))
  assert [e["step"] for e in entries] == [10, 20, 30]
  assert 40.0 <= entries[-1]["train_seconds"] < 45.0  # step 20's 40 s plus the moment since start()
  fresh = train.Timeline(str(tmp_path), start_step=0)  # a fresh run in the same directory starts at 0, file emptied
  assert fresh.offset == 0.0 and train.read_timeline(str(tmp_path)) == []


def test_curves_equal_evaluate_and_write_plot_and_json(run, tmp_path):
  workdir = run["workdir"]
  config = runs.load_run_config(workdir)  # what the CLI starts from
  data = curves.learning_curves(config, workdir)
  paths = curves.write(data, str(tmp_path / "curve.png"))
  assert paths["json"] == str(tmp_path / "curve.json")
  assert json.load(open(paths["json"])) == json.loads(json.dumps(data))
  image = np.asarray(Image.open(paths["png"]))
  assert image.ndim == 3 and min(image.shape[:2]) > 300 and image.std() > 10

  assert data["kinds"] == ["centre", "free_form"] and data["examples"] == 8
  assert [p["step"] for p in data["points"]] == [10, 20]
  assert [p["train_seconds"] for p in data["points"]] == [e["train_seconds"] for e in run["final"]]
  assert [p["minutes"] for p in data["points"]] == pytest.approx([e["train_seconds"] / 60 for e in run["final"]])
  assert data["points"][0]["model"] != data["points"][1]["model"]  # each step's own checkpoint was restored

  results = evaluate.evaluate(config, workdir, progress=False)
  label = os.path.basename(os.path.normpath(workdir))
  assert results.info["step"] == 20
  peers = ["OpenCV Telea", "Biharmonic (skimage)"]
  assert sorted(data["peers"]) == sorted(peers)
  for kind in ("centre", "free_form"):
    for metric in ("psnr", "ssim"):
      assert data["points"][-1]["model"][kind][metric] == pytest.approx(results.value(label, kind, metric), rel=1e-6)
      for peer in peers:
        assert data["peers"][peer][kind][metric] == pytest.approx(results.value(peer, kind, metric), rel=1e-6)
      best = max(peers, key=lambda p: results.value(p, kind, metric))
      assert data["best_peer"][kind][metric]["method"] == best

  table = curves.markdown(data).splitlines()
  assert len(table) == 2 + 2 + 1  # header, rule, two steps, the best peer
  assert table[2].startswith("| 10 | ") and table[3].startswith("| 20 | ")
  assert f"{data['points'][-1]['model']['free_form']['psnr']:.2f}" in table[3]


def test_timeline_without_kept_checkpoints_fails_in_one_line(run, tmp_path):
  shutil.copy(os.path.join(run["workdir"], runs.CONFIG_FILE), tmp_path)
  write_lines(tmp_path / train.TIMELINE_FILE, [{"step": 5, "train_seconds": 1.0, "time": 1.0}])
  with pytest.raises(ValueError, match=r"none of the steps in .*timeline.jsonl \(5\) has a kept checkpoint"):
    curves.learning_curves(runs.load_run_config(str(tmp_path)), str(tmp_path))


def test_cli_without_timeline_prints_one_error_line(run, tmp_path):
  shutil.copy(os.path.join(run["workdir"], runs.CONFIG_FILE), tmp_path)
  env = cli_env()
  proc = subprocess.run(
    [sys.executable, "-m", "jaxinpaint.curves", f"--workdir={tmp_path}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=120,
  )
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "timeline.jsonl is missing or empty" in lines[-1]
  assert "Traceback" not in proc.stderr and sum(line.startswith("error") for line in lines) == 1
  assert not os.path.exists(tmp_path / curves.DEFAULT_OUT)
