"""Recording demonstrations from a robot into a replay buffer (`imle-record`).

- :mod:`runtime.record.buffer`: the crash-safe zarr replay-buffer writer (numpy only).
- :mod:`runtime.record.sources`: where the commands come from (scripted, keyboard teleoperation).
- :mod:`runtime.record.session`: the recording loop (one episode at a time, the runtime's safety filter).
- :mod:`runtime.record.cli`: the `imle-record` command.
"""
