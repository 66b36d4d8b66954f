"""The backend-independent records: token log-probabilities and their compact form."""

import math

import pytest

from shepherd.models.base import TokenLogprobs, entropy_from_top


def test_packed_logprobs_round_trip_at_half_precision():
    lp = TokenLogprobs([-0.01, -2.5, -13.0], [0.05, 1.7, 3.2], [4.0, 0.1, 0.0], [3, 9, 12])
    back = TokenLogprobs.unpack(lp.pack())
    assert back.ends == [3, 9, 12] and back.entropy_exact
    assert back.logprobs == pytest.approx(lp.logprobs, rel=2e-3)
    assert back.entropies == pytest.approx(lp.entropies, rel=2e-3)
    assert len(lp.pack()) < 4 * 8 * 3  # 8 bytes a token, base64
    assert TokenLogprobs.unpack(TokenLogprobs([], [], [], []).pack()).logprobs == []


@pytest.mark.parametrize("bad", ["", "zAAAA", "x" + "QUJD"])
def test_a_damaged_pack_is_refused(bad):
    with pytest.raises(ValueError):
        TokenLogprobs.unpack(bad)


def test_lengths_must_agree():
    with pytest.raises(ValueError):
        TokenLogprobs([-1.0, -2.0], [0.1], [0.0, 0.0], [1, 2])


def test_entropy_from_the_top_k_is_a_lower_bound_that_is_exact_when_the_top_k_hold_all_mass():
    ps = [0.5, 0.25, 0.25]
    exact = -sum(p * math.log(p) for p in ps)
    assert entropy_from_top([math.log(p) for p in ps]) == pytest.approx(exact)
    assert entropy_from_top([math.log(0.5), math.log(0.25)]) <= exact + 1e-12
    api = TokenLogprobs.from_top([math.log(0.5)], [[math.log(0.25), math.log(0.5)]], [4])
    assert api.margins[0] == pytest.approx(math.log(2)) and not api.entropy_exact
