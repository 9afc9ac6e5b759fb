/* Polled "hello" for QEMU's lm3s811evb: greets on UART0, then prints
 * "tick N" forever, paced by a counted busy loop.  Lines typed on UART0 are
 * echoed back as "echo: <line>".
 *
 * QEMU needs no clock or pin setup; real hardware would additionally have
 * to enable UART0/GPIOA in SYSCTL RCGC1/RCGC2 and route PA0/PA1 to UART0. */

#include <stdint.h>

#define UART0_BASE      0x4000C000u
#define UART_DR         (*(volatile uint32_t *)(UART0_BASE + 0x000))
#define UART_FR         (*(volatile uint32_t *)(UART0_BASE + 0x018))
#define UART_CTL        (*(volatile uint32_t *)(UART0_BASE + 0x030))

#define FR_RXFE         (1u << 4)
#define FR_TXFF         (1u << 5)
#define CTL_UARTEN      (1u << 0)
#define CTL_TXE         (1u << 8)
#define CTL_RXE         (1u << 9)

/* Busy-loop iterations between ticks (about 20 ticks/s under plain QEMU
 * TCG), split into POLL_CHUNKS pieces so the receiver is serviced often. */
#ifndef DELAY_LOOPS
#define DELAY_LOOPS     12000000u
#endif
#define POLL_CHUNKS     64u

volatile unsigned int tick_count;

static char line[80];
static unsigned int line_len;

static void uart_putc(char c)
{
    while (UART_FR & FR_TXFF) {
    }
    UART_DR = (uint8_t)c;
}

static void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

static void uart_putu(unsigned int n)
{
    char buf[10];
    int i = 0;

    do {
        buf[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i)
        uart_putc(buf[--i]);
}

__attribute__((noinline, noclone))
void on_tick(unsigned int n)
{
    uart_puts("tick ");
    uart_putu(n);
    uart_putc('\n');
}

static void poll_rx(void)
{
    while (!(UART_FR & FR_RXFE)) {
        char c = (char)(UART_DR & 0xff);

        if (c == '\n' || c == '\r') {
            if (line_len) {
                line[line_len] = '\0';
                uart_puts("echo: ");
                uart_puts(line);
                uart_putc('\n');
                line_len = 0;
            }
        } else if (line_len < sizeof(line) - 1) {
            line[line_len++] = c;
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
    UART_CTL = CTL_UARTEN | CTL_TXE | CTL_RXE;
    uart_puts("Hello from virsim on lm3s811evb\n");

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
