/* `imle-simavr`: runs the firmware ELF on a simulated ATmega2560 (libsimavr) in real time, its UART0
 * bridged to a pseudo-terminal, with the same stdin fault commands and output as imle-emulator.
 *
 *   imle-simavr FIRMWARE.elf --dev-addr ADDR [--watchdog-ms 300] [--state-hz 50] [--max-step 200]
 *               [--link PATH] [--command-log FILE] [--corrupt-one-in N] [--corrupt-rx-one-in N]
 *               [--drop-fraction F] [--fault-seed S] [--exit-on-stdin-eof]
 *
 * The configuration goes into the MCU's EEPROM before it boots (as a user would program it). Noise,
 * silence and vanishing act on the wire between the UART and the pty; `reset` resets the MCU (RAM
 * other than .noinit is re-initialised by the firmware, as on hardware). `status` reads the device's
 * counters from its RAM (--dev-addr: the data address of the firmware's `dev`) and adds the cycle
 * counts of frame handling measured on the trace pin (PB7, see avr/trace_sim.h).
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "avr_eeprom.h"
#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"

#include "hostio.h"

#define GPIOR1_DATA 0x4A  /* ATmega2560: GPIOR1 is I/O 0x2A */

static avr_t *avr;
static hostio_port_t port = {-1, -1, {0}, NULL, {0}, 0};
static hostio_noise_t noise;
static uint32_t dev_addr;
static double silent_until = -1, back_at = -1;
static volatile sig_atomic_t stop_requested;
static FILE *command_log;
static double wall0;
static avr_cycle_count_t cycle0;

/* MCU -> host: whole frames, so noise can drop a frame */
static uint8_t out_frame[2048];
static size_t out_len;
/* host -> MCU: bytes waiting for the UART's receive FIFO */
static uint8_t in_q[16384];
static size_t in_head, in_tail;
static int xoff;
/* the command log on UART1 */
static uint8_t log_rec[64];
static size_t log_len;
/* the trace pin */
static avr_cycle_count_t pulse_start;
static uint64_t cmd_frames, cmd_cycles, cmd_max, bytes_timed, byte_cycles, frames_timed, frame_cycles;

static void uart0_out(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq; (void)param;
    if (out_len < sizeof out_frame) out_frame[out_len++] = (uint8_t)value;
    if (value != 0) return;
    double now = hostio_now();
    if (now >= silent_until && hostio_noise_tx(&noise, out_frame, out_len)) hostio_port_queue(&port, out_frame, out_len);
    out_len = 0;
}

static void uart0_xon(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; xoff = 0; }
static void uart0_xoff(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; xoff = 1; }

static void uart1_out(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq; (void)param;
    if (log_len == 0 && value != 0xA5) return;  /* resynchronise on the record marker */
    log_rec[log_len++] = (uint8_t)value;
    if (log_len < 5) return;
    size_t n = log_rec[4], need = 5 + 4 * n;
    if (n > 8) { log_len = 0; return; }
    if (log_len < need) return;
    if (command_log) {
        double t = (double)(avr->cycle - cycle0) / avr->frequency;
        fprintf(command_log, "{\"seq\": %u, \"valid\": %s, \"t\": %.6f, \"targets\": [",
                log_rec[1] | (log_rec[2] << 8), log_rec[3] ? "true" : "false", t);
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, log_rec + 5 + 4 * i, 4);
            fprintf(command_log, "%s%.9g", i ? ", " : "", (double)f);
        }
        fprintf(command_log, "]}\n");
        fflush(command_log);
    }
    log_len = 0;
}

static void trace_pin(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq; (void)param;
    if (value) { pulse_start = avr->cycle; return; }
    uint64_t c = avr->cycle - pulse_start;
    uint8_t type = avr->data[GPIOR1_DATA];
    if (type == 0) { bytes_timed++; byte_cycles += c; return; }
    frames_timed++;
    frame_cycles += c;
    if (type == 0x04) {  /* a JointCommand's final byte: decode, CRC, checks, apply */
        cmd_frames++;
        cmd_cycles += c;
        if (c > cmd_max) cmd_max = c;
    }
}

