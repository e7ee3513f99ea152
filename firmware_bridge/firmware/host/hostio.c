#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE
#include "hostio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

int hostio_port_open(hostio_port_t *p) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) || unlockpt(m)) return -1;
    const char *name = ptsname(m);
    if (!name) return -1;
    snprintf(p->pty_path, sizeof p->pty_path, "%s", name);
    /* Keep the slave open too, so the master never sees EIO while no host has the port open. */
    int s = open(p->pty_path, O_RDWR | O_NOCTTY);
    if (s < 0) return -1;
    struct termios t;
    if (tcgetattr(s, &t) == 0) {
        cfmakeraw(&t);  /* no echo, no line discipline: bytes pass untouched */
        tcsetattr(s, TCSANOW, &t);
    }
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    p->master = m;
    p->slave = s;
    p->tx_len = 0;
    if (p->link) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s.tmp%d", p->link, (int)getpid());
        unlink(tmp);
        if (symlink(p->pty_path, tmp) == 0) rename(tmp, p->link);  /* atomic */
    }
    return 0;
}

void hostio_port_close(hostio_port_t *p) {
    if (p->link) unlink(p->link);
    if (p->master >= 0) close(p->master);
    if (p->slave >= 0) close(p->slave);
    p->master = p->slave = -1;
    p->tx_len = 0;
}

const char *hostio_port_path(const hostio_port_t *p) { return p->link ? p->link : p->pty_path; }

int hostio_port_queue(hostio_port_t *p, const uint8_t *data, size_t n) {
    if (p->master < 0) return 1;  /* vanished: bytes go nowhere, as on an unplugged cable */
    if (p->tx_len + n > HOSTIO_TX_MAX) return 0;
    memcpy(p->tx + p->tx_len, data, n);
    p->tx_len += n;
    return 1;
}

void hostio_port_flush(hostio_port_t *p) {
    while (p->tx_len && p->master >= 0) {
        ssize_t n = write(p->master, p->tx, p->tx_len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) p->tx_len = 0;
            return;
        }
        memmove(p->tx, p->tx + n, p->tx_len - (size_t)n);
        p->tx_len -= (size_t)n;
    }
}

long hostio_port_read(hostio_port_t *p, uint8_t *buf, size_t cap) {
    if (p->master < 0) return 0;
    ssize_t n = read(p->master, buf, cap);
    return n < 0 ? 0 : (long)n;
}

static double rnd(hostio_noise_t *z) {  /* xorshift64*, uniform in [0, 1) */
    z->rng ^= z->rng >> 12;
    z->rng ^= z->rng << 25;
    z->rng ^= z->rng >> 27;
    return (double)((z->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static double gap(hostio_noise_t *z, long one_in) {
    if (one_in <= 0) return INFINITY;
    if (one_in == 1) return 0;
    return floor(log(1.0 - rnd(z)) / log(1.0 - 1.0 / (double)one_in));
}

void hostio_noise_init(hostio_noise_t *z, uint64_t seed, long tx_one_in, long rx_one_in, double drop) {
    memset(z, 0, sizeof *z);
    z->rng = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
    z->drop_fraction = drop;
    hostio_noise_set_corruption(z, tx_one_in, rx_one_in);
}

void hostio_noise_set_corruption(hostio_noise_t *z, long tx_one_in, long rx_one_in) {
    z->tx_one_in = tx_one_in;
    z->rx_one_in = rx_one_in;
    z->tx_left = gap(z, tx_one_in);
    z->rx_left = gap(z, rx_one_in);
}

static int corrupt(hostio_noise_t *z, uint8_t *d, size_t n, double *left, long one_in) {
    if (*left >= (double)n) { *left -= (double)n; return 0; }
    int hits = 0;
    double pos = *left;
    while (pos < (double)n) {
        d[(size_t)pos] ^= (uint8_t)(1 + (int)(rnd(z) * 255));  /* always changes the byte */
        hits++;
        pos += 1 + gap(z, one_in);
    }
    *left = pos - (double)n;
    return hits;
}

int hostio_noise_tx(hostio_noise_t *z, uint8_t *frame, size_t n) {
    if (z->drop_fraction > 0 && rnd(z) < z->drop_fraction) { z->tx_dropped++; return 0; }
    if (corrupt(z, frame, n, &z->tx_left, z->tx_one_in)) z->tx_corrupted++;
    return 1;
}

void hostio_noise_rx(hostio_noise_t *z, uint8_t *data, size_t n) { corrupt(z, data, n, &z->rx_left, z->rx_one_in); }

double hostio_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char in_buf[1024];
static size_t in_len;

void hostio_stdin_fill(int *eof) {
    if (in_len == sizeof in_buf) in_len = 0;  /* a runaway line: forget it */
    ssize_t n = read(0, in_buf + in_len, sizeof in_buf - in_len);
    if (n == 0) *eof = 1;
    if (n > 0) in_len += (size_t)n;
}

const char *hostio_stdin_next(void) {
    static char line[1024];
    char *nl = memchr(in_buf, '\n', in_len);
    if (!nl) return NULL;
    size_t k = (size_t)(nl - in_buf);
    memcpy(line, in_buf, k);
    line[k] = 0;
    memmove(in_buf, nl + 1, in_len - k - 1);
    in_len -= k + 1;
    return line;
}

static const char *const status_names[HOSTIO_STATUS_COUNTERS] = {
    "uptime_ms", "boots", "rx_frames_ok", "rx_bad_cobs", "rx_bad_crc", "rx_bad_other", "rx_seq_gaps",
    "commands_applied", "commands_rejected", "commands_duplicate", "heartbeats", "watchdog_trips", "limit_clamps",
    "tx_frames", "tx_dropped", "tx_corrupted", "tx_overflow", "plant_resets", "commands_implausible",
    "sessions_refused"};

void hostio_print_counters(const uint32_t counters[HOSTIO_STATUS_COUNTERS], const hostio_noise_t *noise) {
    printf("status {");
    for (int i = 0; i < HOSTIO_STATUS_COUNTERS; i++) {
        uint32_t v = counters[i];
        if (i == HOSTIO_TX_DROPPED) v = noise->tx_dropped;      /* the wire's noise, not the device's */
        if (i == HOSTIO_TX_CORRUPTED) v = noise->tx_corrupted;
        printf("%s\"%s\": %lu", i ? ", " : "", status_names[i], (unsigned long)v);
    }
}

void hostio_fault_command(const hostio_faults_t *f, const char *line) {
    char word[32] = {0};
    double a = 0;
    long x = 0, y = 0;
    double now = hostio_now();
    int n = sscanf(line, "%31s %lf", word, &a);
    if (!strcmp(word, "vanish") && n == 2) {
        hostio_port_close(f->port);
        *f->back_at = now + a;
        printf("ok vanish\n");
    } else if (!strcmp(word, "silent") && n == 2) {
        *f->silent_until = now + a;
        printf("ok silent\n");
    } else if (!strcmp(word, "reset")) {
        f->reset();
        printf("ok reset\n");
    } else if (!strcmp(word, "drop") && n == 2 && a >= 0 && a < 1) {
        f->noise->drop_fraction = a;
        printf("ok drop\n");
    } else if (!strcmp(word, "corrupt") && sscanf(line, "%31s %ld %ld", word, &x, &y) == 3) {
        hostio_noise_set_corruption(f->noise, x, y);
        printf("ok corrupt\n");
    } else if (!strcmp(word, "status")) {
        f->print_status();
    } else {
        printf("error bad command: '%s'\n", line);
    }
    fflush(stdout);
}
