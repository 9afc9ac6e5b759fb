/* UART ping-pong between two nodes (boards/uart-ping-pong.yaml): each node's UART1 is linked to
 * the other's. The node built with -DSTARTS sends "ping N"; the other answers "pong N"; each prints
 * what it receives on its console (UART0). Five rounds, then both say done. */
#include <stdint.h>
#include "uart.h"

#define UART1_BASE      0x40005000u
#define LINK_DATA       (*(volatile uint32_t *)(UART1_BASE + 0x00))
#define LINK_STATE      (*(volatile uint32_t *)(UART1_BASE + 0x04))
#define LINK_CTRL       (*(volatile uint32_t *)(UART1_BASE + 0x08))
#define LINK_BAUDDIV    (*(volatile uint32_t *)(UART1_BASE + 0x10))
#define ROUNDS          5u

static void link_putc(char c)
{
    while (LINK_STATE & 1u) {
    }
    LINK_DATA = (uint8_t)c;
}

static void link_send(const char *word, unsigned int n)
{
    char digits[10];
    int i = 0;

    while (*word)
        link_putc(*word++);
    do {
        digits[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i)
        link_putc(digits[--i]);
    link_putc('\n');
}

/* One line from the link, echoed to the console after the node's name; returns its number. */
static unsigned int link_line(const char *me)
{
    unsigned int n = 0;
    int c;

    uart_puts(me);
    uart_puts(": got ");
    for (;;) {
        while (!(LINK_STATE & 2u)) {
        }
        c = (int)(LINK_DATA & 0xff);
        uart_putc((char)c);
        if (c == '\n')
            return n;
        if (c >= '0' && c <= '9')
            n = n * 10 + (unsigned int)(c - '0');
    }
}

int main(void)
{
    unsigned int n;

    uart_init();
    LINK_BAUDDIV = 16;
    LINK_CTRL = 3u;     /* TX and RX enabled */
#ifdef STARTS
    uart_puts("ping: start\n");
    for (n = 1; n <= ROUNDS; n++) {
        link_send("ping ", n);
        if (link_line("ping") != n)
            uart_puts("ping: out of order\n");
    }
    uart_puts("ping: done\n");
#else
    uart_puts("pong: ready\n");
    for (n = 1; n <= ROUNDS; n++)
        link_send("pong ", link_line("pong"));
    uart_puts("pong: done\n");
#endif
    for (;;)
        __asm volatile("wfi");
}
