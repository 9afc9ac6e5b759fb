/* Polled driver for the CMSDK APB UART0 of QEMU's mps2-an385. */
#ifndef UART_H
#define UART_H

void uart_init(void);
void uart_putc(char c);
void uart_puts(const char *s);
void uart_putu(unsigned int n);   /* unsigned decimal */
int uart_getc(void);              /* next received byte, or -1 if none */

#endif
