"""Scripted demonstration sources for the imle-record tests (loaded as scripted:tests/record_demos.py:NAME)."""
import os
import time
from pathlib import Path

import numpy as np

STEPS = 20


def reach(task, seed):
    """Move to a seeded goal inside the task's box for STEPS ticks."""
    goal = np.random.default_rng(seed).uniform(-0.5, 0.5, len(task.action.names))

    def act(obs):
        return None if obs.step >= STEPS else goal
    return act


def stall(task, seed):
    """As reach, but the episode of seed $IMLE_TEST_STALL_SEED touches $IMLE_TEST_MARKER at step 5 and never
    finishes (the test then kills or interrupts the recorder in the middle of that episode)."""
    inner = reach(task, seed)
    stall_seed = int(os.environ["IMLE_TEST_STALL_SEED"])

    def act(obs):
        if seed == stall_seed and obs.step == 5:
            Path(os.environ["IMLE_TEST_MARKER"]).write_text("stalled")
            for _ in range(600):  # until killed; Ctrl-C (a signal) ends the sleep early
                time.sleep(0.05)
                if Path(os.environ["IMLE_TEST_MARKER"] + ".stop").exists():
                    break
        return inner(obs)
    return act


def wrong_length(task, seed):
    return lambda obs: [0.0]


def nan_at_3(task, seed):
    inner = reach(task, seed)
    return lambda obs: [float("nan")] * len(task.action.names) if obs.step == 3 else inner(obs)


def raises(task, seed):
    def act(obs):
        raise RuntimeError("planner exploded\nsecond line")
    return act


def not_callable(task, seed):
    return 42
