"""Mask packs: a pack round-trips bit-exactly and is reproducible, a tampered pack is refused naming the file, an
imported black-hole folder is the same pack as its inverted white-hole twin, imports resize, bucket and warn, the
CLI fails in one line; progress bars draw only on a terminal of process 0."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import masks as masks_cli
from jaxinpaint import progress
from jaxinpaint.data import mask_packs, masks
from jaxinpaint.runs import jit_init

from helpers import ROOT, cli_env  # tests/helpers.py


@pytest.fixture(scope="module")
def lama_pack(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("packs") / "lama")
  (manifest,) = mask_packs.make_pack("lama_thick", 32, 6, 3, out)
  return out, manifest


def test_pack_round_trips_bit_exactly_and_is_reproducible(lama_pack, tmp_path):
  out, manifest = lama_pack
  drawn = [masks.make_mask_fn("lama_thick")(np.random.default_rng([3, 1, i]), 32, 32) < 0.5 for i in range(6)]
  pack = mask_packs.verify_pack(out)
  assert pack.holes.dtype == bool and pack.holes.shape == (6, 32, 32)
  np.testing.assert_array_equal(pack.holes, np.stack(drawn))
  np.testing.assert_array_equal(pack.valid(7), 1.0 - drawn[1])  # example i gets mask i mod N
  with Image.open(os.path.join(out, "000002.png")) as img:  # white = hole, 8-bit grey, lossless
    assert img.format == "PNG" and img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), np.where(drawn[2], 255, 0))
  on_disk = json.load(open(os.path.join(out, mask_packs.MANIFEST)))
  assert on_disk == manifest and manifest["count"] == 6 and manifest["size"] == [32, 32] and manifest["seed"] == 3
  assert manifest["generator"]["kind"] == "lama_thick" and manifest["generator"]["settings"]["max_width"] == 100
  assert [f["hole_ratio"] for f in manifest["files"]] == pytest.approx([d.mean() for d in drawn], abs=1e-6)
  (again,) = mask_packs.make_pack("lama_thick", 32, 6, 3, str(tmp_path / "again"))
  (other,) = mask_packs.make_pack("lama_thick", 32, 6, 4, str(tmp_path / "other"))
  assert again["pack_id"] == manifest["pack_id"] and other["pack_id"] != manifest["pack_id"]
  assert len(manifest["pack_id"]) == mask_packs.ID_DIGITS
  # importing a pack's own folder gives back the same masks, hence the same id
  (imported,) = mask_packs.import_folder(out, str(tmp_path / "imported"))
  assert imported["pack_id"] == manifest["pack_id"]


def test_generated_packs_hold_the_pipelines_eval_masks(tmp_path):
  from jaxinpaint.data import pipeline

  for kind in ("centre", "hole_20-30", "free_form+random_box"):
    mask_packs.make_pack(kind, 24, 3, 0, str(tmp_path / kind))
    pack = mask_packs.verify_pack(str(tmp_path / kind))
    fn = mask_packs.generator_for(kind)
    for i in range(3):
      valid = pipeline.draw_valid(fn, np.random.default_rng([pipeline.EVAL_SEED, 1, i]), 24)[..., 0]
      np.testing.assert_array_equal(pack.valid(i), valid)
  assert mask_packs.verify_pack(str(tmp_path / "centre")).holes.mean() == 0.25


def test_tampered_packs_are_refused_naming_the_first_bad_file(lama_pack, tmp_path):
  import shutil

  out = str(tmp_path / "copy")
  shutil.copytree(lama_pack[0], out)
  mask_packs.verify_pack(out)
  hole = np.asarray(Image.open(os.path.join(out, "000004.png"))).copy()
  hole[0, 0] = 255 - hole[0, 0]
  Image.fromarray(hole).save(os.path.join(out, "000004.png"))
  Image.fromarray(np.asarray(Image.open(os.path.join(out, "000005.png")))).save(
    os.path.join(out, "000005.png"), compress_level=0
  )
  with pytest.raises(mask_packs.MaskPackError, match=r"copy: 000004.png does not match its manifest \(sha256"):
    mask_packs.verify_pack(out)
  os.remove(os.path.join(out, "000001.png"))
  with pytest.raises(mask_packs.MaskPackError, match="000001.png is missing"):
    mask_packs.verify_pack(out)
  shutil.rmtree(out)
  shutil.copytree(lama_pack[0], out)
  manifest = json.load(open(os.path.join(out, mask_packs.MANIFEST)))
  manifest["pack_id"] = "0" * 16  # a manifest edited to claim another pack
  json.dump(manifest, open(os.path.join(out, mask_packs.MANIFEST), "w"))
  with pytest.raises(mask_packs.MaskPackError, match="pack_id 0000000000000000 does not match its files"):
    mask_packs.verify_pack(out)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(mask_packs.MaskPackError, match="no manifest.json in it or in its sub-folders"):
    mask_packs.open_packs(str(tmp_path / "empty"))


def _write_masks(folder, holes, black_hole=False, rgb=False):
  """Mask files as another codebase might write them: 8-bit with anti-aliased edges, optionally RGB / inverted."""
  os.makedirs(folder, exist_ok=True)
  for i, hole in enumerate(holes):
    level = np.where(hole, 230, 20).astype(np.uint8)  # soft, not 0/255: the threshold decides
    level = 255 - level if black_hole else level
    image = np.repeat(level[..., None], 3, -1) if rgb else level
    Image.fromarray(image).save(os.path.join(folder, f"mask_{i:03d}.png"))


def test_black_hole_folder_imports_as_its_white_hole_twin(tmp_path):
  holes = mask_packs.generate_holes("random_boxes", 40, 5, 0)
  _write_masks(tmp_path / "white", holes)
  _write_masks(tmp_path / "black", holes, black_hole=True, rgb=True)
  (white,) = mask_packs.import_folder(str(tmp_path / "white"), str(tmp_path / "pw"))
  (black,) = mask_packs.import_folder(str(tmp_path / "black"), str(tmp_path / "pb"), polarity="black_hole")
  assert white["pack_id"] == black["pack_id"]
  assert [f["source"] for f in black["files"]] == [f"mask_{i:03d}.png" for i in range(5)]
  np.testing.assert_array_equal(mask_packs.verify_pack(str(tmp_path / "pb")).holes, np.stack(holes))
  wrong = []  # the black-hole folder read as white-hole: one warning line per mask that is > 90 % hole then
  mask_packs.import_folder(str(tmp_path / "black"), str(tmp_path / "pwrong"), warn=wrong.append)
  flagged = [f"mask_{i:03d}.png" for i, h in enumerate(holes) if h.mean() < 0.1]
  assert flagged and [w.split()[0] for w in wrong] == flagged and "(--polarity=black_hole)" in wrong[0]


def test_import_resizes_buckets_and_refuses_bad_folders(tmp_path):
  holes = [mask_packs.resize_nearest(h, 64) for h in mask_packs.generate_holes("free_form", 32, 12, 1)]
  _write_masks(tmp_path / "big", holes)
  (manifest,) = mask_packs.import_folder(str(tmp_path / "big"), str(tmp_path / "small"), resize=32)
  assert manifest["size"] == [32, 32] and manifest["generator"]["resample"] == "nearest"
  buckets = mask_packs.import_folder(str(tmp_path / "big"), str(tmp_path / "buckets"), bucket=True)
  assert sum(m["count"] for m in buckets) + buckets[0]["left_out_above_60"] == 12
  for pack in mask_packs.open_packs(str(tmp_path / "buckets")):
    low, high = mask_packs.parse_bucket(pack.name.rsplit(":", 1)[1])
    assert all(low <= h.mean() < high for h in pack.holes)
  Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "big" / "odd.png")
  with pytest.raises(mask_packs.MaskPackError, match=r"odd.png is 20x30 but mask_000.png is 64x64; pass --resize"):
    mask_packs.import_folder(str(tmp_path / "big"), str(tmp_path / "x"))
  (tmp_path / "big" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(mask_packs.MaskPackError, match="broken.png"):
    mask_packs.import_folder(str(tmp_path / "big"), str(tmp_path / "x"), resize=32)
  assert not os.path.exists(tmp_path / "x") and not [p for p in os.listdir(tmp_path) if p.startswith(".pack-")]
  with pytest.raises(mask_packs.MaskPackError, match="already exists"):
    mask_packs.make_pack("centre", 8, 1, 0, str(tmp_path / "small"))


def test_buckets_kind_writes_six_packs_in_order(tmp_path):
  manifests = mask_packs.make_pack("buckets", 32, 2, 0, str(tmp_path / "b"))
  packs = mask_packs.open_packs(str(tmp_path / "b"))
  assert [p.name for p in packs] == list(mask_packs.BUCKET_KINDS) == [m["name"] for m in manifests]
  for pack in packs:
    low, high = mask_packs.parse_bucket(pack.name)
    assert all(low <= h.mean() < high for h in pack.holes)


def test_cli_writes_verifies_and_fails_in_one_line(tmp_path, capsys):
  masks_cli.main(["pack", "--kind=random_box", "--size=16", "--n=3", f"--out={tmp_path / 'p'}"])
  line = capsys.readouterr().out.strip()
  assert line.startswith("wrote pack ") and "random_box, 3 masks, 16x16" in line
  masks_cli.main(["verify", str(tmp_path / "p")])
  assert "matches its manifest" in capsys.readouterr().out
  for args, message in [
    (["pack", "--kind=free_frm", f"--out={tmp_path / 'q'}"], "error: unknown mask kind 'free_frm'"),
    (["pack", f"--out={tmp_path / 'q'}"], "error: pack needs exactly one of --kind=KIND"),
    (["pack", "--kind=centre", "--n=0", f"--out={tmp_path / 'q'}"], "error: --size and --n must be positive"),
    (["pack", "--kind=hole_20-10", f"--out={tmp_path / 'q'}"], "error: mask kind 'hole_20-10': need 0 <= low"),
    (["verify", str(tmp_path / "nowhere")], "error: mask pack "),
  ]:
    with pytest.raises(SystemExit) as exit_info:
      masks_cli.main(args)
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
  assert not os.path.exists(tmp_path / "q")
  env = cli_env()
  proc = subprocess.run(
    [sys.executable, "-m", "jaxinpaint.masks", "pack", "--kind=centre", "--size=8", "--n=2", f"--out={tmp_path / 'r'}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0 and proc.stdout.startswith("wrote pack "), proc.stderr[-2000:]


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_draws_only_on_a_terminal_of_process_zero():
  terminal, log = _Terminal(), io.StringIO()
  with progress.bar(10, desc="eval", unit="batch", stream=terminal, process_index=0) as b:
    assert b.enabled  # completion compiles its host callbacks in only then
    b.update(4)
    b.set_postfix(loss=0.5)
  assert "eval" in terminal.getvalue() and "4/10" in terminal.getvalue() and "batch" in terminal.getvalue()
  for kwargs in (
    dict(stream=log, process_index=0),
    dict(stream=_Terminal(), process_index=1),
    dict(stream=_Terminal(), process_index=0, enabled=False),
  ):
    b = progress.bar(10, **kwargs)
    assert isinstance(b, progress.NoBar) and not b.enabled
    b.update(3), b.set_description("x"), b.set_postfix(loss=1.0), b.close()
  assert log.getvalue() == ""
  closed = io.StringIO()
  closed.close()
  assert not progress.is_terminal(closed) and not progress.is_terminal(None)


def test_jitted_loops_feed_a_bar_from_the_device():
  import jax
  import jax.numpy as jnp

  def run(x, tick):
    def step(carry, i):
      if tick:
        progress.device_tick(i, every=5)
      return carry * 0.5 + i, carry

    return jax.lax.scan(step, x, jnp.arange(40))[0]

  x = jnp.arange(16.0)
  terminal = _Terminal()
  with progress.bar(40, desc="complete", stream=terminal, process_index=0) as b, progress.fed_from_device(b):
    ticked = jax.jit(jax.vmap(lambda v: run(v, True)))(x)  # vmapped: every step reported 16 times
    jax.block_until_ready(ticked)
    assert b.n == 36  # steps 0, 5, ..., 35 reported
  np.testing.assert_array_equal(ticked, jax.jit(jax.vmap(lambda v: run(v, False)))(x))
  assert "36/40" in terminal.getvalue()
  progress._host_tick(3)  # no bar fed: nothing happens


def test_log_lines_go_above_an_open_bar(monkeypatch):
  import logging as std_logging

  from absl import logging

  handler = logging.get_absl_handler().python_handler
  terminal = _Terminal()
  monkeypatch.setattr(handler, "stream", terminal)
  with progress.bar(5, desc="train", stream=terminal, process_index=0) as b:
    b.update(2)
    # what absl's root handler does with a record under app.run (pytest routes logging to its own handler)
    handler.emit(std_logging.LogRecord("absl", std_logging.WARNING, __file__, 1, "checkpoint written", None, None))
    assert handler.stream is not terminal
  assert handler.stream is terminal  # restored when the bar closes
  lines = terminal.getvalue().replace("\r", "\n").splitlines()
  assert any(line.endswith("checkpoint written") and "train" not in line for line in lines)


def test_latent_completion_feeds_its_bar_on_a_terminal(monkeypatch):
  import jax
  import jax.numpy as jnp

  from jaxinpaint import completion, sharding
  from jaxinpaint.models import DCGANDiscriminator, DCGANGenerator

  gen, disc = DCGANGenerator(latent_dim=4, features=(8, 8)), DCGANDiscriminator(features=(8,), image_size=16)
  variables = jit_init(
    lambda z, x: {"generator": gen.init(jax.random.key(0), z), "discriminator": disc.init(jax.random.key(1), x)}
  )(jnp.zeros((1, 4)), jnp.zeros((1, 16, 16, 3)))
  image = np.asarray(jax.jit(gen.apply)(variables["generator"], jax.random.uniform(jax.random.key(2), (3, 4))))
  valid = np.stack([masks.centre_box(16, 16)] * 3)[..., None]
  z0 = completion.initial_latents(0, 3, 4)
  c = completion.Completion(gen, disc, iterations=30, learning_rate=0.05)
  terminal = _Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  out = c.run(variables, image, valid, z0, mesh=sharding.make_mesh(jax.devices()[:2]))  # sharded: 2 devices
  assert "complete" in terminal.getvalue() and "30/30" in terminal.getvalue()
  assert out["context"].shape == (31, 3) and out["context"][-1].mean() < out["context"][0].mean()


def test_an_unreachable_bucket_leaves_no_pack_behind(tmp_path, monkeypatch):
  draw = mask_packs.generate_holes

  def last_bucket_fails(kind, *args, **kwargs):  # as mask_in_bucket does for a bucket its generator cannot reach
    if kind == "hole_50-60":
      raise RuntimeError("mask_in_bucket: no 8x8 mask with hole ratio in [0.5, 0.6)")
    return draw(kind, *args, **kwargs)

  monkeypatch.setattr(mask_packs, "generate_holes", last_bucket_fails)
  with pytest.raises(RuntimeError, match="no 8x8 mask"):
    mask_packs.make_pack("buckets", 8, 1, 0, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b")  # not five of the six packs
