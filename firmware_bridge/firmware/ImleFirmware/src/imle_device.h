/* The device side of the protocol (docs/protocol.md sections 2, 4, 5): session with token and
 * takeover, watchdog hold, e-stop latch, joint-limit clamping, max_step plausibility refusal, counters.
 * Real-time devices only (no lock-step). All state lives in one imle_device_t; no allocation.
 */
#ifndef IMLE_DEVICE_H
#define IMLE_DEVICE_H

#include "imle_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef IMLE_MAX_JOINTS
#define IMLE_MAX_JOINTS 8
#endif
#ifndef IMLE_MAX_EXTRAS
#define IMLE_MAX_EXTRAS 8
#endif
/* Largest outgoing payload. Capabilities is the largest message: 14 + firmware string + per joint
 * 17 + name, + per extra 1 + name. imle_device_init() refuses a config that does not fit. */
#ifndef IMLE_TX_PAYLOAD_MAX
#define IMLE_TX_PAYLOAD_MAX 256
#endif
#define IMLE_TX_WIRE_MAX (IMLE_TX_PAYLOAD_MAX + 9 + (IMLE_TX_PAYLOAD_MAX + 8) / 254)

typedef struct {
    const char *firmware_version;
    uint8_t joints;                          /* n, 1..IMLE_MAX_JOINTS */
    uint8_t extras;                          /* k, 0..IMLE_MAX_EXTRAS */
    const char *const *joint_names;
    const char *const *extra_names;          /* may be NULL when extras = 0 */
    const float *lower, *upper;              /* position limits: the robot's own */
    const float *max_velocity;               /* units/s, 0 = not limited by the device */
    const float *max_step;                   /* largest target change per command, 0 = not checked */
    uint16_t watchdog_ms;                    /* 0 = no watchdog */
    uint32_t state_period_us;                /* State streaming period (>= 1000) */
    uint8_t simulated;                       /* accepts Reset (imle_hal_plant_reset) */
} imle_config_t;

/* DeviceStatus counters, in wire order (section 3). */
enum imle_counter {
    IMLE_C_UPTIME_MS, IMLE_C_BOOTS, IMLE_C_RX_FRAMES_OK, IMLE_C_RX_BAD_COBS, IMLE_C_RX_BAD_CRC, IMLE_C_RX_BAD_OTHER,
    IMLE_C_RX_SEQ_GAPS, IMLE_C_COMMANDS_APPLIED, IMLE_C_COMMANDS_REJECTED, IMLE_C_COMMANDS_DUPLICATE,
    IMLE_C_HEARTBEATS, IMLE_C_WATCHDOG_TRIPS, IMLE_C_LIMIT_CLAMPS, IMLE_C_TX_FRAMES, IMLE_C_TX_DROPPED,
    IMLE_C_TX_CORRUPTED, IMLE_C_TX_OVERFLOW, IMLE_C_PLANT_RESETS, IMLE_C_COMMANDS_IMPLAUSIBLE,
    IMLE_C_SESSIONS_REFUSED, IMLE_COUNTERS
};

/* What survives a firmware reset (a hardware latch or memory the reset does not clear: .noinit). */
typedef struct {
    uint32_t magic;
    uint32_t boots;
    uint8_t estop;
} imle_retained_t;
#define IMLE_RETAINED_MAGIC 0x1E57095Au

typedef struct {
    uint32_t counters[IMLE_COUNTERS];  /* first member: a simulator reads them at the struct's address */
    const imle_config_t *cfg;
    imle_retained_t *retained;
    imle_rx_t rx;
    uint8_t session, has_token, rx_expected_valid, last_cmd_valid, watchdog_armed;
    uint64_t token;
    uint16_t tx_seq, rx_expected, ack_seq, last_cmd_seq, flags;
    uint32_t now, last_host_rx, last_feed, next_state, period_ms, errors_seen, bad_frames;
    uint32_t clock_high, clock_last;   /* 64-bit millisecond clock from the HAL's 32-bit one */
    uint32_t fault_sent[IMLE_FAULT_CODES];
    uint16_t fault_sent_mask;
    float target[IMLE_MAX_JOINTS];
    float scratch[IMLE_MAX_JOINTS > IMLE_MAX_EXTRAS ? IMLE_MAX_JOINTS : IMLE_MAX_EXTRAS];
    uint8_t body[IMLE_HEADER_SIZE + IMLE_TX_PAYLOAD_MAX + IMLE_CRC_SIZE];
    uint8_t wire[IMLE_TX_WIRE_MAX];
} imle_device_t;

/* Power-on or firmware reset: no session, sequence numbers from 0, holding position; keeps the
 * e-stop latch in *retained (initialised when its magic is wrong). Returns 0 if the config is invalid
 * (joint counts, limits, or a Capabilities that does not fit IMLE_TX_PAYLOAD_MAX). */
uint8_t imle_device_init(imle_device_t *dev, const imle_config_t *cfg, imle_retained_t *retained);
/* Bytes from the host. */
void imle_device_receive(imle_device_t *dev, const uint8_t *data, uint16_t n);
/* Call often (every millisecond or so): watchdog and State streaming. */
void imle_device_tick(imle_device_t *dev);
/* Encode the DeviceStatus payload (80 bytes) into out. */
void imle_device_status_payload(imle_device_t *dev, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
