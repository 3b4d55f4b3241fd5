"""pick_tokens/RowState driven by scripted logits: what a trained model does that a random one will not
(open a thinking block itself, end its turn), plus streaming hold-back and per-row endings."""

from types import SimpleNamespace

import pytest
import torch

from serve.engines.base import EngineError, GenerationRequest, GenerationResult, SamplingParams, TokenEvent
from serve.engines.transformers.rows import DecodeContext, RowState, pick_tokens


@pytest.fixture(scope="module")
def ctx(tiny_dir):
    from openvlthinker.models import load_processor

    return DecodeContext.from_tokenizer(load_processor(tiny_dir).tokenizer)


def _ids(ctx, text):
    return ctx.tokenizer.encode(text, add_special_tokens=False)


def _run(ctx, scripts, requests, steps):
    """Greedy-decode rows whose 'model' always prefers the next token of its script.

    Like RunningBatch: each step picks tokens for the live rows only; ended rows leave.
    """
    jobs = [SimpleNamespace(cancelled=False, name=i) for i in range(len(scripts))]
    rows = [RowState(job, req, [1, 2, 3], ctx, "cpu") for job, req in zip(jobs, requests)]
    emitted = []
    vocab = len(ctx.tokenizer)
    pos = [0] * len(rows)
    for _ in range(steps):
        live = [i for i, row in enumerate(rows) if row.live]
        if not live:
            break
        scores = torch.randn(len(live), vocab) * 0.1
        wanted = [scripts[i][min(pos[i], len(scripts[i]) - 1)] for i in live]
        scores[torch.arange(len(live)), wanted] = 5.0
        tokens, out = pick_tokens([rows[i] for i in live], scores)
        emitted.extend(out)
        for i, token, want in zip(live, tokens, wanted):
            pos[i] += token == want  # a forced token leaves the script where it was
    per_job = {i: [item for job, item in emitted if job.name == i] for i in range(len(rows))}
    return per_job, rows


