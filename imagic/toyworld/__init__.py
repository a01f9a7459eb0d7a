"""A procedural toy world for Imagic: scenes whose every edit has a known right answer.

`imagic.toyworld.scenes` samples seeded scenes (a textured background with one or two coloured
shapes, stick figures or faces), renders them with exact object masks, captions them in plain
English with paraphrases, and applies edits (colour, shape, size, position, pose, add) to give
the expected edited image: the ground truth a quality benchmark scores a model against.
`imagic.toyworld.vocabulary` lists every attribute value and caption word, and
`imagic.toyworld.drawing` the pixel geometry. Pure Python with Pillow and numpy; no torch.
"""
