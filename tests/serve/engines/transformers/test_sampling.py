"""Per-row token choice: greedy, temperature, top_p, forced tokens, generators, top logprobs."""

import math

import pytest
import torch

from serve.engines.transformers.sampling import choose_tokens, make_generator, top_logprobs


def _freqs(logits, temperature, top_p, n=4000, seed=0):
    gen = make_generator(seed, "cpu")
    batch = logits[None].expand(n, -1).clone()
    picks = choose_tokens(batch, [temperature] * n, [top_p] * n, [gen] * n, [None] * n)
    return torch.bincount(picks, minlength=logits.numel()).float() / n


def test_greedy_rows_take_argmax_and_forced_rows_their_token():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    out = choose_tokens(logits, [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [None, None, make_generator(0, "cpu")],
                        [None, 2, 0])
    assert out.tolist() == [1, 2, 0]


def test_temperature_follows_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0])
    for temperature in (0.5, 1.0, 2.0):
        expected = torch.softmax(logits / temperature, -1)
        assert torch.allclose(_freqs(logits, temperature, 1.0), expected, atol=0.03)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    assert _freqs(logits, 1.0, 0.5)[0] == 1.0  # 0.6 >= 0.5: only the best token
    f = _freqs(logits, 1.0, 0.8)  # 0.6 + 0.3 >= 0.8: two tokens, renormalised 2:1
    assert f[2] == 0 and f[0] == pytest.approx(2 / 3, abs=0.03)
    assert _freqs(logits, 1.0, 1.0)[2] == pytest.approx(0.1, abs=0.02)


def test_row_draws_do_not_depend_on_batch_mates():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    alone = [choose_tokens(logits[i:i + 1], [1.0], [0.9], [make_generator(i, "cpu")], [None]).item()
             for i in range(4)]
    for _ in range(3):
        together = choose_tokens(logits, [1.0] * 4, [0.9] * 4, [make_generator(i, "cpu") for i in range(4)],
                                 [None] * 4)
        assert together.tolist() == alone
    # Greedy and forced neighbours consume nothing from a sampled row's generator.
    mixed = choose_tokens(logits, [0.0, 1.0, 0.0, 1.0], [1.0, 0.9, 1.0, 0.9],
                          [None, make_generator(1, "cpu"), None, make_generator(3, "cpu")], [None, None, 7, None])
    assert mixed[1] == alone[1] and mixed[3] == alone[3] and mixed[2] == 7


def test_unseeded_generators_differ():
    logits = torch.zeros(1, 1000)
    picks = {choose_tokens(logits, [1.0], [1.0], [make_generator(None, "cpu")], [None]).item() for _ in range(5)}
    assert len(picks) > 1


def test_top_logprobs_sorted_and_sized():
    logp = torch.log_softmax(torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 0.0, 1.0]]), -1)
    (ids0, vals0), (ids1, vals1) = top_logprobs(logp, [3, 0])
    assert ids0 == [1, 3, 0] and vals0 == sorted(vals0, reverse=True) and all(v <= 0 for v in vals0)
    assert ids1 == [] and vals1 == []
    assert math.isclose(vals0[0], logp[0, 1].item(), rel_tol=1e-6)
    assert top_logprobs(logp, [0, 0]) == [([], []), ([], [])]
