/* Polled driver for the CMSDK APB UART0 of QEMU's mps2-an385. */

#include <stdint.h>
#include "uart.h"

#define UART0_BASE      0x40004000u
#define UART_DATA       (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE      (*(volatile uint32_t *)(UART0_BASE + 0x04))
#define UART_CTRL       (*(volatile uint32_t *)(UART0_BASE + 0x08))
#define UART_BAUDDIV    (*(volatile uint32_t *)(UART0_BASE + 0x10))

#define STATE_TX_FULL   (1u << 0)
#define STATE_RX_FULL   (1u << 1)
#define CTRL_TX_EN      (1u << 0)
#define CTRL_RX_EN      (1u << 1)

void uart_init(void)
{
    UART_BAUDDIV = 16;
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN;
}

void uart_putc(char c)
{
    while (UART_STATE & STATE_TX_FULL) {
    }
    UART_DATA = (uint8_t)c;
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void uart_putu(unsigned int n)
{
    char buf[10];   /* 2^32 - 1 has 10 digits */
    int i = 0;

    do {
        buf[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i)
        uart_putc(buf[--i]);
}

int uart_getc(void)
{
    if (!(UART_STATE & STATE_RX_FULL))
        return -1;
    return (int)(UART_DATA & 0xff);
}
