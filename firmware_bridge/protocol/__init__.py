"""Frame codec and message types of the host <-> microcontroller serial protocol (docs/protocol.md)."""
from .cobs import cobs_decode, cobs_encode
from .crc import crc16_ccitt_false, crc32
from .errors import REASONS, ProtocolError
from .framing import (CRC16_V1, CRC32, DELIMITER, HEADER_SIZE, MAX_ENCODED, MAX_FRAME, MAX_PAYLOAD, Frame,
                      FrameCheck, FrameDecoder, decode_frame, encode_frame, encode_raw_frame)
from .messages import (DEVICE_STATUS_FIELDS, MESSAGE_CLASSES, PROTOCOL_VERSION, Ack, AckResult, Capabilities,
                       CapabilityFlags, DeviceStatus, EStop, Fault, FaultCode, Goodbye, Heartbeat, Hello, HelloFlags,
                       JointCommand, Message, MsgType, Reset, State, StatusFlags, StatusRequest)

__all__ = [
    "cobs_decode", "cobs_encode", "crc16_ccitt_false", "crc32", "REASONS", "ProtocolError", "CRC16_V1", "CRC32",
    "DELIMITER", "HEADER_SIZE", "MAX_ENCODED", "MAX_FRAME", "MAX_PAYLOAD", "Frame", "FrameCheck", "FrameDecoder",
    "decode_frame", "encode_frame", "encode_raw_frame", "DEVICE_STATUS_FIELDS", "MESSAGE_CLASSES", "PROTOCOL_VERSION",
    "Ack", "AckResult", "Capabilities", "CapabilityFlags", "DeviceStatus", "EStop", "Fault", "FaultCode", "Goodbye",
    "Heartbeat", "Hello", "HelloFlags", "JointCommand", "Message", "MsgType", "Reset", "State", "StatusFlags",
    "StatusRequest",
]
