"""Tests of igsearch.integrations.verl: they run verl's own code and need its environment
(`make verl-env`, then `make verl-test`); elsewhere they are skipped."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("verl", reason="verl is not installed: build its environment with `make verl-env`")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # policy_fixtures
