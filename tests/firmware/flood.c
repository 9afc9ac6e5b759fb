/* flood: prints a long, known sequence as fast as the UART takes it, then "DONE".
 * Line i (0..LINES-1) is "LLLLL:" followed by 60 characters of a xorshift sequence seeded by i, so
 * a doubled, dropped or reordered byte anywhere shows (tests/test_console_log.py computes the same
 * text in Python and compares the log byte for byte). */

#include "uart.h"

#define LINES 8000u   /* 8000 lines of 67 bytes: ~536 KB, far more than a socket buffer */

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

int main(void)
{
    unsigned int i, j;

    uart_init();
    for (i = 0; i < LINES; i++) {
        unsigned int x = i * 2654435761u + 1u;
        char line[68];
        unsigned int n = i;
        for (j = 5; j-- > 0;) {
            line[j] = (char)('0' + n % 10u);
            n /= 10u;
        }
        line[5] = ':';
        for (j = 0; j < 60; j++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            line[6 + j] = alphabet[x % 62u];
        }
        line[66] = '\n';
        line[67] = '\0';
        uart_puts(line);
    }
    uart_puts("DONE\n");
    for (;;) {
    }
}
