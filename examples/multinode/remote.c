/* cpu0 of boards/mmio-bridge.yaml: it reaches cpu1's peripherals through mmio_map windows, not
 * its own. It types a greeting into cpu1's UART (cpu1's console prints it; each byte waits for the
 * transmitter through a forwarded read of its STATE register), then writes cpu1's GPIO output
 * register and reads it back. Writes land at the end of the quantum; a read stalls cpu0 until the
 * other node answered (docs/multinode.md). cpu1 runs cpu1.elf and never touches those registers. */
#include <stdint.h>
#include "uart.h"

#define REMOTE_UART_DATA      (*(volatile uint32_t *)0x50000000u)  /* cpu1 uart0 at 0x40004000 */
#define REMOTE_UART_STATE     (*(volatile uint32_t *)0x50000004u)
#define REMOTE_GPIO_DATAOUT   (*(volatile uint32_t *)0x50001004u)  /* cpu1 gpio0 at 0x40010000 */
#define REMOTE_GPIO_OUTENSET  (*(volatile uint32_t *)0x50001010u)

static void remote_puts(const char *s)
{
    while (*s) {
        while (REMOTE_UART_STATE & 1u) {    /* TX buffer full */
        }
        REMOTE_UART_DATA = (uint8_t)*s++;
    }
}

int main(void)
{
    unsigned int n;

    uart_init();
    uart_puts("cpu0: start\n");
    remote_puts("hello from cpu0, through mmio_map\n");
    REMOTE_GPIO_OUTENSET = 0xffu;
    for (n = 1; n <= 3; n++) {
        REMOTE_GPIO_DATAOUT = n * 17u;
        uart_puts("cpu0: cpu1 gpio0 dataout = ");
        uart_putu(REMOTE_GPIO_DATAOUT);
        uart_puts("\n");
    }
    uart_puts("cpu0: done\n");
    for (;;)
        __asm volatile("wfi");
}
