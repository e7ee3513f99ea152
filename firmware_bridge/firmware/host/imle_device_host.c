/* `imle-device`: the C device core on a pseudo-terminal, with a simulated joint plant (each joint slews
 * towards its target at max_velocity). The host build of the reference firmware: the same core a
 * microcontroller runs, this file is its "board port".
 *
 * Prints the device path on the first stdout line, runs until SIGINT/SIGTERM (or stdin EOF with
 * --exit-on-stdin-eof). Lines on stdin inject faults, each answered by one stdout line, as imle-emulator:
 *   vanish SECONDS | silent SECONDS | reset | drop FRACTION | corrupt TX_ONE_IN RX_ONE_IN | status
 */
#define _DEFAULT_SOURCE
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hostio.h"
#include "imle_device.h"
#include "imle_hal.h"

#define MAXJ IMLE_MAX_JOINTS

static hostio_port_t port = {-1, -1, {0}, NULL, {0}, 0};
static hostio_noise_t noise;
static double t0, silent_until = -1;
static FILE *command_log;
static volatile sig_atomic_t stop_requested;

static char names_buf[256];
static const char *joint_names[MAXJ];
static float lower[MAXJ], upper[MAXJ], vmax[MAXJ], steps[MAXJ];
static float pos[MAXJ], target[MAXJ];
static double plant_t;
static imle_config_t config;
static imle_device_t dev;
static imle_retained_t retained;  /* a firmware reset (`reset`) keeps it, as retained memory would */

static void plant_advance(double now) {
    double dt = now - plant_t;
    plant_t = now;
    for (uint8_t i = 0; i < config.joints; i++) {
        float d = target[i] - pos[i];
        float lim = vmax[i] > 0 ? (float)(vmax[i] * dt) : INFINITY;
        pos[i] += d > lim ? lim : d < -lim ? -lim : d;
    }
}

uint32_t imle_hal_millis(void) { return (uint32_t)((hostio_now() - t0) * 1000.0); }

uint8_t imle_hal_tx(const uint8_t *frame, uint16_t len) {
    static uint8_t copy[IMLE_TX_WIRE_MAX];
    if (hostio_now() < silent_until) return 1;  /* not on the wire: a silent device */
    memcpy(copy, frame, len);
    if (!hostio_noise_tx(&noise, copy, len)) return 1;
    return (uint8_t)hostio_port_queue(&port, copy, len);
}

void imle_hal_set_targets(const float *t) {
    plant_advance(hostio_now());
    memcpy(target, t, sizeof(float) * config.joints);
}

void imle_hal_get_positions(float *p) {
    plant_advance(hostio_now());
    memcpy(p, pos, sizeof(float) * config.joints);
}

void imle_hal_get_extras(float *e) { (void)e; }

uint8_t imle_hal_plant_reset(uint64_t seed, uint8_t k, const float *state) {
    (void)seed;
    if (k != 0 && k != config.joints) return 0;
    for (uint8_t i = 0; i < k; i++)
        if (!(state[i] >= lower[i] && state[i] <= upper[i])) return 0;
    for (uint8_t i = 0; i < config.joints; i++) pos[i] = target[i] = k ? state[i] : (lower[i] + upper[i]) / 2;
    return 1;
}

void imle_hal_applied(uint16_t seq, uint8_t valid, const float *t) {
    if (!command_log) return;
    fprintf(command_log, "{\"seq\": %u, \"valid\": %s, \"t\": %.6f, \"targets\": [", seq, valid ? "true" : "false",
            hostio_now() - t0);
    for (uint8_t i = 0; i < config.joints; i++) fprintf(command_log, "%s%.9g", i ? ", " : "", (double)t[i]);
    fprintf(command_log, "]}\n");
    fflush(command_log);
}

/* hostio's status names follow the core's counters (C99: a negative array size fails the build) */
typedef char hostio_counters_match[(IMLE_COUNTERS == HOSTIO_STATUS_COUNTERS) ? 1 : -1];

static void print_status(void) {
    uint8_t p[80];
    uint32_t v[HOSTIO_STATUS_COUNTERS];
    imle_device_status_payload(&dev, p);
    for (int i = 0; i < HOSTIO_STATUS_COUNTERS; i++) v[i] = imle_get_u32(p + 4 * i);
    hostio_print_counters(v, &noise);
    printf("}\n");
}

static double back_at = -1;

static void firmware_reset(void) {
    imle_device_init(&dev, &config, &retained);
    fprintf(stderr, "imle-device: firmware reset\n");
}

