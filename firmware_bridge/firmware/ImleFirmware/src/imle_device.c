/* Device core: the behaviour of firmware_bridge/emulator/device.py (DeviceCore, real-time mode) in C99. */
#include "imle_device.h"

#include <string.h>

#include "imle_hal.h"

/* A port may time frame handling (a trace pin, a cycle counter): -DIMLE_PORT_HEADER='"file.h"'
 * defining IMLE_TRACE_BEGIN() and IMLE_TRACE_END(type). */
#ifdef IMLE_PORT_HEADER
#include IMLE_PORT_HEADER
#endif
#ifndef IMLE_TRACE_BEGIN
#define IMLE_TRACE_BEGIN() ((void)0)
#endif
#ifndef IMLE_TRACE_END
#define IMLE_TRACE_END(type) ((void)(type))
#endif

#define SESSION_MIN_ALIVE_MS 1000u
#define DUE(now, t) ((int32_t)((now) - (t)) >= 0)

/* ------------------------------------------------------------------ small text formatting */
typedef struct { char s[120]; uint8_t n; } text_t;

static void t_str(text_t *t, const char *s) {
    while (*s && t->n < sizeof t->s - 1) t->s[t->n++] = *s++;
}
static void t_u32(text_t *t, uint32_t v) {
    char d[11];
    uint8_t i = 0;
    do { d[i++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (i && t->n < sizeof t->s - 1) t->s[t->n++] = d[--i];
}
/* %g-like: integers plainly, up to 3 decimals, exponent form beyond 1e9; no libm, no printf. */
static void t_f32(text_t *t, float v) {
    if (!imle_isfinite(v)) { t_str(t, v != v ? "nan" : (v > 0 ? "inf" : "-inf")); return; }
    if (v < 0) { t_str(t, "-"); v = -v; }
    if (v >= 1e9f) {
        int16_t e = 0;
        while (v >= 10.0f) { v /= 10.0f; e++; }
        t_u32(t, (uint32_t)v);
        t_str(t, "e+");
        t_u32(t, (uint32_t)e);
        return;
    }
    uint32_t whole = (uint32_t)v;
    uint32_t frac = (uint32_t)((v - (float)whole) * 1000.0f + 0.5f);
    if (frac >= 1000u) { whole++; frac -= 1000u; }
    t_u32(t, whole);
    if (frac) {
        char d[4] = {(char)('0' + frac / 100u), (char)('0' + frac / 10u % 10u), (char)('0' + frac % 10u), 0};
        for (int8_t i = 2; i > 0 && d[i] == '0'; i--) d[i] = 0;
        t_str(t, ".");
        t_str(t, d);
    }
}

/* ------------------------------------------------------------------ output */
static void put_frame(imle_device_t *d, uint8_t type, size_t payload_len) {
    size_t n = imle_frame_encode(d->body, type, d->tx_seq, payload_len, d->wire);
    d->tx_seq++;
    if (imle_hal_tx(d->wire, (uint16_t)n)) d->counters[IMLE_C_TX_FRAMES]++;
    else d->counters[IMLE_C_TX_OVERFLOW]++;
}

static uint8_t *payload(imle_device_t *d) { return d->body + IMLE_HEADER_SIZE; }

static size_t put_str(uint8_t *p, const char *s) {
    size_t n = strlen(s);
    if (n > 255) n = 255;
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

static uint64_t timestamp_us(imle_device_t *d) {
    return (((uint64_t)d->clock_high << 32) | d->clock_last) * 1000u;
}

static void send_state(imle_device_t *d) {
    const imle_config_t *c = d->cfg;
    uint8_t *p = payload(d);
    imle_put_u64(p, timestamp_us(d));
    imle_put_u16(p + 8, d->flags);
    imle_put_u16(p + 10, d->ack_seq);
    p[12] = c->joints;
    p[13] = c->extras;
    imle_hal_get_positions(d->scratch);
    for (uint8_t i = 0; i < c->joints; i++) imle_put_f32(p + 14 + 4 * i, d->scratch[i]);
    if (c->extras) {
        imle_hal_get_extras(d->scratch);
        for (uint8_t i = 0; i < c->extras; i++) imle_put_f32(p + 14 + 4 * (c->joints + i), d->scratch[i]);
    }
    put_frame(d, IMLE_STATE, 14u + 4u * ((size_t)c->joints + c->extras));
}

static size_t caps_payload(const imle_config_t *c, uint32_t nonce, uint8_t *p) {
    p[0] = IMLE_PROTOCOL_VERSION;
    imle_put_u32(p + 1, nonce);
    p[5] = c->simulated ? IMLE_CAP_SIMULATED : 0;
    imle_put_u16(p + 6, c->watchdog_ms);
    imle_put_u32(p + 8, c->state_period_us);
    p[12] = c->joints;
    p[13] = c->extras;
    size_t o = 14 + put_str(p + 14, c->firmware_version);
    for (uint8_t i = 0; i < c->joints; i++) {
        imle_put_f32(p + o, c->lower[i]);
        imle_put_f32(p + o + 4, c->upper[i]);
        imle_put_f32(p + o + 8, c->max_velocity[i]);
        imle_put_f32(p + o + 12, c->max_step[i]);
        o += 16 + put_str(p + o + 16, c->joint_names[i]);
    }
    for (uint8_t i = 0; i < c->extras; i++) o += put_str(p + o, c->extra_names[i]);
    return o;
}

static void send_ack(imle_device_t *d, uint8_t type, uint16_t seq, uint8_t result) {
    uint8_t *p = payload(d);
    p[0] = type;
    imle_put_u16(p + 1, seq);
    p[3] = result;
    put_frame(d, IMLE_ACK, 4);
}

/* Send a Fault unless the same code went out very recently; latch sets State.FAULT. */
static uint8_t fault(imle_device_t *d, uint8_t code, const text_t *t, uint8_t latch) {
    uint16_t repeat = code == IMLE_F_NO_SESSION ? 250u : code == IMLE_F_ESTOP ? 500u
                    : (code == IMLE_F_LIMIT || code == IMLE_F_BAD_FRAME) ? 1000u : 0u;
    uint16_t bit = (uint16_t)(1u << code);
    if (repeat && (d->fault_sent_mask & bit) && (uint32_t)(d->now - d->fault_sent[code]) < repeat) return 0;
    d->fault_sent[code] = d->now;
    d->fault_sent_mask |= bit;
    if (latch) d->flags |= IMLE_SF_FAULT;
    uint8_t *p = payload(d);
    p[0] = code;
    p[1] = t->n;
    memcpy(p + 2, t->s, t->n);
    put_frame(d, IMLE_FAULT, 2u + t->n);
    return 1;
}

static uint8_t fault_str(imle_device_t *d, uint8_t code, const char *s, uint8_t latch) {
    text_t t = {{0}, 0};
    t_str(&t, s);
    return fault(d, code, &t, latch);
}

/* target := current position: the plant stops where it is. */
static void hold(imle_device_t *d) {
    imle_hal_get_positions(d->target);
    imle_hal_set_targets(d->target);
}

/* ------------------------------------------------------------------ lifecycle */
static void update_clock(imle_device_t *d) {
    uint32_t ms = imle_hal_millis();
    if (ms < d->clock_last) d->clock_high++;
    d->clock_last = ms;
    d->now = ms;
}

static uint8_t config_ok(const imle_config_t *c) {
    if (!c->joints || c->joints > IMLE_MAX_JOINTS || c->extras > IMLE_MAX_EXTRAS) return 0;
    if (c->state_period_us < 1000u || !c->firmware_version) return 0;
    size_t need = 15 + strlen(c->firmware_version);
    for (uint8_t i = 0; i < c->joints; i++) {
        float lo = c->lower[i], hi = c->upper[i], v = c->max_velocity[i], s = c->max_step[i];
        if (!imle_isfinite(lo) || !imle_isfinite(hi) || !(lo < hi) || !imle_isfinite(v) || !(v >= 0) ||
            !imle_isfinite(s) || !(s >= 0) || strlen(c->joint_names[i]) > 255) return 0;
        need += 17 + strlen(c->joint_names[i]);
    }
    for (uint8_t i = 0; i < c->extras; i++) need += 1 + strlen(c->extra_names[i]);
    return need <= IMLE_TX_PAYLOAD_MAX;
}

uint8_t imle_device_init(imle_device_t *d, const imle_config_t *cfg, imle_retained_t *retained) {
    uint32_t keep[IMLE_COUNTERS];
    uint8_t first = d->cfg == NULL;
    memcpy(keep, d->counters, sizeof keep);
    memset(d, 0, sizeof *d);
    if (!first) memcpy(d->counters, keep, sizeof keep);  /* a reset keeps diagnostics, like the emulator */
    if (!config_ok(cfg)) return 0;
    d->cfg = cfg;
    d->retained = retained;
    if (retained->magic != IMLE_RETAINED_MAGIC) {  /* power-on: nothing retained yet */
        retained->magic = IMLE_RETAINED_MAGIC;
        retained->boots = 0;
        retained->estop = 0;
    }
    retained->boots++;
    d->counters[IMLE_C_BOOTS] = retained->boots;
    d->flags = retained->estop ? IMLE_SF_ESTOP : 0;
    d->period_ms = cfg->state_period_us / 1000u;
    update_clock(d);
    d->clock_high = 0;
    imle_rx_reset(&d->rx);
    hold(d);
    return 1;
}

/* ------------------------------------------------------------------ protocol */
static uint8_t session_alive(imle_device_t *d) {
    uint32_t window = 2u * d->cfg->watchdog_ms;
    if (window < SESSION_MIN_ALIVE_MS) window = SESSION_MIN_ALIVE_MS;
    return d->session && (uint32_t)(d->now - d->last_host_rx) <= window;
}

static void feed_watchdog(imle_device_t *d) {
    d->last_feed = d->now;
    d->watchdog_armed = 1;
}

static void on_hello(imle_device_t *d, const imle_frame_t *f) {
    const uint8_t *p = f->payload;
    uint64_t token = imle_get_u64(p + 5);
    if (p[0] != IMLE_PROTOCOL_VERSION) {
        text_t t = {{0}, 0};
        t_str(&t, "host protocol ");
        t_u32(&t, p[0]);
        t_str(&t, ", device ");
        t_u32(&t, IMLE_PROTOCOL_VERSION);
        fault(d, IMLE_F_VERSION, &t, 0);
        return;
    }
    if (d->has_token && token != d->token) hold(d);  /* a new host never inherits the old target */
    d->session = 1;
    d->has_token = 1;
    d->token = token;
    d->last_host_rx = d->now;
    d->ack_seq = f->seq;
    d->last_cmd_valid = 0;
    d->watchdog_armed = 0;
    size_t n = caps_payload(d->cfg, imle_get_u32(p + 1), payload(d));
    put_frame(d, IMLE_CAPABILITIES, n);
    send_state(d);
    d->next_state = d->now + d->period_ms;
}

/* |a - b| > m, exactly (2Sum error term), whatever the float width of the target. */
static uint8_t step_exceeds(float a, float b, float m) {
    float s = a - b;
    float bb = s - a;
    float err = (a - (s - bb)) + (-b - bb);
    if (s > m || s < -m) return 1;
    if (s == m) return err > 0;
    if (s == -m) return err < 0;
    return 0;
}

static void on_command(imle_device_t *d, const imle_frame_t *f) {
    const imle_config_t *c = d->cfg;
    const uint8_t *p = f->payload;
    uint8_t valid = p[0] & 1u, n = p[1];
    if (d->last_cmd_valid && f->seq == d->last_cmd_seq) {
        d->counters[IMLE_C_COMMANDS_DUPLICATE]++;  /* never act on the same command twice */
        return;
    }
    if (d->retained->estop) {
        d->counters[IMLE_C_COMMANDS_REJECTED]++;
        fault_str(d, IMLE_F_ESTOP, "e-stop engaged: command refused", 1);
        return;
    }
    float *cmd = d->scratch;
    uint8_t finite = 1;
    if (n == c->joints)
        for (uint8_t i = 0; i < n; i++) {
            cmd[i] = imle_get_f32(p + 2 + 4 * i);
            finite &= (uint8_t)imle_isfinite(cmd[i]);
        }
    if (n != c->joints || (valid && !finite)) {
        text_t t = {{0}, 0};
        d->counters[IMLE_C_COMMANDS_REJECTED]++;
        t_str(&t, "JointCommand needs ");
        t_u32(&t, c->joints);
        t_str(&t, " finite targets, got ");
        t_u32(&t, n);
        if (n == c->joints) t_str(&t, " with a non-finite one");
        fault(d, IMLE_F_BAD_COMMAND, &t, 1);
        return;
    }
    if (valid) {
        /* Plausibility: no single command moves the target more than max_step (0 = not checked); the
         * reference is the device's own target (after a hold, e-stop or reset: the held position). */
        for (uint8_t j = 0; j < n; j++) {
            float m = c->max_step[j];
            if (m > 0 && step_exceeds(cmd[j], d->target[j], m)) {
                text_t t = {{0}, 0};
                float step = cmd[j] - d->target[j];
                d->counters[IMLE_C_COMMANDS_REJECTED]++;
                d->counters[IMLE_C_COMMANDS_IMPLAUSIBLE]++;
                t_str(&t, "joint ");
                t_u32(&t, j);
                t_str(&t, " (");
                t_str(&t, c->joint_names[j]);
                t_str(&t, ") target ");
                t_f32(&t, cmd[j]);
                t_str(&t, " is ");
                t_f32(&t, step < 0 ? -step : step);
                t_str(&t, " from the current target ");
                t_f32(&t, d->target[j]);
                t_str(&t, "; max_step ");
                t_f32(&t, m);
                t_str(&t, ": refused");
                fault(d, IMLE_F_IMPLAUSIBLE, &t, 1);
                return;
            }
        }
    }
    feed_watchdog(d);
    d->last_cmd_valid = 1;
    d->last_cmd_seq = f->seq;
    if (valid) {
        int16_t clamped = -1;
        for (uint8_t j = 0; j < n; j++) {
            float v = cmd[j];
            if (v < c->lower[j]) v = c->lower[j];
            if (v > c->upper[j]) v = c->upper[j];
            if (v != cmd[j] && clamped < 0) clamped = j;
            d->target[j] = v;
        }
        imle_hal_set_targets(d->target);
        if (clamped < 0) {
            d->flags &= (uint16_t)~IMLE_SF_LIMIT;
        } else {
            text_t t = {{0}, 0};
            d->flags |= IMLE_SF_LIMIT;
            d->counters[IMLE_C_LIMIT_CLAMPS]++;
            t_str(&t, "joint ");
            t_u32(&t, (uint32_t)clamped);
            t_str(&t, " target ");
            t_f32(&t, cmd[clamped]);
            t_str(&t, " clamped to ");
            t_f32(&t, d->target[clamped]);
            fault(d, IMLE_F_LIMIT, &t, 1);
        }
        d->flags &= (uint16_t)~(IMLE_SF_WATCHDOG_HOLD | IMLE_SF_FAULT);
    }
    d->ack_seq = f->seq;
    d->counters[IMLE_C_COMMANDS_APPLIED]++;
    imle_hal_applied(f->seq, valid, cmd);  /* the command as received, like the emulator's log */
}

static void on_estop(imle_device_t *d, const imle_frame_t *f) {
    if (f->payload[0]) {
        d->retained->estop = 1;
        d->flags |= IMLE_SF_ESTOP;
        hold(d);
    } else {
        d->retained->estop = 0;
        d->flags &= (uint16_t)~IMLE_SF_ESTOP;
    }
    send_ack(d, IMLE_ESTOP, f->seq, IMLE_ACK_OK);
}

static void on_reset(imle_device_t *d, const imle_frame_t *f) {
    const uint8_t *p = f->payload;
    uint8_t k = p[8];
    if (!d->cfg->simulated) {
        send_ack(d, IMLE_RESET, f->seq, IMLE_ACK_REJECTED);
        fault_str(d, IMLE_F_UNSUPPORTED, "Reset: this device drives real hardware", 0);
        return;
    }
    float state[IMLE_MAX_JOINTS];
    uint8_t ok = k <= IMLE_MAX_JOINTS;
    for (uint8_t i = 0; ok && i < k; i++) {
        state[i] = imle_get_f32(p + 9 + 4 * i);
        ok = (uint8_t)imle_isfinite(state[i]);
    }
    if (!ok || !imle_hal_plant_reset(imle_get_u64(p), k, state)) {
        send_ack(d, IMLE_RESET, f->seq, IMLE_ACK_REJECTED);
        fault_str(d, IMLE_F_BAD_COMMAND, "Reset: initial state refused by the plant", 1);
        return;
    }
    d->counters[IMLE_C_PLANT_RESETS]++;
    hold(d);
    d->flags &= (uint16_t)~(IMLE_SF_WATCHDOG_HOLD | IMLE_SF_LIMIT | IMLE_SF_FAULT);
    d->watchdog_armed = 0;
    d->ack_seq = f->seq;
    send_ack(d, IMLE_RESET, f->seq, IMLE_ACK_OK);
    send_state(d);
}

static void on_goodbye(imle_device_t *d, const imle_frame_t *f) {
    if (!d->session || imle_get_u64(f->payload) != d->token) return;  /* stale or foreign */
    d->session = 0;
    d->has_token = 0;
    d->watchdog_armed = 0;
    hold(d);
}

/* One owner per device: another token's Hello while the session is alive is refused, unchanged. */
static uint8_t refuse_hello(imle_device_t *d, const imle_frame_t *f) {
    const uint8_t *p = f->payload;
    if (p[0] != IMLE_PROTOCOL_VERSION || (p[13] & 1u) || !session_alive(d) || imle_get_u64(p + 5) == d->token)
        return 0;
    d->counters[IMLE_C_SESSIONS_REFUSED]++;
    text_t t = {{0}, 0};
    t_str(&t, "device in use by another host's session (last frame ");
    t_u32(&t, d->now - d->last_host_rx);
    t_str(&t, " ms ago); Hello with takeover to end it");
    fault(d, IMLE_F_SESSION_BUSY, &t, 0);
    return 1;
}

static void on_frame(imle_device_t *d, const imle_frame_t *f) {
    uint8_t type = f->type;
    d->counters[IMLE_C_RX_FRAMES_OK]++;
    if (type == IMLE_HELLO && refuse_hello(d, f)) return;  /* not this session's sequence or liveness */
    if (d->rx_expected_valid) {
        uint16_t gap = (uint16_t)(f->seq - d->rx_expected);
        if (gap > 0 && gap < 0x8000u) d->counters[IMLE_C_RX_SEQ_GAPS] += gap;
    }
    d->rx_expected_valid = 1;
    d->rx_expected = (uint16_t)(f->seq + 1u);
    if (type == IMLE_HELLO) { on_hello(d, f); return; }
    if (type != IMLE_JOINT_COMMAND && type != IMLE_HEARTBEAT && type != IMLE_ESTOP && type != IMLE_RESET &&
        type != IMLE_STATUS_REQUEST && type != IMLE_GOODBYE)
        return;  /* a device -> host type arriving here */
    if (d->session) d->last_host_rx = d->now;  /* frames carry no token: on one wire, they are the owner's */
    if (type == IMLE_GOODBYE) { on_goodbye(d, f); return; }
    if (type == IMLE_ESTOP) { on_estop(d, f); return; }  /* honoured with or without a session */
    if (!d->session) {
        if (type == IMLE_JOINT_COMMAND) d->counters[IMLE_C_COMMANDS_REJECTED]++;
        fault_str(d, IMLE_F_NO_SESSION, "no session: send Hello", 0);
        return;
    }
    switch (type) {
    case IMLE_JOINT_COMMAND: on_command(d, f); break;
    case IMLE_HEARTBEAT: d->counters[IMLE_C_HEARTBEATS]++; feed_watchdog(d); break;
    case IMLE_RESET: on_reset(d, f); break;
    default:  /* StatusRequest */
        imle_device_status_payload(d, payload(d));
        put_frame(d, IMLE_DEVICE_STATUS, 80);
        break;
    }
}

void imle_device_receive(imle_device_t *d, const uint8_t *data, uint16_t n) {
    imle_frame_t f;
    update_clock(d);
    for (uint16_t i = 0; i < n; i++) {
        IMLE_TRACE_BEGIN();
        int r = imle_rx_byte(&d->rx, data[i], &f);
        if (r == IMLE_DROP_NONE) on_frame(d, &f);
        else if (r > 0) {
            d->bad_frames++;
            d->counters[r == IMLE_DROP_COBS ? IMLE_C_RX_BAD_COBS : r == IMLE_DROP_CRC ? IMLE_C_RX_BAD_CRC
                                                                                      : IMLE_C_RX_BAD_OTHER]++;
        }
        IMLE_TRACE_END(r == IMLE_DROP_NONE ? f.type : r < 0 ? 0 : 0xFF);
    }
    if (d->session && d->bad_frames != d->errors_seen) {
        text_t t = {{0}, 0};
        t_str(&t, "dropped ");
        t_u32(&t, d->bad_frames - d->errors_seen);
        t_str(&t, " corrupt frame(s)");
        if (fault(d, IMLE_F_BAD_FRAME, &t, 0)) d->errors_seen = d->bad_frames;
    }
}

void imle_device_tick(imle_device_t *d) {
    update_clock(d);
    uint16_t wd = d->cfg->watchdog_ms;
    if (d->watchdog_armed && wd && d->session && (uint32_t)(d->now - d->last_feed) > wd) {
        text_t t = {{0}, 0};
        d->watchdog_armed = 0;  /* one trip (and one Fault) per silence */
        hold(d);
        d->flags |= IMLE_SF_WATCHDOG_HOLD;
        d->counters[IMLE_C_WATCHDOG_TRIPS]++;
        t_str(&t, "no command for ");
        t_u32(&t, d->now - d->last_feed);
        t_str(&t, " ms (watchdog ");
        t_u32(&t, wd);
        t_str(&t, " ms): holding position");
        fault(d, IMLE_F_WATCHDOG, &t, 1);
        send_state(d);  /* report the hold at once */
    }
    if (d->session && DUE(d->now, d->next_state)) {
        send_state(d);
        d->next_state += d->period_ms;
        if (!DUE(d->next_state, d->now)) d->next_state = d->now + d->period_ms;
    }
}

void imle_device_status_payload(imle_device_t *d, uint8_t *out) {
    d->counters[IMLE_C_UPTIME_MS] = d->now;
    d->counters[IMLE_C_BOOTS] = d->retained->boots;
    for (uint8_t i = 0; i < IMLE_COUNTERS; i++) imle_put_u32(out + 4 * i, d->counters[i]);
}
