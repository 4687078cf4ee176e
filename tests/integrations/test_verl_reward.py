"""The EM reward as verl calls it (compute_score), on every ground-truth format verl data uses."""

import numpy as np
import pytest

pytest.importorskip("verl")

from igsearch.integrations.verl.reward import compute_score, gold_variants  # noqa: E402


@pytest.mark.parametrize("truth", ["Dulmar", ["Dulmar", "Dulmar City"], np.array(["x", "Dulmar"]),
                                   {"target": ["Dulmar"]}, {"target": "Dulmar"}])
def test_exact_match_on_the_last_answer(truth):
    text = "<search> q </search>\n<documents>...</documents>\n<answer> wrong </answer> then <answer> the dulmar. </answer>"
    assert compute_score("world", text, truth) == 1.0
    assert compute_score("world", "<answer> Oskaria </answer>", truth) == 0.0
    assert compute_score("world", "<answer> Dulmar", truth) == 0.0  # unclosed: no answer
    assert compute_score("world", "no answer at all", truth) == 0.0


def test_bad_ground_truth_is_named():
    with pytest.raises(ValueError, match="'target'"):
        gold_variants({"answers": ["x"]})
    with pytest.raises(ValueError, match="no gold answer"):
        gold_variants([])
