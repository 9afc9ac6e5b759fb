/* Console flood for QEMU's virt machine (Cortex-A15): numbered lines as fast as the PL011 takes
 * them, forever. QEMU's PL011 does not pace transmission by baud rate, so this streams megabytes
 * a second: the stress firmware of benchmarks/bench_tui.py (a TUI must stay responsive). */
#include <stdint.h>

#define UART_DR (*(volatile uint32_t *)0x09000000u)
#define UART_FR (*(volatile uint32_t *)0x09000018u)

static void putc_(char c)
{
    while (UART_FR & (1u << 5)) { /* TX FIFO full */ }
    UART_DR = (uint32_t)c;
}

volatile unsigned int line_count;

int main(void)
{
    static const char text[] = " the quick brown fox jumps over the lazy dog\n";
    char digits[10];
    for (line_count = 1;; line_count++) {
        unsigned int n = line_count, i = 0;
        do {
            digits[i++] = (char)('0' + n % 10);
            n /= 10;
        } while (n);
        while (i)
            putc_(digits[--i]);
        for (const char *p = text; *p; p++)
            putc_(*p);
    }
}
