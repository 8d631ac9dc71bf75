"""Evaluation, split by job. Import the module you need (`from jaxinpaint.eval import perceptual`); this file
imports nothing, so loading one job does not load the others.

- `perceptual.py`: FID and LPIPS maths, their weight loading (`load_variables`, `abstract_variables`,
  `random_variables`, `flatten_variables`) and the `Perceptual` harness that `evaluate` and `ablate` score with.
  The networks themselves live with the other networks: `models/inception.py` (FID's Inception-v3) and
  `models/vgg.py` (the one VGG16, also the partial-conv loss's); the PyTorch converters are in `scripts/`.

Still in `jaxinpaint/evaluate.py`, to move here later: the eval mask sets, the scoring harness
(`evaluate_methods`), report writing, and the CLI.
"""
