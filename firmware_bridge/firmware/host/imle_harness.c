/* Test harness for the C core, driven line by line from stdin (tests/firmware_bridge/test_firmware_codec.py).
 *
 * Codec:  crc HEX | encode TYPE SEQ PAYLOADHEX | decode WIREHEX (streaming receiver; one line per frame end)
 * Device (fake clock and plant; the configuration of the "capabilities" test vector):
 *         clock MS | rx WIREHEX | tick | reboot | status | positions X Y
 * Each command prints its results ("tx HEX" per frame the device sent, "ok ...", "drop REASON") then ".".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imle_device.h"
#include "imle_hal.h"

static uint32_t fake_ms;
static float plant[2] = {256.0f, 256.0f};
static const float extras[4] = {256.0f, 300.0f, 1.5f, 0.25f};

uint32_t imle_hal_millis(void) { return fake_ms; }
uint8_t imle_hal_tx(const uint8_t *frame, uint16_t len) {
    printf("tx ");
    for (uint16_t i = 0; i < len; i++) printf("%02x", frame[i]);
    printf("\n");
    return 1;
}
void imle_hal_set_targets(const float *t) { plant[0] = t[0]; plant[1] = t[1]; }  /* an ideal plant */
void imle_hal_get_positions(float *p) { p[0] = plant[0]; p[1] = plant[1]; }
void imle_hal_get_extras(float *e) { memcpy(e, extras, sizeof extras); }
uint8_t imle_hal_plant_reset(uint64_t seed, uint8_t k, const float *state) {
    (void)seed;
    if (k == 0) { plant[0] = plant[1] = 256.0f; return 1; }
    if (k != 2 || state[0] < 0 || state[0] > 512 || state[1] < 0 || state[1] > 512) return 0;
    plant[0] = state[0];
    plant[1] = state[1];
    return 1;
}
void imle_hal_applied(uint16_t seq, uint8_t valid, const float *t) {
    printf("applied %u %u %.9g %.9g\n", seq, valid, (double)t[0], (double)t[1]);
}

static const char *const joint_names[2] = {"x", "y"};
static const char *const extra_names[4] = {"block_x", "block_y", "block_angle", "coverage"};
static const float lower[2] = {0, 0}, upper[2] = {512, 512}, vmax[2] = {2000, 2000}, steps[2] = {200, 200};
static const imle_config_t config = {"emu 1.0", 2, 4, joint_names, extra_names, lower, upper, vmax, steps,
                                     300, 20000, 1};
static imle_device_t dev;
static imle_retained_t retained;

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void print_hex(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

int main(void) {
    static char line[1 << 16];
    static uint8_t buf[1 << 15], body[IMLE_MAX_FRAME + 8], wire[IMLE_MAX_ENCODED + 8];
    static imle_rx_t rx;
    if (!imle_device_init(&dev, &config, &retained)) { fprintf(stderr, "bad config\n"); return 2; }
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = {0}, arg[sizeof line];
        arg[0] = 0;
        sscanf(line, "%15s %[^\n]", cmd, arg);
        if (!strcmp(cmd, "crc")) {
            size_t n = unhex(arg, buf, sizeof buf);
            printf("ok %08lx\n", (unsigned long)imle_crc32(buf, n));
        } else if (!strcmp(cmd, "encode")) {
            unsigned type, seq;
            char hex[sizeof line] = {0};
            if (sscanf(arg, "%u %u %s", &type, &seq, hex) < 2) { printf("error\n.\n"); continue; }
            size_t n = unhex(hex, body + IMLE_HEADER_SIZE, IMLE_MAX_PAYLOAD);
            size_t w = imle_frame_encode(body, (uint8_t)type, (uint16_t)seq, n, wire);
            printf("ok ");
            print_hex(wire, w);
            printf("\n");
        } else if (!strcmp(cmd, "decode")) {
            size_t n = unhex(arg, buf, sizeof buf);
            imle_rx_reset(&rx);
            for (size_t i = 0; i < n; i++) {
                imle_frame_t f;
                int r = imle_rx_byte(&rx, buf[i], &f);
                if (r == IMLE_DROP_NONE) {
                    printf("ok %u %u ", f.type, f.seq);
                    print_hex(f.payload, f.length);
                    printf("\n");
                } else if (r > 0) {
                    printf("drop %s\n", imle_drop_names[r]);
                }
            }
        } else if (!strcmp(cmd, "clock")) {
            fake_ms = (uint32_t)strtoul(arg, NULL, 10);
        } else if (!strcmp(cmd, "rx")) {
            size_t n = unhex(arg, buf, sizeof buf);
            imle_device_receive(&dev, buf, (uint16_t)n);
        } else if (!strcmp(cmd, "tick")) {
            imle_device_tick(&dev);
        } else if (!strcmp(cmd, "reboot")) {
            if (!imle_device_init(&dev, &config, &retained)) printf("error\n");
        } else if (!strcmp(cmd, "positions")) {
            sscanf(arg, "%f %f", &plant[0], &plant[1]);
        } else if (!strcmp(cmd, "status")) {
            uint8_t out[80];
            imle_device_status_payload(&dev, out);
            printf("ok ");
            print_hex(out, 80);
            printf("\n");
        } else if (cmd[0]) {
            printf("error unknown command %s\n", cmd);
        }
        printf(".\n");
        fflush(stdout);
    }
    return 0;
}
