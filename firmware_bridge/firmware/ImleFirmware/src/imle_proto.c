/* Frame codec, protocol version 2 (docs/protocol.md sections 1 and 3). */
#include "imle_proto.h"

#include <string.h>

const char *const imle_drop_names[IMLE_DROP_REASONS] = {
    "ok", "oversize", "cobs", "short", "crc", "version", "type", "length", "payload"};

/* CRC-32/ISO-HDLC with a 16-entry nibble table: 64 bytes of constants, ~2x the bitwise speed. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t imle_crc32(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return crc ^ 0xFFFFFFFFu;
}

uint16_t imle_crc16_ccitt_false(const uint8_t *p, size_t n) {
    uint16_t crc = 0xFFFFu;
    while (n--) {
        crc ^= (uint16_t)((uint16_t)*p++ << 8);
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

int32_t imle_cobs_decode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t code = in[i];
        if (code == 0 || i + code > n) return -1;
        for (size_t j = 1; j < code; j++) {
            if (in[i + j] == 0) return -1;
            out[o++] = in[i + j];  /* o <= i + j - 1: never overtakes the reader (in-place safe) */
        }
        i += code;
        if (code != 0xFFu && i < n) out[o++] = 0;
    }
    return (int32_t)o;
}

size_t imle_cobs_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t code_at = 0, o = 1, i = 0;
    uint8_t code = 1;
    while (i < n) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFFu) {
                out[code_at] = code;
                if (i + 1 == n) return o;  /* a full final group needs no trailing 0x01 */
                code_at = o++;
                code = 1;
            }
        }
        i++;
    }
    out[code_at] = code;
    return o;
}

