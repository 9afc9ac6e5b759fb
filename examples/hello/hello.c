/* Polled "hello" for QEMU's mps2-an385: greets, then prints "tick N"
 * forever, pacing itself with a counted busy loop (timing depends only on
 * the number of instructions executed).  Lines typed on UART0 are echoed
 * back as "echo: <line>". */

#include "uart.h"

/* Busy-loop iterations between ticks, in POLL_CHUNKS pieces so the UART receiver is serviced.
 * 7 instructions each: a tick is 25 M instructions, 1 s of the board's 25 MHz clock on the
 * built-in engine (one instruction per cycle), 0.8 s on QEMU (32 ns per instruction). */
#ifndef DELAY_LOOPS
#define DELAY_LOOPS     3571392u
#endif
#define POLL_CHUNKS     64u

volatile unsigned int tick_count;

static char line[80];
static unsigned int line_len;

__attribute__((noinline, noclone))
void on_tick(unsigned int n)
{
    uart_puts("tick ");
    uart_putu(n);
    uart_putc('\n');
}

static void poll_rx(void)
{
    int c;

    while ((c = uart_getc()) >= 0) {
        if (c == '\n' || c == '\r') {
            if (line_len) {
                line[line_len] = '\0';
                uart_puts("echo: ");
                uart_puts(line);
                uart_putc('\n');
                line_len = 0;
            }
        } else if (line_len < sizeof(line) - 1) {
            line[line_len++] = (char)c;
        }
    }
}

static void delay(unsigned int loops)
{
    volatile unsigned int i;

    for (i = 0; i < loops; i++) {
    }
}

int main(void)
{
    uart_init();
    uart_puts("Hello from virsim on mps2-an385\n");

    for (;;) {
        unsigned int chunk;

        for (chunk = 0; chunk < POLL_CHUNKS; chunk++) {
            delay(DELAY_LOOPS / POLL_CHUNKS);
            poll_rx();
        }
        tick_count++;
        on_tick(tick_count);
    }
}