static void command(const char *line) {
    const hostio_faults_t faults = {&port, &noise, &silent_until, &back_at, firmware_reset, print_status};
    hostio_fault_command(&faults, line);
}

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void usage(void) {
    fprintf(stderr,
            "usage: imle-device [--watchdog-ms 300] [--state-hz 50] [--joints agent_x,agent_y] [--lower 0]\n"
            "                   [--upper 512] [--max-step 200] [--max-velocity 400] [--hardware]\n"
            "                   [--firmware-version S] [--link PATH] [--command-log FILE] [--corrupt-one-in N]\n"
            "                   [--corrupt-rx-one-in N] [--drop-fraction F] [--fault-seed S] [--exit-on-stdin-eof]\n");
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"watchdog-ms", 1, 0, 'w'}, {"state-hz", 1, 0, 'z'}, {"joints", 1, 0, 'j'}, {"lower", 1, 0, 'l'},
        {"upper", 1, 0, 'u'}, {"max-step", 1, 0, 's'}, {"max-velocity", 1, 0, 'v'}, {"hardware", 0, 0, 'H'},
        {"firmware-version", 1, 0, 'f'}, {"link", 1, 0, 'k'}, {"command-log", 1, 0, 'c'},
        {"corrupt-one-in", 1, 0, 't'}, {"corrupt-rx-one-in", 1, 0, 'r'}, {"drop-fraction", 1, 0, 'd'},
        {"fault-seed", 1, 0, 'S'}, {"exit-on-stdin-eof", 0, 0, 'E'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    long watchdog = 300, tx_one_in = 0, rx_one_in = 0;
    double hz = 50, lo = 0, hi = 512, step = 200, vel = 400, drop = 0;
    unsigned long long seed = 0;
    int exit_on_eof = 0, simulated = 1, c;
    const char *fw = "imle-firmware 0.1.0 (host, C core)";
    snprintf(names_buf, sizeof names_buf, "agent_x,agent_y");
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'w': watchdog = strtol(optarg, NULL, 10); break;
        case 'z': hz = strtod(optarg, NULL); break;
        case 'j': snprintf(names_buf, sizeof names_buf, "%s", optarg); break;
        case 'l': lo = strtod(optarg, NULL); break;
        case 'u': hi = strtod(optarg, NULL); break;
        case 's': step = strtod(optarg, NULL); break;
        case 'v': vel = strtod(optarg, NULL); break;
        case 'H': simulated = 0; break;
        case 'f': fw = optarg; break;
        case 'k': port.link = optarg; break;
        case 'c':
            if (!(command_log = fopen(optarg, "a"))) { fprintf(stderr, "imle-device: cannot open %s\n", optarg); return 2; }
            break;
        case 't': tx_one_in = strtol(optarg, NULL, 10); break;
        case 'r': rx_one_in = strtol(optarg, NULL, 10); break;
        case 'd': drop = strtod(optarg, NULL); break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'E': exit_on_eof = 1; break;
        default: usage(); return c == 'h' ? 0 : 2;
        }
    }
    if (!(watchdog >= 0 && watchdog <= 65535) || !(hz > 0 && hz <= 1000) || !(drop >= 0 && drop < 1)) {
        fprintf(stderr, "imle-device: --watchdog-ms must be in [0, 65535], --state-hz in (0, 1000], "
                        "--drop-fraction in [0, 1); got %ld, %g, %g\n", watchdog, hz, drop);
        return 2;
    }
    uint8_t n = 0;
    for (char *tok = strtok(names_buf, ","); tok && n < MAXJ; tok = strtok(NULL, ",")) joint_names[n++] = tok;
    for (uint8_t i = 0; i < n; i++) {
        lower[i] = (float)lo; upper[i] = (float)hi; steps[i] = (float)step; vmax[i] = (float)vel;
        pos[i] = target[i] = (float)((lo + hi) / 2);
    }
    config = (imle_config_t){fw, n, 0, joint_names, NULL, lower, upper, vmax, steps, (uint16_t)watchdog,
                             (uint32_t)lround(1e6 / hz), (uint8_t)simulated};
    hostio_noise_init(&noise, seed, tx_one_in, rx_one_in, drop);
    t0 = plant_t = hostio_now();
    if (!imle_device_init(&dev, &config, &retained)) {
        fprintf(stderr, "imle-device: invalid configuration (joint count 1..%d, lower < upper, finite "
                        "limits, max_step and max_velocity >= 0)\n", MAXJ);
        return 2;
    }
    if (hostio_port_open(&port)) { perror("imle-device: cannot open a pseudo-terminal"); return 1; }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("%s\n", hostio_port_path(&port));
    fflush(stdout);
    int stdin_open = 1;
    uint8_t buf[4096];
    while (!stop_requested) {
        double now = hostio_now();
        if (back_at >= 0 && now >= back_at) {
            back_at = -1;
            if (hostio_port_open(&port) == 0) fprintf(stderr, "imle-device: back on %s\n", port.pty_path);
        }
        struct pollfd fds[2];
        int nfds = 0, pi = -1, si = -1;
        if (port.master >= 0) {
            pi = nfds;
            fds[nfds++] = (struct pollfd){port.master, (short)(POLLIN | (port.tx_len ? POLLOUT : 0)), 0};
        }
        if (stdin_open) { si = nfds; fds[nfds++] = (struct pollfd){0, POLLIN, 0}; }
        poll(fds, (nfds_t)nfds, 2);
        if (pi >= 0 && (fds[pi].revents & POLLIN)) {
            long got = hostio_port_read(&port, buf, sizeof buf);
            if (got > 0) {
                hostio_noise_rx(&noise, buf, (size_t)got);
                imle_device_receive(&dev, buf, (uint16_t)got);
            }
        }
        if (si >= 0 && (fds[si].revents & (POLLIN | POLLHUP))) {
            int eof = 0;
            hostio_stdin_fill(&eof);
            for (const char *line; (line = hostio_stdin_next());)
                if (line[0]) command(line);
            if (eof) {
                stdin_open = 0;
                if (exit_on_eof) break;
            }
        }
        imle_device_tick(&dev);
        hostio_port_flush(&port);
    }
    fprintf(stderr, "imle-device: stopped; %lu frames in, %lu out\n", (unsigned long)dev.counters[IMLE_C_RX_FRAMES_OK],
            (unsigned long)dev.counters[IMLE_C_TX_FRAMES]);
    hostio_port_close(&port);
    return 0;
}