uint16_t imle_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
uint32_t imle_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
uint64_t imle_get_u64(const uint8_t *p) { return (uint64_t)imle_get_u32(p) | ((uint64_t)imle_get_u32(p + 4) << 32); }
float imle_get_f32(const uint8_t *p) {
    uint32_t u = imle_get_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
void imle_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
void imle_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
void imle_put_u64(uint8_t *p, uint64_t v) { imle_put_u32(p, (uint32_t)v); imle_put_u32(p + 4, (uint32_t)(v >> 32)); }
void imle_put_f32(uint8_t *p, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    imle_put_u32(p, u);
}
int imle_isfinite(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return ((u >> 23) & 0xFFu) != 0xFFu;
}

/* Strict UTF-8 (Unicode table 3-7, as Python's decoder): no overlongs, surrogates or > U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t extra;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) extra = 1;
        else if (c == 0xE0) { extra = 2; lo = 0xA0; }
        else if (c == 0xED) { extra = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) extra = 2;
        else if (c == 0xF0) { extra = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) extra = 3;
        else if (c == 0xF4) { extra = 3; hi = 0x8F; }
        else return 0;
        for (size_t j = 1; j <= extra; j++) {
            if (i + j >= n) return 0;
            uint8_t b = s[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        }
        i += extra + 1;
    }
    return 1;
}

/* Sequential payload reader with Python's error order: a missing field is a length error where it
 * is read, bad text a payload error where it is read. */
typedef struct { const uint8_t *p; size_t n, pos; uint8_t err; } reader_t;

static const uint8_t *take(reader_t *r, size_t k) {
    if (r->err) return NULL;
    if (r->n - r->pos < k) { r->err = IMLE_DROP_LENGTH; return NULL; }
    const uint8_t *at = r->p + r->pos;
    r->pos += k;
    return at;
}
static void text(reader_t *r) {
    const uint8_t *len = take(r, 1);
    if (!len) return;
    const uint8_t *s = take(r, *len);
    if (s && !utf8_valid(s, *len)) r->err = IMLE_DROP_PAYLOAD;
}
static uint8_t end(reader_t *r) {
    if (!r->err && r->pos != r->n) r->err = IMLE_DROP_LENGTH;
    return r->err;
}

static uint8_t check_payload(uint8_t type, const uint8_t *p, size_t n) {
    reader_t r = {p, n, 0, 0};
    const uint8_t *f;
    switch (type) {
    case IMLE_HELLO:
        if (!(f = take(&r, 14))) return r.err;
        if (end(&r)) return r.err;
        return (f[13] & ~1u) ? IMLE_DROP_PAYLOAD : IMLE_DROP_NONE;
    case IMLE_CAPABILITIES: {
        if (!(f = take(&r, 14))) return r.err;
        uint8_t joints = f[12], extras = f[13];
        text(&r);
        for (uint16_t i = 0; i < joints && !r.err; i++) { take(&r, 16); text(&r); }
        for (uint16_t i = 0; i < extras && !r.err; i++) text(&r);
        return end(&r);
    }
    case IMLE_STATE:
        if (!(f = take(&r, 14))) return r.err;
        return n == 14u + 4u * ((size_t)f[12] + f[13]) ? IMLE_DROP_NONE : IMLE_DROP_LENGTH;
    case IMLE_JOINT_COMMAND:
        if (!(f = take(&r, 2))) return r.err;
        if (f[0] & ~1u) return IMLE_DROP_PAYLOAD;
        take(&r, 4u * (size_t)f[1]);
        return end(&r);
    case IMLE_HEARTBEAT:
    case IMLE_STATUS_REQUEST:
        return end(&r);
    case IMLE_ESTOP:
        if (!(f = take(&r, 1))) return r.err;
        if (end(&r)) return r.err;
        return f[0] > 1 ? IMLE_DROP_PAYLOAD : IMLE_DROP_NONE;
    case IMLE_FAULT:
        take(&r, 1);
        text(&r);
        return end(&r);
    case IMLE_RESET:
        if (!(f = take(&r, 9))) return r.err;
        take(&r, 4u * (size_t)f[8]);
        return end(&r);
    case IMLE_ACK:
        take(&r, 4);
        return end(&r);
    case IMLE_DEVICE_STATUS:
        take(&r, 80);
        return end(&r);
    case IMLE_GOODBYE:
        take(&r, 8);
        return end(&r);
    default:
        return IMLE_DROP_TYPE;
    }
}

uint8_t imle_check_body(const uint8_t *body, size_t n, imle_frame_t *out) {
    if (n < IMLE_HEADER_SIZE + IMLE_CRC_SIZE) return IMLE_DROP_SHORT;
    if (n > IMLE_MAX_FRAME) return IMLE_DROP_OVERSIZE;
    size_t m = n - IMLE_CRC_SIZE;
    if (imle_crc32(body, m) != imle_get_u32(body + m)) {
        /* Still dropped; counted as "version" so a host can say the other side speaks version 1. */
        if (body[0] == 1 && imle_crc16_ccitt_false(body, n - 2) == imle_get_u16(body + n - 2))
            return IMLE_DROP_VERSION;
        return IMLE_DROP_CRC;
    }
    if (body[0] != IMLE_PROTOCOL_VERSION) return IMLE_DROP_VERSION;
    uint8_t why = check_payload(body[1], body + IMLE_HEADER_SIZE, m - IMLE_HEADER_SIZE);
    if (why) return why;
    out->type = body[1];
    out->seq = imle_get_u16(body + 2);
    out->payload = body + IMLE_HEADER_SIZE;
    out->length = (uint16_t)(m - IMLE_HEADER_SIZE);
    return IMLE_DROP_NONE;
}

void imle_rx_reset(imle_rx_t *rx) {
    rx->len = 0;
    rx->discarding = 0;
}

int imle_rx_byte(imle_rx_t *rx, uint8_t byte, imle_frame_t *out) {
    if (byte != 0) {
        if (rx->discarding) return -1;
        if (rx->len >= IMLE_MAX_ENCODED) {  /* no delimiter within 515 bytes: drop up to the next 0x00 */
            rx->len = 0;
            rx->discarding = 1;
            return IMLE_DROP_OVERSIZE;
        }
        rx->buf[rx->len++] = byte;
        return -1;
    }
    if (rx->discarding) {
        rx->discarding = 0;
        return -1;
    }
    if (rx->len == 0) return -1;  /* idle fill */
    int32_t n = imle_cobs_decode(rx->buf, rx->len, rx->buf);
    rx->len = 0;
    if (n < 0) return IMLE_DROP_COBS;
    return imle_check_body(rx->buf, (size_t)n, out);
}

size_t imle_frame_encode(uint8_t *body, uint8_t type, uint16_t seq, size_t payload_len, uint8_t *wire) {
    body[0] = IMLE_PROTOCOL_VERSION;
    body[1] = type;
    imle_put_u16(body + 2, seq);
    size_t m = IMLE_HEADER_SIZE + payload_len;
    imle_put_u32(body + m, imle_crc32(body, m));
    size_t w = imle_cobs_encode(body, m + IMLE_CRC_SIZE, wire);
    wire[w++] = 0;
    return w;
}
