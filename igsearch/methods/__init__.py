"""Step-reward methods, one file each: the estimator (registered by name, with the step scorers it
``needs`` and the config section of its own knobs) and any step scorer of its own.

Importing this package registers them all; the trainer and the config loader do. A method of your
own is written the same way in any module you import before training (docs/DESIGN.md, "How to add a
method"; ``tests/test_plugin_method.py``).

- ``grpo``: trajectory-level GRPO, the baseline.
- ``ig``: IG-Search: GRPO plus each search step's information gain on its query tokens; scorer
  ``step_ig``; knobs in the ``ig`` section (shared with the IG scoring settings).
- ``rloo``: REINFORCE leave-one-out baseline, trajectory level.
- ``gigpo``: GiGPO (verl-agent): episode-level group advantage plus step-level groups of identical
  anchor states; scorer ``anchor_state`` (no forward pass); section ``gigpo``.
- ``igpo``: IGPO (arXiv 2510.14967): turn-level information gain of the gold answer plus the outcome
  reward, group-normalised and accumulated; scorer ``turn_gain`` (one packed tree forward); section ``igpo``.
"""

from . import gigpo, grpo, ig, igpo, rloo

__all__ = ["gigpo", "grpo", "ig", "igpo", "rloo"]
