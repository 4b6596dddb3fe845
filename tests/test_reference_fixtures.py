"""The reference fixtures made by AdapterHub's and PEFT's own libraries (tests/fixtures/adapterhub_*, made with
transformers 4.57 in a separate environment) load with the project's transformers 5 and still give the base-model
outputs those libraries recorded, so a mismatch against them is adapterctl's, not the backbone's."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "adapterhub"))
from check_backbones import FIXTURES, TOL, cases, diffs  # noqa: E402

CASES = list(cases())


def test_every_fixture_set_with_a_backbone_is_checked():
    assert {b.relative_to(FIXTURES).parts[0] for b, _ in CASES} == {"adapterhub_methods", "adapterhub_decoders"}
    assert len(CASES) == 8  # the methods BERT and seven decoder/encoder-decoder families


@pytest.mark.parametrize("backbone,ref", CASES, ids=[str(b.parent.relative_to(FIXTURES)) for b, _ in CASES])
def test_backbone_reproduces_recorded_base_outputs(backbone, ref):
    got = diffs(backbone, ref)
    assert "base.hidden" in got
    assert max(got.values()) <= TOL, got
