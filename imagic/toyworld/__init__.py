"""A procedural toy world for Imagic: scenes whose every edit has a known right answer.

`imagic.toyworld.scenes` samples seeded scenes (a textured background with one or two coloured
shapes, stick figures or faces), renders them with exact object masks, captions them in plain
English with paraphrases, and applies edits (colour, shape, size, position, pose, add) to give
the expected edited image: the ground truth a quality benchmark scores a model against.
`imagic.toyworld.vocabulary` lists every attribute value and caption word, and
`imagic.toyworld.drawing` the pixel geometry. Pure Python with Pillow and numpy; no torch.

The toy world's own text-to-image model: `tokenizer` (one CLIP token per caption word, and
`unknown_words`), `config` (architecture and training parameters), `model` (the small Stable
Diffusion pipeline), `train` (`imagic toy train`: resumable two-phase training), `folder` (the
training folder's layout and checks) and `checksums` (sha256 of a saved model). `shipped` is the
trained model that ships in `weights/` (the model id `imagic:toy`, the default of every edit),
`demo` the shipped scene and settings of `imagic demo`, and `adherence` the procedural check of
whether a sample shows what its caption says. Only `model` and `train` import torch at import
time.
"""