def _req(max_tokens=40, **kw):
    sampling = {k: kw.pop(k) for k in ("stop", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty")
                if k in kw}
    return GenerationRequest("r", [], SamplingParams(max_tokens=max_tokens, temperature=0.0, **sampling), **kw)


def test_model_opened_thinking_is_closed_at_budget_then_eos_ends(ctx):
    im_end = ctx.tokenizer.convert_tokens_to_ids("<|im_end|>")
    script = _ids(ctx, "Let me look. <thinking> I count the red circles one by one and then") + [im_end]
    per_job, _ = _run(ctx, [script], [_req(mode="think", thinking_budget=3)], steps=60)
    events, result = per_job[0][:-1], per_job[0][-1]
    assert isinstance(result, GenerationResult) and all(isinstance(e, TokenEvent) for e in events)
    ids = result.completion_token_ids
    open_at = ids.index(ctx.tokenizer.convert_tokens_to_ids("<thinking>"))
    assert ids[open_at + 4] == ctx.tokenizer.convert_tokens_to_ids("</thinking>")
    assert result.budget_hit and result.thinking_tokens == 5
    assert "".join(e.text for e in events) == result.text


def test_eos_finishes_with_stop_and_is_kept_in_ids(ctx):
    im_end = ctx.tokenizer.convert_tokens_to_ids("<|im_end|>")
    script = _ids(ctx, "<answer>3</answer>") + [im_end, 5, 6]
    per_job, _ = _run(ctx, [script], [_req(top_logprobs=2)], steps=30)
    result = per_job[0][-1]
    assert result.finish_reason == "stop" and result.text == "<answer>3</answer>"
    assert result.completion_token_ids[-1] == im_end and len(result.top_logprobs) == len(result.completion_token_ids)


def test_stop_string_is_held_back_while_it_may_still_match(ctx):
    script = _ids(ctx, "red circle</answer> and more text here")
    per_job, _ = _run(ctx, [script], [_req(stop=("</answer>",))], steps=40)
    events, result = per_job[0][:-1], per_job[0][-1]
    assert result.finish_reason == "stop" and result.text == "red circle"
    streamed = ""
    for e in events:
        streamed += e.text
        assert "<" not in streamed  # the tag's beginning never reached the client
    assert streamed == "red circle"


def test_rows_end_independently_and_cancelled_rows_stop(ctx):
    im_end = ctx.tokenizer.convert_tokens_to_ids("<|im_end|>")
    scripts = [_ids(ctx, "ab") + [im_end], _ids(ctx, "red circle blue square" * 4), _ids(ctx, "red square" * 9)]
    per_job, rows = _run(ctx, scripts, [_req(), _req(max_tokens=7), _req(max_tokens=30)], steps=8)
    assert per_job[0][-1].finish_reason == "stop"
    assert per_job[1][-1].finish_reason == "length" and len(per_job[1][-1].completion_token_ids) == 7
    assert not any(isinstance(i, GenerationResult) for i in per_job[2])  # still running after 8 steps
    assert [row.live for row in rows] == [False, False, True]
    # A cancelled row is no longer live, so the batch drops it before the next step.
    rows[2].job.cancelled = True
    assert not rows[2].live and not rows[2].finished


def test_vision_placeholders_are_never_generated(ctx):
    """A model that wants to write <|image_pad|> gets its next best token; logprobs stay raw."""
    pad = ctx.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert pad in ctx.banned
    per_job, _ = _run(ctx, [[pad] * 10], [_req(max_tokens=6)], steps=6)
    result = per_job[0][-1]
    assert len(result.completion_token_ids) == 6 and pad not in result.completion_token_ids


def _shaped(ctx, steps, logits_of, **sampling):
    """Greedy-decode one row for `steps` tokens from `logits_of(step)`, with the given penalties/bias."""
    row = RowState(SimpleNamespace(cancelled=False), _req(max_tokens=steps, **sampling), [1], ctx, "cpu")
    for step in range(steps):
        pick_tokens([row], logits_of(step)[None])
    return row


def test_logit_bias_steers_greedy_choice_but_logprobs_stay_raw(ctx):
    vocab = len(ctx.tokenizer)
    flat = torch.zeros(vocab)
    flat[7] = 3.0
    row = _shaped(ctx, 3, lambda _: flat, logit_bias=((11, 5.0),))
    assert row.ids == [11, 11, 11]  # 0 + 5 beats 3
    raw = torch.log_softmax(flat, -1)[11].item()
    assert row.logprobs == pytest.approx([raw] * 3)  # the model's distribution, as the RL trainer recomputes it
    assert _shaped(ctx, 2, lambda _: flat, logit_bias=((7, -100.0),)).ids[0] != 7


def test_frequency_penalty_grows_with_each_repeat_and_presence_is_paid_once(ctx):
    vocab = len(ctx.tokenizer)
    logits = torch.zeros(vocab)
    logits[7], logits[8] = 2.0, 1.0  # 7 leads 8 by 1.0
    # frequency 0.4: 7 pays 0.4 per use, so after 3 uses (1.2 > 1.0) 8 takes over
    assert _shaped(ctx, 5, lambda _: logits, frequency_penalty=0.4).ids[:4] == [7, 7, 7, 8]
    # presence 1.5, paid once: 7 (2 > 1), then 8 (0.5 < 1), then 7 for good (0.5 > -0.5, no further cost)
    assert _shaped(ctx, 4, lambda _: logits, presence_penalty=1.5).ids == [7, 8, 7, 7]
    # a negative penalty rewards repetition
    assert set(_shaped(ctx, 4, lambda _: logits, presence_penalty=-0.5).ids) == {7}


def test_bias_cannot_unban_image_placeholders_and_rows_do_not_share_offsets(ctx):
    vocab = len(ctx.tokenizer)
    pad = ctx.banned[0]
    logits = torch.zeros(2, vocab)
    logits[:, 7] = 1.0
    biased = RowState(SimpleNamespace(cancelled=False), _req(logit_bias=((pad, 100.0), (9, 50.0))), [1], ctx, "cpu")
    plain = RowState(SimpleNamespace(cancelled=False), _req(), [1], ctx, "cpu")
    tokens, _ = pick_tokens([biased, plain], logits)
    assert tokens == [9, 7]


def test_sampling_params_check_names_the_bad_parameter():
    SamplingParams(max_tokens=4, logit_bias=((5, 1.0),)).check(vocab_size=10, max_top_logprobs=20)
    with pytest.raises(EngineError, match=r"logit_bias .*\(0\.\.9\), not \[10\]") as info:
        SamplingParams(max_tokens=4, logit_bias=((10, 1.0),)).check(vocab_size=10, max_top_logprobs=20)
    assert info.value.param == "logit_bias"
    with pytest.raises(EngineError, match="top_logprobs must be within 0..20") as info:
        SamplingParams(max_tokens=4, top_logprobs=21).check(vocab_size=10, max_top_logprobs=20)
    assert info.value.param == "top_logprobs"


def test_a_repetition_penalty_near_zero_cannot_overflow_the_sampled_distribution(ctx):
    """Found by the schema fuzz (tests/serve/test_schema_fuzz.py): repetition_penalty=5e-324 is valid (> 0), but
    divided the seen tokens' logits into inf, the sampler's probabilities into NaN, and the request into a 500."""
    logits = torch.zeros(1, len(ctx.tokenizer))
    logits[0, 7], logits[0, 8] = 2.0, 1.0
    for penalty in (5e-324, 1e-30, 1e-3):
        sampling = SamplingParams(max_tokens=4, temperature=1.0, seed=0, repetition_penalty=penalty)
        row = RowState(SimpleNamespace(cancelled=False), GenerationRequest("r", [], sampling), [7, 8], ctx, "cpu")
        tokens, _ = pick_tokens([row], logits)
        assert tokens[0] in (7, 8)  # both seen, both pushed to the top
