"""Forward+backward time of each masked conv relative to PlainConv; one JSON line per layer.

  .venv/bin/python bench/layers.py --size=256 --batch=4 --channels=64 --steps=10

Each step is jit(value_and_grad) of a scalar loss w.r.t. params and x, timed with block_until_ready; the median
over `steps` timed steps after `warmup` steps is reported as {"layer", "ms", "ratio_vs_plain"}.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxinpaint import layers

flags.DEFINE_integer("size", 256, "Image height and width.")
flags.DEFINE_integer("batch", 4, "Batch size.")
flags.DEFINE_integer("channels", 64, "Input and output channels.")
flags.DEFINE_integer("kernel", 3, "Kernel size.")
flags.DEFINE_integer("steps", 10, "Timed steps (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_list("layers", ["plain", "partial", "weighted", "gated"], "Layers to time; plain is the reference.")
FLAGS = flags.FLAGS


def random_valid(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
  """f32[B, H, W, 1], 1 = known, with a few random rectangular holes per image."""
  valid = np.ones((batch, size, size, 1), np.float32)
  for b in range(batch):
    for _ in range(4):
      h, w = rng.integers(size // 8, size // 3, size=2)
      top, left = rng.integers(0, size - h), rng.integers(0, size - w)
      valid[b, top : top + h, left : left + w] = 0.0
  return valid


def time_layer(name: str, x: jax.Array, valid: jax.Array) -> float:
  """Median milliseconds of one jitted forward+backward step of layer `name`."""
  layer = layers.get_conv(name)(FLAGS.channels, (FLAGS.kernel, FLAGS.kernel))
  params = jax.jit(layer.init)(jax.random.key(0), x, valid)

  def loss(params, x, valid):
    y, valid_out = layer.apply(params, x, valid)
    return jnp.mean(jnp.square(y.astype(jnp.float32))) + jnp.mean(valid_out)

  # valid is an argument, not a closed-over constant, so XLA cannot fold the mask maths at compile time.
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  jax.block_until_ready(step(params, x, valid))  # compile
  for _ in range(FLAGS.warmup):
    jax.block_until_ready(step(params, x, valid))
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    jax.block_until_ready(step(params, x, valid))
    times.append(time.perf_counter() - start)
  return 1000.0 * float(np.median(times))


def main(argv):
  del argv
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()  # the flags the trainer runs with; before the first computation starts the backend
  rng = np.random.default_rng(0)
  shape = (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels)
  valid = jnp.asarray(random_valid(rng, FLAGS.batch, FLAGS.size))
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32)) * valid
  names = ["plain"] + [n for n in FLAGS.layers if n != "plain"]
  plain_ms = None
  for name in names:
    ms = time_layer(name, x, valid)
    plain_ms = plain_ms or ms
    print(json.dumps({"layer": name, "ms": round(ms, 3), "ratio_vs_plain": round(ms / plain_ms, 3)}), flush=True)


if __name__ == "__main__":
  app.run(main)
