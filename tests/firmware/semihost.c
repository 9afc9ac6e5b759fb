/* semihost: the ARM semihosting calls firmware makes at boot (tests/test_semihosting.py).
 * Writes a file next to it, reads back the file it was given, tries a path outside its folder,
 * prints through the debug console (SYS_WRITE0) and the UART, and ends with SYS_EXIT. */

#include "uart.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_FLEN 0x0C
#define SYS_EXIT 0x18
#define ADP_Stopped_ApplicationExit 0x20026

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static unsigned int length(const char *s)
{
    unsigned int n = 0;
    while (s[n])
        n++;
    return n;
}

static int open_file(const char *name, int mode)
{
    unsigned int args[3] = {(unsigned int)name, (unsigned int)mode, length(name)};
    return semihost(SYS_OPEN, args);
}

int main(void)
{
    static const char text[] = "written by the firmware\n";
    char buf[64];
    unsigned int args[3];
    int fd, n;

    uart_init();
    semihost(SYS_WRITE0, "semihosting: hello\n");

    fd = open_file("note.txt", 4); /* "w" */
    args[0] = (unsigned int)fd; args[1] = (unsigned int)text; args[2] = sizeof text - 1;
    n = semihost(SYS_WRITE, args); /* bytes NOT written */
    semihost(SYS_CLOSE, &fd);
    uart_puts(fd >= 0 && n == 0 ? "note: written\n" : "note: failed\n");

    fd = open_file("input.txt", 0); /* "r" */
    if (fd >= 0) {
        args[0] = (unsigned int)fd; args[1] = (unsigned int)buf; args[2] = sizeof buf - 1;
        n = semihost(SYS_READ, args); /* bytes NOT read */
        buf[sizeof buf - 1 - n] = 0;
        semihost(SYS_CLOSE, &fd);
        uart_puts("input: ");
        uart_puts(buf);
    } else {
        uart_puts("input: none\n");
    }

    fd = open_file("../../../../../../../../etc/hostname", 0);
    uart_puts(fd >= 0 ? "outside: opened\n" : "outside: refused\n");

    uart_puts("exiting\n");
    semihost(SYS_EXIT, (void *)ADP_Stopped_ApplicationExit);
    uart_puts("still running after SYS_EXIT\n");
    for (;;) {
    }
}
