/* Timing-sensitive test firmware for mps2-an385: counts busy-loop iterations between SysTick
 * interrupts and prints "tick N loops M". Under plain QEMU M depends on host timing and varies
 * run to run; under --deterministic (icount) it must be identical, which is what the determinism
 * test checks (and it checks that plain runs do differ, so the test can fail). */
#include <stdint.h>
#include "uart.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

volatile unsigned int tick_count;

void SysTick_Handler(void) { tick_count++; }

int main(void)
{
    unsigned int seen = 0, loops = 0;

    uart_init();
    uart_puts("jitter\n");
    SYST_RVR = 25000000u / 100u - 1u; /* 100 Hz of virtual time */
    SYST_CVR = 0;
    SYST_CSR = 7u;                    /* processor clock, interrupt, enable */
    for (;;) {
        unsigned int n = tick_count;
        if (n != seen) {
            seen = n;
            uart_puts("tick ");
            uart_putu(n);
            uart_puts(" loops ");
            uart_putu(loops);
            uart_putc('\n');
            loops = 0;
        }
        loops++;
    }
}
