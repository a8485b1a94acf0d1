"""Greedy tokens from bf16 logits (engine/csrc/greedy.cpp): the same token torch's max picks
from an fp32 copy, ties and NaN included, and the sampler takes that path only for plain greedy
rows."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.sampler import Sampler, SamplingBatch

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="dyno's CPU kernels did not build here")


def _torch(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().max(dim=-1).indices


@pytest.mark.parametrize("rows, vocab", [(1, 49152), (32, 49152), (3, 5), (5, 17), (7, 100003)])
def test_matches_torch_on_random_rows(rows, vocab):
    torch.manual_seed(rows * vocab)
    logits = torch.randn(rows, vocab).bfloat16()
    assert torch.equal(KERNELS.argmax_rows(logits), _torch(logits))


def test_ties_go_to_the_first_index():
    torch.manual_seed(0)
    logits = torch.randint(-3, 3, (64, 4099)).bfloat16()  # each row's maximum many times over
    got = KERNELS.argmax_rows(logits)
    assert torch.equal(got, _torch(logits))
    assert got.tolist() == [int(row.tolist().index(2)) for row in logits]


def test_a_nan_wins_like_torchs_max():
    logits = torch.randn(4, 1000).bfloat16()
    logits[0, 500] = logits[1, 999] = float("nan")  # in the vector part; in the tail
    logits[2, 3] = float("inf")
    logits[3, 0], logits[3, 10] = float("nan"), float("inf")
    assert KERNELS.argmax_rows(logits).tolist() == [500, 999, 3, 0]


def test_strided_rows_are_read_in_place():
    logits = torch.randn(8, 2 * 4096).bfloat16()[:, :4096]
    assert torch.equal(KERNELS.argmax_rows(logits), _torch(logits))


def test_refuses_fp32():
    with pytest.raises(RuntimeError, match="bf16"):
        KERNELS.argmax_rows(torch.randn(2, 8))


def _batch(rows: int, temperature: float = 0.0, logit_bias=None, num_logprobs=None) -> SamplingBatch:
    return SamplingBatch(
        temperature=torch.full((rows,), temperature), top_k=None, top_p=None, min_p=None,
        presence_penalty=None, frequency_penalty=None, repetition_penalty=None,
        prompt_token_ids=[[1]] * rows, output_token_ids=[[]] * rows,
        logit_bias=[logit_bias] * rows, banned_token_ids=[[]] * rows, generators=[None] * rows,
        num_logprobs=[num_logprobs] * rows)


def test_sampler_gives_the_fp32_paths_tokens_on_bf16_logits():
    torch.manual_seed(1)
    logits = torch.randn(6, 4096).bfloat16()
    want, _ = Sampler(0)(logits.float(), _batch(6))
    for batch in (_batch(6), _batch(6, logit_bias={7: 100.0}), _batch(6, num_logprobs=2)):
        fast, lps = Sampler(0, KERNELS)(logits, batch)
        slow, slow_lps = Sampler(0)(logits.float(), batch)
        assert torch.equal(fast, slow) and lps == slow_lps
    assert torch.equal(Sampler(0, KERNELS)(logits, _batch(6))[0], want)
    assert Sampler(0, KERNELS)(logits, _batch(6, logit_bias={7: 100.0}))[0].tolist() == [7] * 6
