"""`imagic demo`: one Imagic edit of a shipped toy scene with the shipped toy model.

The demo is the first thing a new user runs, on whatever machine they have, so it is sized to
finish in under a minute on a 2-core CPU and to show what Imagic is about: the input kept at
eta 0, the edit (a square becoming a circle, a shape change no colour filter could do) coming
in as eta grows, and the background staying. Its input is a toy-world scene rendered by
`imagic.toyworld.scenes` and shipped as `demo-input.png` (a test keeps the two identical), and
its text is the scene's own caption after the edit, in the words the model was trained on.

Every value here is only a default of `imagic demo`; its flags are those of `imagic edit`.
"""

from __future__ import annotations

from pathlib import Path

from imagic.toyworld.scenes import Edit, Scene, SceneObject, apply_edit, canonical_caption

DEMO_SCENE = Scene(
    background="white",
    texture="plain",
    objects=(SceneObject(shape="square", colour="red", size="large", position="left"),),
)
DEMO_EDIT = Edit(kind="shape", object_index=0, value="circle")
DEMO_TEXT = canonical_caption(apply_edit(DEMO_SCENE, DEMO_EDIT))
"""'a large red circle on the left on a white background'."""
DEMO_IMAGE = Path(__file__).with_name("demo-input.png")
DEMO_OUT = "imagic-demo"

DEMO_ETAS = (0.0, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0)
"""From the input (0) through the paper's 'jump' region (0.6-0.8) to the text alone (1)."""
DEMO_SEEDS = (0, 1, 2)
DEMO_STEPS_A = 200
DEMO_STEPS_B = 300
DEMO_LR_B = 1.5e-6
"""Stage B's learning rate for the toy model, picked on the demo's edit with
`benchmarks/demo_lr_sweep.py` (`benchmarks/toy_quality.py` then measures it on other edits).
Every rate from 1e-5 down to 1e-6 gives the square back at eta 0 (27 dB); from 3e-6 up the
fine-tuned model redraws the square at every eta for at least one seed, at 1e-6 the circle
already shows at eta 0.4, and at 1.5e-6 it comes in at eta 0.6-0.7 for every seed, the paper's
"jump"."""
DEMO_STEPS_C = 25
DEMO_GUIDANCE = 4.0
"""The guidance the toy model's training grids sample with."""
