/* What a board port provides to the device core: one C file implementing these functions.
 *
 * The core never touches hardware. It calls these from imle_device_receive() and imle_device_tick(),
 * i.e. from the port's main loop, never from an interrupt.
 */
#ifndef IMLE_HAL_H
#define IMLE_HAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Milliseconds since power-on; may wrap (the core handles wrap-around). */
uint32_t imle_hal_millis(void);

/* Queue one complete frame (0x00 delimiter included) for the UART/USB. Must not block for long.
 * Return 0 when it does not fit the transmit FIFO (the frame is dropped whole, counted as tx_overflow). */
uint8_t imle_hal_tx(const uint8_t *frame, uint16_t len);

/* Joint position targets out (n = the configured joint count). The core only passes finite values
 * within the configured limits. */
void imle_hal_set_targets(const float *targets);

/* Measured joint positions in (n values) and extra sensors (k values; not called when k = 0). */
void imle_hal_get_positions(float *positions);
void imle_hal_get_extras(float *extras);

/* Simulated plants only (Capabilities SIMULATED): reset the plant with a seed and k initial values
 * (k = 0: the plant's own initial state). Return 0 to refuse (wrong k, bad values). */
uint8_t imle_hal_plant_reset(uint64_t seed, uint8_t k, const float *state);

/* Called after every applied JointCommand (diagnostics: a command log, a trace pin); may be empty. */
void imle_hal_applied(uint16_t seq, uint8_t valid, const float *targets);

#ifdef __cplusplus
}
#endif
#endif
