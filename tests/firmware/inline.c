/* Coverage attribution under inlining (tests/test_coverage.py). Built at -O2: `clamp` is
 * always inlined, into both `first` and `second`; its "too big" branch runs only in `first`'s copy.
 * `warn` is only ever inlined, into a branch of main that never runs. */

#include "uart.h"

static inline __attribute__((always_inline)) unsigned int clamp(unsigned int v, unsigned int hi)
{
    if (v > hi) {
        uart_puts("clamped ");
        uart_putu(v);
        uart_putc('\n');
        return hi;
    }
    return v;
}

static inline __attribute__((always_inline)) void warn(const char *what)
{
    uart_puts("warning: ");
    uart_puts(what);
    uart_putc('\n');
}

__attribute__((noinline)) unsigned int first(unsigned int v)
{
    unsigned int c = clamp(v, 10u);
    uart_putu(c);
    return c;
}

__attribute__((noinline)) unsigned int second(unsigned int v)
{
    unsigned int c = clamp(v + 1u, 100u);
    uart_putc(' ');
    return c;
}

int main(void)
{
    unsigned int total;

    uart_init();
    total = first(42u);
    total += second(total);
    uart_putc('\n');
    if (total > 1000u)
        warn("total");
    uart_puts("done\n");
    for (;;)
        __asm volatile("wfi");
}
