"""``python -m igsearch.integrations.verl.cpu_main ARGS``: ``python -m verl.trainer.main_ppo ARGS`` on the CPU.

It sets ``IGSEARCH_VERL_CPU=1`` (the seams of :mod:`igsearch.integrations.verl.cpu`) before verl is
imported, so this process and every Ray process it starts run verl on the ``cpu`` platform, then
calls verl's own ``main_ppo.main`` with the same Hydra arguments.
"""

from __future__ import annotations

import os

os.environ["IGSEARCH_VERL_CPU"] = "1"

from igsearch.integrations.verl import cpu  # noqa: E402

cpu.install()

from verl.trainer.main_ppo import main  # noqa: E402

if __name__ == "__main__":
    main()
