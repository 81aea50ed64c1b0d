"""`harmosearch train` under torchrun: 2 CPU processes (gloo) share each global batch and end
with the weights of one process training on the same batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harmosearch.config import SynthConfig
from harmosearch.synth import generate
from harmosearch.train.loop import train

from .test_train import tiny_config

LOSSES = "gc,lrc,gr,tight"


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def ddp_scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_scenes")
    generate(out, SynthConfig(n=32, seed=21, size=96))
    return out


def test_two_processes_resume_and_end_with_the_weights_of_one(ddp_scenes, tmp_path):
    """One process trains 8 steps (2 epochs of 4 global batches of 8). Another single-process run
    stops after its checkpoint at step 2; torchrun's 2 processes resume it, each encoding 4
    samples of every batch, and must end with the same weights, rank 0 alone writing."""
    extra = {"train.epochs": 2, "train.checkpoint_every": 2, "train.losses": LOSSES}
    whole = train(tiny_config(**extra), ddp_scenes, tmp_path / "whole")
    assert whole.steps == 8

    def stop_at_3(metrics):
        if metrics["step"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(**extra), ddp_scenes, tmp_path / "shared", on_step=stop_at_3)

    settings = tmp_path / "harmosearch.toml"
    settings.write_text('[train]\nprecision = "fp32"\nlr = 2e-3\nwarmup_steps = 2\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-m", "harmosearch", "--config", str(settings), "train", "--data", str(ddp_scenes)]
    options = ["--out", str(tmp_path / "shared"), "--model", "harmo-test-vit:random", "--device", "cpu"]
    options += ["--losses", LOSSES, "--batch-size", "8", "--epochs", "2", "--checkpoint-every", "2", "--workers", "0"]
    done = subprocess.run(launcher + command + options, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resumed from step 2") == 1 and done.stdout.count("trained 8 steps") == 1

    one = load_file(tmp_path / "whole" / "final" / "open_clip_model.safetensors")
    two = load_file(tmp_path / "shared" / "final" / "open_clip_model.safetensors")
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, atol=2e-5, rtol=1e-4, msg=name)
    lines = (tmp_path / "shared" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))
    history = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(history[2:], [json.loads(line) for line in lines][2:], strict=True):
        assert theirs["total"] == pytest.approx(mine["total"], rel=1e-4) and theirs["tight"] > 0
