/* Frame codec of the host <-> microcontroller protocol, version 2 (docs/protocol.md).
 *
 * Portable C99: no allocation, no libc beyond <stdint.h>/<stddef.h>/<string.h>, no floating-point
 * library calls. Byte order is handled with shifts, so the code is endian-independent.
 */
#ifndef IMLE_PROTO_H
#define IMLE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMLE_PROTOCOL_VERSION 2u
#define IMLE_HEADER_SIZE 4u
#define IMLE_CRC_SIZE 4u
#define IMLE_MAX_FRAME 512u                                         /* header + payload + CRC */
#define IMLE_MAX_PAYLOAD (IMLE_MAX_FRAME - IMLE_HEADER_SIZE - IMLE_CRC_SIZE)
#define IMLE_MAX_ENCODED (IMLE_MAX_FRAME + 1u + IMLE_MAX_FRAME / 254u) /* 515: COBS worst case */

enum imle_msg_type {
    IMLE_HELLO = 0x01, IMLE_CAPABILITIES = 0x02, IMLE_STATE = 0x03, IMLE_JOINT_COMMAND = 0x04,
    IMLE_HEARTBEAT = 0x05, IMLE_ESTOP = 0x06, IMLE_FAULT = 0x07, IMLE_RESET = 0x08, IMLE_ACK = 0x09,
    IMLE_STATUS_REQUEST = 0x0A, IMLE_DEVICE_STATUS = 0x0B, IMLE_GOODBYE = 0x0C
};

enum imle_fault_code {
    IMLE_F_WATCHDOG = 1, IMLE_F_LIMIT = 2, IMLE_F_BAD_FRAME = 3, IMLE_F_ESTOP = 4, IMLE_F_NO_SESSION = 5,
    IMLE_F_BAD_COMMAND = 6, IMLE_F_VERSION = 7, IMLE_F_UNSUPPORTED = 8, IMLE_F_INTERNAL = 9,
    IMLE_F_SESSION_BUSY = 10, IMLE_F_IMPLAUSIBLE = 11
};
#define IMLE_FAULT_CODES 12u

enum imle_state_flags { IMLE_SF_ESTOP = 0x1, IMLE_SF_WATCHDOG_HOLD = 0x2, IMLE_SF_FAULT = 0x4, IMLE_SF_LIMIT = 0x8 };
enum imle_cap_flags { IMLE_CAP_LOCKSTEP = 0x1, IMLE_CAP_SIMULATED = 0x2 };
enum imle_ack_result { IMLE_ACK_OK = 0, IMLE_ACK_REJECTED = 1 };

/* Why a frame was dropped: the order is the validation order of docs/protocol.md section 1. */
enum imle_drop {
    IMLE_DROP_NONE = 0, IMLE_DROP_OVERSIZE, IMLE_DROP_COBS, IMLE_DROP_SHORT, IMLE_DROP_CRC, IMLE_DROP_VERSION,
    IMLE_DROP_TYPE, IMLE_DROP_LENGTH, IMLE_DROP_PAYLOAD
};
#define IMLE_DROP_REASONS 9u
extern const char *const imle_drop_names[IMLE_DROP_REASONS];

uint32_t imle_crc32(const uint8_t *p, size_t n);
uint16_t imle_crc16_ccitt_false(const uint8_t *p, size_t n);  /* protocol v1, only to name an old device */

/* COBS-decode in[0..n) into out (out may equal in: decoding in place is safe). Returns the decoded
 * length, or -1 if malformed. out must hold n bytes. */
int32_t imle_cobs_decode(const uint8_t *in, size_t n, uint8_t *out);
/* COBS-encode in[0..n) into out (distinct buffers; out holds n + 1 + n / 254 bytes). No delimiter. */
size_t imle_cobs_encode(const uint8_t *in, size_t n, uint8_t *out);

/* Little-endian field access. */
uint16_t imle_get_u16(const uint8_t *p);
uint32_t imle_get_u32(const uint8_t *p);
uint64_t imle_get_u64(const uint8_t *p);
float imle_get_f32(const uint8_t *p);
void imle_put_u16(uint8_t *p, uint16_t v);
void imle_put_u32(uint8_t *p, uint32_t v);
void imle_put_u64(uint8_t *p, uint64_t v);
void imle_put_f32(uint8_t *p, float v);
int imle_isfinite(float v);  /* by bit pattern: no <math.h> */

/* A validated frame: points into the receiver's buffer, valid until the next byte is fed. */
typedef struct {
    uint8_t type;
    uint16_t seq;
    const uint8_t *payload;
    uint16_t length;
} imle_frame_t;

/* Validate a decoded body (header + payload + CRC): CRC, version, type, exact length and field checks
 * for every message type. Returns IMLE_DROP_NONE and fills *out, or the drop reason. */
uint8_t imle_check_body(const uint8_t *body, size_t n, imle_frame_t *out);

/* Streaming receiver: bounded buffer, garbage never grows memory. */
typedef struct {
    uint8_t buf[IMLE_MAX_ENCODED];
    uint16_t len;
    uint8_t discarding;
} imle_rx_t;

void imle_rx_reset(imle_rx_t *rx);
/* Feed one byte. Returns -1 while no frame ended, IMLE_DROP_NONE (0) with *out filled when a valid
 * frame ended, or a drop reason (> 0) when a frame was rejected. Empty frames are idle fill (-1). */
int imle_rx_byte(imle_rx_t *rx, uint8_t byte, imle_frame_t *out);

/* Frame a payload already written at body + IMLE_HEADER_SIZE: writes the header and CRC into body,
 * COBS-encodes it into wire with the 0x00 delimiter. wire holds payload_len + 9 + (payload_len+8)/254
 * bytes. Returns the wire length. */
size_t imle_frame_encode(uint8_t *body, uint8_t type, uint16_t seq, size_t payload_len, uint8_t *wire);

#ifdef __cplusplus
}
#endif
#endif
