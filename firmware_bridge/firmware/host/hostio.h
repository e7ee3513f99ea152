/* Host-side plumbing shared by the host device program and the simavr runner: a pseudo-terminal
 * with a stable symlink, a TX FIFO, seeded line noise (corrupt bytes, drop frames), stdin commands. */
#ifndef IMLE_HOSTIO_H
#define IMLE_HOSTIO_H

#include <stddef.h>
#include <stdint.h>

#define HOSTIO_TX_MAX 16384

typedef struct {
    int master, slave;
    char pty_path[128];
    const char *link;  /* optional stable symlink, survives a vanish */
    uint8_t tx[HOSTIO_TX_MAX];
    size_t tx_len;
} hostio_port_t;

int hostio_port_open(hostio_port_t *p);  /* returns 0 on success */
void hostio_port_close(hostio_port_t *p);
const char *hostio_port_path(const hostio_port_t *p);
int hostio_port_queue(hostio_port_t *p, const uint8_t *data, size_t n);  /* 0 when the FIFO is full */
void hostio_port_flush(hostio_port_t *p);
long hostio_port_read(hostio_port_t *p, uint8_t *buf, size_t cap);

/* Seeded noise, as firmware_bridge/emulator/faults.py: geometric gaps between corrupted bytes. */
typedef struct {
    uint64_t rng;
    long tx_one_in, rx_one_in;
    double drop_fraction, tx_left, rx_left;
    uint32_t tx_dropped, tx_corrupted;
} hostio_noise_t;

void hostio_noise_init(hostio_noise_t *z, uint64_t seed, long tx_one_in, long rx_one_in, double drop);
void hostio_noise_set_corruption(hostio_noise_t *z, long tx_one_in, long rx_one_in);
/* One outgoing frame: returns 0 to drop it, else corrupts it in place (counted). */
int hostio_noise_tx(hostio_noise_t *z, uint8_t *frame, size_t n);
void hostio_noise_rx(hostio_noise_t *z, uint8_t *data, size_t n);

double hostio_now(void);  /* monotonic seconds */

/* Line-buffered stdin: fill() after poll() says readable (*eof set when stdin closed), then next()
 * returns each complete line (without newline) until NULL. */
void hostio_stdin_fill(int *eof);
const char *hostio_stdin_next(void);

/* The device's status counters, in DeviceStatus payload order (firmware core: IMLE_COUNTERS). */
#define HOSTIO_STATUS_COUNTERS 20
#define HOSTIO_TX_DROPPED 14
#define HOSTIO_TX_CORRUPTED 15
/* Prints `status {"uptime_ms": N, ...` (no closing brace: a program may add fields), with the noise's own
 * tx_dropped / tx_corrupted in place of the device's. */
void hostio_print_counters(const uint32_t counters[HOSTIO_STATUS_COUNTERS], const hostio_noise_t *noise);

/* The stdin fault commands both device programs answer, as imle-emulator does, each with one stdout line:
 *   vanish SECONDS | silent SECONDS | reset | drop FRACTION | corrupt TX_ONE_IN RX_ONE_IN | status
 * The program supplies what differs: how its device resets and how it prints its status. */
typedef struct {
    hostio_port_t *port;
    hostio_noise_t *noise;
    double *silent_until, *back_at;  /* the wire is silent until, the port comes back at (monotonic s) */
    void (*reset)(void);
    void (*print_status)(void);
} hostio_faults_t;

void hostio_fault_command(const hostio_faults_t *f, const char *line);

#endif
