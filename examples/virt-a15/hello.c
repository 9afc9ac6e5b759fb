/* "hello" for QEMU's virt machine with a Cortex-A15: the PL011 UART at 0x09000000 needs no set-up
 * in QEMU. Prints a greeting and a few ticks, then stops in WFI: enough to show that an A-profile
 * (Linux-class) board runs and that virsim checks the ELF's architecture profile. */
#include <stdint.h>

#define UART_DR (*(volatile uint32_t *)0x09000000u)
#define UART_FR (*(volatile uint32_t *)0x09000018u)

static void putc_(char c)
{
    while (UART_FR & (1u << 5)) { /* TX FIFO full */ }
    UART_DR = (uint32_t)c;
}

static void puts_(const char *s)
{
    while (*s)
        putc_(*s++);
}

volatile unsigned int tick_count;

__attribute__((noinline)) void on_tick(unsigned int n)
{
    puts_("tick ");
    putc_((char)('0' + n));
    putc_('\n');
}

int main(void)
{
    puts_("Hello from virsim on virt (Cortex-A15)\n");
    for (tick_count = 1; tick_count <= 3; tick_count++)
        on_tick(tick_count);
    return 0;
}
