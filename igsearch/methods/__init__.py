"""Step-reward methods beyond the two built into ``igsearch.algo.advantages`` (``grpo``, ``ig``).

Each module here is one method in one file: its advantage estimator (registered by name, with the
step scorers it ``needs``) and any step scorer of its own. Importing this package registers them all;
the trainer does. A method of your own is written the same way in any module you import before
training (see docs/DESIGN.md section 11 and ``tests/test_plugin_method.py``).

- ``rloo``: REINFORCE leave-one-out baseline, trajectory level.
- ``gigpo``: GiGPO (verl-agent): episode-level group advantage plus step-level groups of identical
  anchor states; scorer ``anchor_state`` (no forward pass).
- ``igpo``: IGPO (arXiv 2510.14967): turn-level information gain of the gold answer plus the outcome
  reward, group-normalised and accumulated; scorer ``turn_gain`` (one packed tree forward).
"""

from . import gigpo, igpo, rloo

__all__ = ["gigpo", "igpo", "rloo"]
