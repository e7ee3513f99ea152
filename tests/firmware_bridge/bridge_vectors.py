"""Byte-level test vectors, generated once from the codec and copied into docs/protocol.md.

The tests assert the codec still produces exactly these bytes, decodes them back, and that the
spec shows the same bytes. Change a vector only together with a protocol version bump.
"""
from firmware_bridge.protocol import (Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop, Fault,
                                      FaultCode, Heartbeat, Hello, JointCommand, MsgType, Reset, State, StatusFlags,
                                      StatusRequest)

# (name, message expression, seq, frame bytes on the wire including the 0x00 delimiter)
VECTORS = [
    ("hello", "Hello(protocol_version=1, nonce=0x12345678)", 0, "03 01 01 01 08 01 78 56 34 12 29 ce 00"),
    ("capabilities", "Capabilities('emu 1.0', ('x', 'y'), [0.0, 0.0], [512.0, 512.0], [0.0, 0.0], ('block_x', 'block_y', 'block_angle', 'coverage'), watchdog_ms=300, state_period_us=20000, flags=CapabilityFlags.SIMULATED, nonce=0x12345678)", 0, "03 01 02 01 0b 01 78 56 34 12 02 2c 01 20 4e 01 0b 02 04 07 65 6d 75 20 31 2e 30 01 01 01 01 01 01 02 44 01 01 01 03 01 78 01 01 01 01 01 01 02 44 01 01 01 2a 01 79 07 62 6c 6f 63 6b 5f 78 07 62 6c 6f 63 6b 5f 79 0b 62 6c 6f 63 6b 5f 61 6e 67 6c 65 08 63 6f 76 65 72 61 67 65 da 7d 00"),
    ("state", "State(timestamp_us=1_000_000, positions=[256.0, 400.0], extras=[256.0, 300.0, 1.5, 0.25], flags=StatusFlags.WATCHDOG_HOLD | StatusFlags.FAULT, ack_seq=41)", 42, "04 01 03 2a 04 40 42 0f 01 01 01 01 02 06 02 29 03 02 04 01 03 80 43 01 03 c8 43 01 03 80 43 01 03 96 43 01 03 c0 3f 01 05 80 3e 79 0f 00"),
    ("joint_command", "JointCommand([100.5, 200.25], valid=True)", 43, "04 01 04 2b 03 01 02 01 03 c9 42 06 40 48 43 45 4c 00"),
    ("joint_command_no_target", "JointCommand([0.0, 0.0], valid=False)", 44, "04 01 04 2c 01 02 02 01 01 01 01 01 01 01 03 1d 69 00"),
    ("heartbeat", "Heartbeat()", 45, "04 01 05 2d 03 3e 69 00"),
    ("estop_engage", "EStop(engage=True)", 46, "04 01 06 2e 04 01 22 11 00"),
    ("estop_release", "EStop(engage=False)", 47, "04 01 06 2f 01 03 33 36 00"),
    ("fault", "Fault(FaultCode.WATCHDOG, 'hold')", 7, "04 01 07 07 09 01 04 68 6f 6c 64 47 3d 00"),
    ("reset_with_state", "Reset(seed=42, initial_state=[100.0, 200.0, 300.0, 400.0, 1.5])", 48, "04 01 08 30 02 2a 01 01 01 01 01 01 02 05 01 03 c8 42 01 03 48 43 01 03 96 43 01 03 c8 43 01 05 c0 3f 5e 26 00"),
    ("reset_seed_only", "Reset(seed=1)", 49, "04 01 08 31 02 01 01 01 01 01 01 01 01 03 ea ba 00"),
    ("ack", "Ack(MsgType.ESTOP, 46, AckResult.OK)", 8, "04 01 09 08 03 06 2e 01 03 3d ea 00"),
    ("status_request", "StatusRequest()", 50, "04 01 0a 32 03 42 56 00"),
    ("device_status", "DeviceStatus(uptime_ms=1000, boots=1, rx_frames_ok=10, commands_applied=5, tx_frames=12)", 9, "04 01 0b 09 03 e8 03 01 02 01 01 01 02 0a 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 02 05 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 02 0c 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 03 95 0d 00"),
    ("heartbeat_seq_wrap", "Heartbeat()", 65535, "07 01 05 ff ff 8b 04 00"),
]


def build(expr: str):
    return eval(expr, {k: v for k, v in globals().items() if not k.startswith("_")})