static uint32_t ram_u32(uint32_t addr) {
    const uint8_t *p = avr->data + addr;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void print_status(void) {
    double sim_s = (double)(avr->cycle - cycle0) / avr->frequency;
    uint32_t v[HOSTIO_STATUS_COUNTERS];
    for (int i = 0; i < HOSTIO_STATUS_COUNTERS; i++) v[i] = ram_u32(dev_addr + 4u * (uint32_t)i);
    v[0] = (uint32_t)(sim_s * 1000.0);  /* uptime in simulated time */
    hostio_print_counters(v, &noise);
    printf(", \"cmd_frames_timed\": %llu, \"cmd_frame_cycles_mean\": %.1f, \"cmd_frame_cycles_max\": %llu, "
           "\"frames_timed\": %llu, \"frame_cycles_mean\": %.1f, \"byte_cycles_mean\": %.1f, \"f_cpu\": %u, "
           "\"sim_seconds\": %.3f, \"wall_seconds\": %.3f}\n",
           (unsigned long long)cmd_frames, cmd_frames ? (double)cmd_cycles / cmd_frames : 0.0,
           (unsigned long long)cmd_max, (unsigned long long)frames_timed,
           frames_timed ? (double)frame_cycles / frames_timed : 0.0,
           bytes_timed ? (double)byte_cycles / bytes_timed : 0.0, avr->frequency, sim_s, hostio_now() - wall0);
}

static void mcu_reset(void) {
    avr_reset(avr);  /* the MCU restarts; .noinit (e-stop latch, boots) survives */
    out_len = 0;
    log_len = 0;
    fprintf(stderr, "imle-simavr: MCU reset\n");
}

static void command(const char *line) {
    const hostio_faults_t faults = {&port, &noise, &silent_until, &back_at, mcu_reset, print_status};
    hostio_fault_command(&faults, line);
}

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

/* The MCU sleeps between interrupts: skip ahead; real time is kept by the main loop. */
static void no_sleep(avr_t *a, avr_cycle_count_t how_long) { (void)a; (void)how_long; }

static void quiet_uart(char name) {
    uint32_t f = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS(name), &f);
    f &= ~(uint32_t)AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS(name), &f);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"dev-addr", 1, 0, 'a'}, {"watchdog-ms", 1, 0, 'w'}, {"state-hz", 1, 0, 'z'}, {"max-step", 1, 0, 's'},
        {"link", 1, 0, 'k'}, {"command-log", 1, 0, 'c'}, {"corrupt-one-in", 1, 0, 't'},
        {"corrupt-rx-one-in", 1, 0, 'r'}, {"drop-fraction", 1, 0, 'd'}, {"fault-seed", 1, 0, 'S'},
        {"exit-on-stdin-eof", 0, 0, 'E'}, {0, 0, 0, 0}};
    long watchdog = 300, tx_one_in = 0, rx_one_in = 0;
    double hz = 50, step = 200, drop = 0;
    unsigned long long seed = 0;
    int exit_on_eof = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': dev_addr = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'w': watchdog = strtol(optarg, NULL, 10); break;
        case 'z': hz = strtod(optarg, NULL); break;
        case 's': step = strtod(optarg, NULL); break;
        case 'k': port.link = optarg; break;
        case 'c':
            if (!(command_log = fopen(optarg, "a"))) { fprintf(stderr, "imle-simavr: cannot open %s\n", optarg); return 2; }
            break;
        case 't': tx_one_in = strtol(optarg, NULL, 10); break;
        case 'r': rx_one_in = strtol(optarg, NULL, 10); break;
        case 'd': drop = strtod(optarg, NULL); break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'E': exit_on_eof = 1; break;
        default: fprintf(stderr, "usage: imle-simavr FIRMWARE.elf --dev-addr ADDR [options]\n"); return 2;
        }
    }
    if (optind != argc - 1 || !dev_addr || !(watchdog >= 0 && watchdog <= 65535) || !(hz > 0 && hz <= 1000) ||
        !(step >= 0 && isfinite(step)) || !(drop >= 0 && drop < 1)) {
        fprintf(stderr, "imle-simavr: need FIRMWARE.elf and --dev-addr; --watchdog-ms in [0, 65535], --state-hz "
                        "in (0, 1000], --max-step >= 0, --drop-fraction in [0, 1)\n");
        return 2;
    }
    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    fflush(stdout);
    int saved_stdout = dup(1);
    dup2(2, 1);  /* libsimavr reports what it loaded on stdout: keep stdout for the pty path and answers */
    int bad_elf = elf_read_firmware(argv[optind], &fw);
    if (bad_elf) { fprintf(stderr, "imle-simavr: cannot read %s\n", argv[optind]); return 2; }
    if (!fw.mmcu[0]) snprintf(fw.mmcu, sizeof fw.mmcu, "atmega2560");
    if (!fw.frequency) fw.frequency = 16000000;
    avr = avr_make_mcu_by_name(fw.mmcu);
    if (!avr) { fprintf(stderr, "imle-simavr: unknown MCU %s\n", fw.mmcu); return 2; }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    fflush(stdout);
    dup2(saved_stdout, 1);
    close(saved_stdout);
    avr->sleep = no_sleep;
    avr->log = LOG_ERROR;
    dev_addr &= 0xFFFFu;  /* avr-nm prints data addresses as 0x80xxxx */

    /* configuration in EEPROM, read by the firmware at boot */
    uint8_t ee[12];
    uint16_t magic = 0x1E20, wd = (uint16_t)watchdog;
    uint32_t period = (uint32_t)lround(1e6 / hz);
    float ms = (float)step;
    memcpy(ee, &magic, 2); memcpy(ee + 2, &wd, 2); memcpy(ee + 4, &period, 4); memcpy(ee + 8, &ms, 4);
    avr_eeprom_desc_t desc = {ee, 0, sizeof ee};
    avr_ioctl(avr, AVR_IOCTL_EEPROM_SET, &desc);

    quiet_uart('0');
    quiet_uart('1');
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart0_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), uart0_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), uart0_xoff, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('1'), UART_IRQ_OUTPUT), uart1_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 7), trace_pin, NULL);
    avr_irq_t *uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);

    hostio_noise_init(&noise, seed, tx_one_in, rx_one_in, drop);
    while (avr->cycle < fw.frequency / 50) {  /* boot (20 ms) before a host can send: the UART is set up */
        int st = avr_run(avr);
        if (st == cpu_Done || st == cpu_Crashed) { fprintf(stderr, "imle-simavr: MCU stopped at boot\n"); return 1; }
    }
    if (hostio_port_open(&port)) { perror("imle-simavr: cannot open a pseudo-terminal"); return 1; }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("%s\n", hostio_port_path(&port));
    fflush(stdout);

    wall0 = hostio_now();
    cycle0 = avr->cycle;
    int stdin_open = 1;
    const avr_cycle_count_t slice = avr->frequency / 4000;  /* I/O every 0.25 ms of MCU time */
    uint8_t buf[4096];
    while (!stop_requested) {
        avr_cycle_count_t until = avr->cycle + slice;
        while (avr->cycle < until) {
            int st = avr_run(avr);
            if (st == cpu_Done || st == cpu_Crashed) {
                fprintf(stderr, "imle-simavr: MCU stopped (state %d) at pc 0x%x\n", st, avr->pc);
                return 1;
            }
        }
        while (!xoff && in_tail != in_head) {  /* host bytes into the UART while its FIFO has room */
            avr_raise_irq(uart_in, in_q[in_tail]);
            in_tail = (in_tail + 1) % sizeof in_q;
        }
        double now = hostio_now();
        double ahead = (double)(avr->cycle - cycle0) / avr->frequency - (now - wall0);
        if (back_at >= 0 && now >= back_at) {
            back_at = -1;
            if (hostio_port_open(&port) == 0) fprintf(stderr, "imle-simavr: back on %s\n", port.pty_path);
        }
        struct pollfd fds[2];
        int nfds = 0, pi = -1, si = -1;
        if (port.master >= 0) {
            pi = nfds;
            fds[nfds++] = (struct pollfd){port.master, (short)(POLLIN | (port.tx_len ? POLLOUT : 0)), 0};
        }
        if (stdin_open) { si = nfds; fds[nfds++] = (struct pollfd){0, POLLIN, 0}; }
        /* real time: wait while the MCU is ahead of the wall clock (or for I/O, whichever first) */
        struct timespec ts = {0, ahead > 0 ? (long)(ahead * 1e9) : 0};
        if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
        ppoll(fds, (nfds_t)nfds, &ts, NULL);
        size_t queued = (in_head + sizeof in_q - in_tail) % sizeof in_q;
        if (pi >= 0 && (fds[pi].revents & POLLIN) && queued + sizeof buf < sizeof in_q) {
            /* read only what fits: a host ahead of the UART is held back by the pty (USB flow control) */
            long got = hostio_port_read(&port, buf, sizeof buf);
            if (got > 0) hostio_noise_rx(&noise, buf, (size_t)got);
            for (long i = 0; i < got; i++) {
                in_q[in_head] = buf[i];
                in_head = (in_head + 1) % sizeof in_q;
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
        hostio_port_flush(&port);
    }
    double sim_s = (double)(avr->cycle - cycle0) / avr->frequency;
    fprintf(stderr, "imle-simavr: stopped; %.2f s simulated in %.2f s\n", sim_s, hostio_now() - wall0);
    hostio_port_close(&port);
    return 0;
}
