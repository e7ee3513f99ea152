"""Byte-level test vectors, generated once from the codec and copied into docs/protocol.md.

The tests assert the codec still produces exactly these bytes, decodes them back, and that the
spec shows the same bytes. Change a vector only together with a protocol version bump (these are
protocol version 2: CRC-32). The C firmware's tests are meant to share this list.
"""
from firmware_bridge.protocol import (Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop, Fault,
                                      FaultCode, Goodbye, Heartbeat, Hello, JointCommand, MsgType, Reset, State,
                                      StatusFlags, StatusRequest)

# (name, message expression, seq, frame bytes on the wire including the 0x00 delimiter)
VECTORS = [
    ("hello",
     "Hello(protocol_version=2, nonce=0x12345678, session_token=0x0123456789ABCDEF)",
     0, "03 02 01 01 0e 02 78 56 34 12 ef cd ab 89 67 45 23 01 05 9c 86 a9 50 00"),
    ("hello_takeover",
     "Hello(protocol_version=2, nonce=0x9ABCDEF0, session_token=0xFEDCBA9876543210, takeover=True)",
     1, "04 02 01 01 13 02 f0 de bc 9a 10 32 54 76 98 ba dc fe 01 63 b6 bf 0d 00"),
    ("capabilities",
     "Capabilities('emu 1.0', ('x', 'y'), [0.0, 0.0], [512.0, 512.0], [2000.0, 2000.0], ('block_x', 'block_y', "
     "'block_angle', 'coverage'), watchdog_ms=300, state_period_us=20000, flags=CapabilityFlags.SIMULATED, "
     "nonce=0x12345678, max_step=[200.0, 200.0])",
     0, "03 02 02 01 0b 02 78 56 34 12 02 2c 01 20 4e 01 0b 02 04 07 65 6d 75 20 31 2e 30 01 01 01 01 01 "
        "01 02 44 01 03 fa 44 01 05 48 43 01 78 01 01 01 01 01 01 02 44 01 03 fa 44 01 2e 48 43 01 79 07 "
        "62 6c 6f 63 6b 5f 78 07 62 6c 6f 63 6b 5f 79 0b 62 6c 6f 63 6b 5f 61 6e 67 6c 65 08 63 6f 76 65 "
        "72 61 67 65 89 a1 dc fb 00"),
    ("state",
     "State(timestamp_us=1_000_000, positions=[256.0, 400.0], extras=[256.0, 300.0, 1.5, 0.25], "
     "flags=StatusFlags.WATCHDOG_HOLD | StatusFlags.FAULT, ack_seq=41)",
     42, "04 02 03 2a 04 40 42 0f 01 01 01 01 02 06 02 29 03 02 04 01 03 80 43 01 03 c8 43 01 03 80 43 01 "
         "03 96 43 01 03 c0 3f 01 07 80 3e ea 2f c5 bd 00"),
    ("joint_command",
     "JointCommand([100.5, 200.25], valid=True)",
     43, "04 02 04 2b 03 01 02 01 03 c9 42 04 40 48 43 04 f7 c0 eb 00"),
    ("joint_command_no_target",
     "JointCommand([0.0, 0.0], valid=False)",
     44, "04 02 04 2c 01 02 02 01 01 01 01 01 01 01 05 03 69 a1 c3 00"),
    ("heartbeat", "Heartbeat()", 45, "04 02 05 2d 05 93 8f ac ad 00"),
    ("estop_engage", "EStop(engage=True)", 46, "04 02 06 2e 06 01 dd a0 5d dc 00"),
    ("estop_release", "EStop(engage=False)", 47, "04 02 06 2f 01 05 7c fa 98 aa 00"),
    ("fault", "Fault(FaultCode.WATCHDOG, 'hold')", 7, "04 02 07 07 0b 01 04 68 6f 6c 64 e5 7b 89 89 00"),
    ("fault_implausible",
     "Fault(FaultCode.IMPLAUSIBLE, 'step')",
     10, "04 02 07 0a 0b 0b 04 73 74 65 70 69 be 64 ef 00"),
    ("fault_session_busy",
     "Fault(FaultCode.SESSION_BUSY, 'busy')",
     11, "04 02 07 0b 0b 0a 04 62 75 73 79 ec 3a b1 64 00"),
    ("reset_with_state",
     "Reset(seed=42, initial_state=[100.0, 200.0, 300.0, 400.0, 1.5])",
     48, "04 02 08 30 02 2a 01 01 01 01 01 01 02 05 01 03 c8 42 01 03 48 43 01 03 96 43 01 03 c8 43 01 07 "
         "c0 3f e9 08 db 62 00"),
    ("reset_seed_only", "Reset(seed=1)", 49, "04 02 08 31 02 01 01 01 01 01 01 01 01 05 a8 05 bb 97 00"),
    ("ack", "Ack(MsgType.ESTOP, 46, AckResult.OK)", 8, "04 02 09 08 03 06 2e 01 05 9c 2b 74 49 00"),
    ("status_request", "StatusRequest()", 50, "04 02 0a 32 05 30 c6 aa 6b 00"),
    ("device_status",
     "DeviceStatus(uptime_ms=1000, boots=1, rx_frames_ok=10, commands_applied=5, tx_frames=12, "
     "commands_implausible=2, sessions_refused=1)",
     9, "04 02 0b 09 03 e8 03 01 02 01 01 01 02 0a 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 "
        "02 05 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 01 02 0c 01 01 01 01 01 01 "
        "01 01 01 01 01 01 01 01 01 01 01 01 02 02 01 01 02 01 01 01 05 4b 1f 69 f3 00"),
    ("goodbye",
     "Goodbye(session_token=0x0123456789ABCDEF)",
     51, "04 02 0c 33 0d ef cd ab 89 67 45 23 01 22 ce 29 3f 00"),
    ("heartbeat_seq_wrap", "Heartbeat()", 65535, "09 02 05 ff ff 83 c7 a0 33 00"),
]


# The names the message expressions above may use (imported for build's eval only).
_SCOPE = {cls.__name__: cls for cls in (Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop, Fault,
                                        FaultCode, Goodbye, Heartbeat, Hello, JointCommand, MsgType, Reset, State,
                                        StatusFlags, StatusRequest)}


def build(expr: str):
    return eval(expr, dict(_SCOPE))
