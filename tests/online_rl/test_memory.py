"""online_rl.memory.StepMemory: a step's own peak, reset between steps, on the CPU (CUDA where torch sees one)."""

import pytest
import torch

from online_rl.memory import StepMemory


def test_each_cpu_step_gets_its_own_peak():
    with StepMemory("cpu") as big:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched so it is resident
        del block
    with StepMemory("cpu") as small:
        torch.ones(16)
    assert big.peak_mb >= big.growth_mb >= 60
    # The second step's peak forgets the first's 64 MiB (where Linux lets the peak be reset).
    assert small.growth_mb < 30 and small.peak_mb <= big.peak_mb


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_step_reports_the_allocators_peak():
    with StepMemory("cuda") as step:
        block = torch.ones(64 * 2**20 // 4, device="cuda")
        del block
    assert 64 <= step.growth_mb <= step.peak_mb
