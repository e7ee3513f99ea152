/* Frame-handling trace for the simulator: PB7 (the Mega's LED pin 13) is high while the core handles
 * one received byte; GPIOR1 then holds the type of the frame that byte completed (0: none, 0xFF: a
 * dropped frame). imle-simavr counts the cycles of each pulse. On a board, a logic analyser on pin 13
 * measures the same thing. */
#include <avr/io.h>
#define IMLE_TRACE_BEGIN() (PORTB |= _BV(PB7))
#define IMLE_TRACE_END(type) do { GPIOR1 = (uint8_t)(type); PORTB &= (uint8_t)~_BV(PB7); } while (0)
