/* Interrupt load for mps2-an385, in the pattern of an RTOS's interrupt-queue demo: the two CMSDK
 * APB timers interrupt at 2 kHz each at two priorities (TIMER1 preempts TIMER0's handler), each
 * handler passes values to main through a queue inside a BASEPRI critical section, and main takes
 * them out inside critical sections of its own between stretches of work. Once a second of the
 * board's time (2,000 TIMER0 interrupts) main prints what it counted. The counts depend on where the
 * interrupts fall between instructions, so a deterministic session prints the same lines on every
 * run of one backend (QEMU's -icount runs 1.25 instructions a cycle, the built-in engine one: their
 * lines differ). benchmarks/bench_builtin.py measures the built-in engine's speed on it. */

#include <stdint.h>
#include "uart.h"

#define REG(addr)       (*(volatile uint32_t *)(addr))
#define TIMER0_BASE     0x40000000u
#define TIMER1_BASE     0x40001000u
#define TIMER_CTRL(b)   REG((b) + 0x00)
#define TIMER_VALUE(b)  REG((b) + 0x04)
#define TIMER_RELOAD(b) REG((b) + 0x08)
#define TIMER_INTCLR(b) REG((b) + 0x0C)
#define CTRL_ENABLE     (1u << 0)
#define CTRL_IRQ_EN     (1u << 3)
#define TIMER0_IRQ      8u
#define TIMER1_IRQ      9u
#define NVIC_ISER0      REG(0xE000E100u)
#define NVIC_IPR        ((volatile uint8_t *)0xE000E400u)

#define CLOCK_HZ        25000000u
#define TICK_HZ         2000u
/* What a kernel masks in its critical sections: priorities 0x40 and below in urgency (both timers). */
#define MASK_PRIORITY   0x40u

#define QUEUE_LEN       64u

static volatile uint32_t queue[QUEUE_LEN];
static volatile uint32_t q_head, q_tail, q_dropped;
static volatile uint32_t t0_count, t1_count, nested, in_t0;

static inline uint32_t mask(void)
{
    uint32_t old;
    __asm volatile("mrs %0, basepri" : "=r"(old));
    __asm volatile("msr basepri, %0\n\tisb" :: "r"(MASK_PRIORITY) : "memory");
    return old;
}

static inline void unmask(uint32_t old)
{
    __asm volatile("msr basepri, %0" :: "r"(old) : "memory");
}

static void push(uint32_t v)
{
    uint32_t old = mask();
    uint32_t next = (q_head + 1u) % QUEUE_LEN;

    if (next == q_tail)
        q_dropped++;
    else {
        queue[q_head] = v;
        q_head = next;
    }
    unmask(old);
}

/* TIMER0: the less urgent one (priority 0x80). */
void IRQ8_Handler(void)
{
    TIMER_INTCLR(TIMER0_BASE) = 1u;
    in_t0 = 1u;
    t0_count++;
    push(t0_count * 2654435761u);
    for (volatile int i = 0; i < 20; i++) {
    }  /* a handler long enough for TIMER1 to land in it now and then */
    in_t0 = 0u;
}

/* TIMER1: the more urgent one (priority 0x40), preempts TIMER0's handler. */
void IRQ9_Handler(void)
{
    TIMER_INTCLR(TIMER1_BASE) = 1u;
    if (in_t0)
        nested++;
    t1_count++;
    push(t1_count ^ 0x5bd1e995u);
}

static void timer_start(uint32_t base, uint32_t reload)
{
    TIMER_RELOAD(base) = reload;
    TIMER_VALUE(base) = reload;
    TIMER_CTRL(base) = CTRL_ENABLE | CTRL_IRQ_EN;
}

int main(void)
{
    uint32_t sum = 0, items = 0, work = 0, seconds = 0;

    uart_init();
    uart_puts("irqload: two timers at 2 kHz, BASEPRI critical sections\n");
    NVIC_IPR[TIMER0_IRQ] = 0x80u;
    NVIC_IPR[TIMER1_IRQ] = 0x40u;
    NVIC_ISER0 = (1u << TIMER0_IRQ) | (1u << TIMER1_IRQ);
    /* TIMER1 a little slower, so the two drift through each other's phases. */
    timer_start(TIMER0_BASE, CLOCK_HZ / TICK_HZ - 1u);
    timer_start(TIMER1_BASE, CLOCK_HZ / TICK_HZ + 7u);

    for (;;) {
        uint32_t old = mask();

        while (q_tail != q_head) {
            sum = (sum << 5 | sum >> 27) ^ queue[q_tail];
            q_tail = (q_tail + 1u) % QUEUE_LEN;
            items++;
        }
        for (volatile int i = 0; i < 30; i++) {
            work++;  /* work inside the critical section: interrupts pend, masked, until it ends */
        }
        unmask(old);
        for (volatile int i = 0; i < 30; i++) {
            work++;
        }
        if (t0_count >= (seconds + 1u) * TICK_HZ) {
            seconds++;
            uart_puts("second ");
            uart_putu(seconds);
            uart_puts(": t0 ");
            uart_putu(t0_count);
            uart_puts(" t1 ");
            uart_putu(t1_count);
            uart_puts(" nested ");
            uart_putu(nested);
            uart_puts(" items ");
            uart_putu(items);
            uart_puts(" dropped ");
            uart_putu(q_dropped);
            uart_puts(" sum ");
            uart_putu(sum);
            uart_putc('\n');
        }
    }
}
