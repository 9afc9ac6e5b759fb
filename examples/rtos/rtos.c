/* A tiny preemptive round-robin kernel for QEMU's mps2-an385 (Cortex-M3).
 *
 * Three tasks run in thread mode on their own process stacks. SysTick (1 ms) pends PendSV every
 * tick and PendSV (context.S) switches to the next task, so a task that spins is preempted.
 * Services are SVCs: 0 starts the first task (from main), 1 yields, 2 returns the tick count.
 *
 * The output does not depend on timing: tasks A and B take turns through a shared variable,
 * so their lines come in the same order however the ticks fall. A spins while waiting (only a
 * SysTick-driven switch lets B run), B and the echo task yield while waiting. Then the echo
 * task prints lines received on UART0 (RX interrupt) back as "echo: <line>". */

#include <stdint.h>
#include "uart.h"

#define REG(addr)           (*(volatile uint32_t *)(addr))
#define SYST_CSR            REG(0xE000E010u)
#define SYST_RVR            REG(0xE000E014u)
#define SYST_CVR            REG(0xE000E018u)
#define NVIC_ISER0          REG(0xE000E100u)
#define NVIC_ISPR0          REG(0xE000E200u)
#define NVIC_IPR            ((volatile uint8_t *)0xE000E400u)
#define SCB_ICSR            REG(0xE000ED04u)
#define SCB_SHPR3           REG(0xE000ED20u)
#define UART0_CTRL          REG(0x40004008u)
#define UART0_INTCLEAR      REG(0x4000400Cu)

#define ICSR_PENDSVSET      (1u << 28)
#define UART_CTRL_RXINTEN   (1u << 3)
#define UART_INT_RX         (1u << 1)
#define UART0_RX_IRQ        0
#define XPSR_THUMB          (1u << 24)

#define CPU_CLOCK_HZ        25000000u
#define TICK_HZ             1000u

#define SVC_START           0
#define SVC_YIELD           1
#define SVC_TICKS           2

#define N_TASKS             3
#define STACK_WORDS         256
#define STEPS               5
#define WORK_LOOPS          20000u  /* long enough to be preempted under icount, short for plain */

/* Task control block. context.S relies on sp being the first field. */
struct tcb {
    uint32_t *sp;               /* saved stack pointer while the task is switched out */
    volatile int finished;      /* returned from its entry function: never scheduled again */
};

struct tcb tasks[N_TASKS];
struct tcb *volatile current_task;      /* used by context.S */
static uint32_t stacks[N_TASKS][STACK_WORDS] __attribute__((aligned(8)));

volatile unsigned int tick_count;

/* ---- kernel ---- */

/* Called by PendSV with the outgoing task's stack pointer; returns the next task's. */
uint32_t *rtos_switch(uint32_t *sp)
{
    struct tcb *t = current_task;

    t->sp = sp;
    do {
        t = (t == &tasks[N_TASKS - 1]) ? &tasks[0] : t + 1;
    } while (t->finished);      /* the echo task never finishes */
    current_task = t;
    return t->sp;
}

void SysTick_Handler(void)
{
    tick_count++;
    SCB_ICSR = ICSR_PENDSVSET;
}

/* Called from the svc 0 path of context.S, so the first tick cannot come before a task runs. */
void systick_start(void)
{
    SYST_RVR = CPU_CLOCK_HZ / TICK_HZ - 1;
    SYST_CVR = 0;
    SYST_CSR = 7;               /* processor clock, interrupt, enable */
}

/* SVCs other than 0. The result goes into the stacked r0, which the caller gets back in r0. */
void svc_dispatch(uint32_t *frame, uint32_t number)
{
    switch (number) {
    case SVC_YIELD:
        SCB_ICSR = ICSR_PENDSVSET;      /* PendSV runs right after this handler returns */
        break;
    case SVC_TICKS:
        frame[0] = tick_count;
        break;
    default:
        break;
    }
}

static void yield(void)
{
    __asm volatile("svc %0" :: "i"(SVC_YIELD) : "memory");
}

static unsigned int get_ticks(void)
{
    register unsigned int r0 __asm("r0");

    __asm volatile("svc %1" : "=r"(r0) : "i"(SVC_TICKS) : "memory");
    return r0;
}

/* A task whose entry function returns lands here (its initial lr). */
static void task_exit(void)
{
    current_task->finished = 1;
    for (;;)
        yield();
}

/* Lay out a frame as if the task had been switched out just before its first instruction:
 * r4-r11, then the hardware frame r0-r3, r12, lr, pc, xPSR. */
static void task_init(struct tcb *t, uint32_t *stack_top, void (*entry)(void))
{
    uint32_t *sp = stack_top - 16;
    int i;

    for (i = 0; i < 16; i++)
        sp[i] = 0;
    sp[8 + 5] = (uint32_t)task_exit;            /* lr */
    sp[8 + 6] = (uint32_t)entry & ~1u;          /* pc: bit 0 must be clear in a frame */
    sp[8 + 7] = XPSR_THUMB;
    t->sp = sp;
}

/* Whole lines are printed with interrupts off, so no switch can split them. */
static void lock(void) { __asm volatile("cpsid i" ::: "memory"); }
static void unlock(void) { __asm volatile("cpsie i" ::: "memory"); }

static void say(const char *s)
{
    lock();
    uart_puts(s);
    unlock();
}

/* ---- tasks A and B ---- */
static volatile unsigned int turn;      /* 0: A prints next, 1: B prints next */

/* Fixed work whose result depends on registers surviving every preemption in between. */
static uint32_t work(uint32_t x)
{
    uint32_t sum = 0, i;

    for (i = 0; i < WORK_LOOPS; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        sum += x;
    }
    return sum;
}

static void print_step(char name, unsigned int step, uint32_t sum)
{
    lock();
    uart_putc(name);
    uart_puts(": step ");
    uart_putu(step);
    uart_putc('/');
    uart_putu(STEPS);
    uart_puts(" sum ");
    uart_putu(sum);
    uart_putc('\n');
    unlock();
}

static void task_a(void)
{
    unsigned int step;

    for (step = 1; step <= STEPS; step++) {
        while (turn != 0) {
            /* spin: only SysTick's PendSV can hand the CPU to B */
        }
        print_step('A', step, work(step));
        turn = 1;
    }
}

static void task_b(void)
{
    unsigned int step;

    for (step = 1; step <= STEPS; step++) {
        while (turn != 1)
            yield();
        print_step('B', step, work(100 + step));
        turn = 0;
    }
}

/* ---- UART0 receive: the interrupt handler fills a ring buffer, the echo task empties it ---- */
static volatile uint8_t rx_buf[64];
static volatile unsigned int rx_head, rx_tail;  /* head: written by the IRQ, tail: by the task */

void UART0_RX_IRQHandler(void)
{
    int c;

    /* Clear first: a byte arriving while we drain raises the interrupt again. */
    UART0_INTCLEAR = UART_INT_RX;
    while ((c = uart_getc()) >= 0) {
        unsigned int next = (rx_head + 1) % sizeof(rx_buf);

        if (next != rx_tail) {          /* full: drop the byte */
            rx_buf[rx_head] = (uint8_t)c;
            rx_head = next;
        }
    }
}

static int rx_get(void)
{
    int c;

    if (rx_tail == rx_head)
        return -1;
    c = rx_buf[rx_tail];
    rx_tail = (rx_tail + 1) % sizeof(rx_buf);
    return c;
}

static void rx_enable(void)
{
    NVIC_IPR[UART0_RX_IRQ] = 0x40;      /* above SysTick (0x80) and PendSV (0xff) */
    UART0_CTRL |= UART_CTRL_RXINTEN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    /* A byte received before RXINTEN was set raised no interrupt: run the handler once. */
    NVIC_ISPR0 = 1u << UART0_RX_IRQ;
}

/* ---- echo task: waits for A and B, checks an SVC, then echoes lines forever ---- */
static void task_echo(void)
{
    static char line[80];
    unsigned int len = 0, t0, t1, control;
    int c;

    while (!(tasks[0].finished && tasks[1].finished))
        yield();
    say("rtos: tasks done\n");

    /* B could only start after a tick preempted A, so t0 >= 1; after waiting for the next
     * tick the count must have grown. And a task runs on PSP: CONTROL.SPSEL (bit 1) is set. */
    t0 = get_ticks();
    while (tick_count == t0)
        __asm volatile("wfi");
    t1 = get_ticks();
    __asm volatile("mrs %0, control" : "=r"(control));
    say(t0 >= 1 && t1 > t0 && (control & 2u) ? "rtos: svc ok\n" : "rtos: svc FAILED\n");

    rx_enable();
    say("rtos: ready for input\n");
    for (;;) {
        c = rx_get();
        if (c < 0) {
            __asm volatile("wfi");      /* woken by the RX interrupt or the next tick */
        } else if (c == '\n' || c == '\r') {
            if (len) {
                line[len] = '\0';
                lock();
                uart_puts("echo: ");
                uart_puts(line);
                uart_putc('\n');
                unlock();
                len = 0;
            }
        } else if (len < sizeof(line) - 1) {
            line[len++] = (char)c;
        }
    }
}

int main(void)
{
    uart_init();
    say("rtos: start\n");

    task_init(&tasks[0], stacks[0] + STACK_WORDS, task_a);
    task_init(&tasks[1], stacks[1] + STACK_WORDS, task_b);
    task_init(&tasks[2], stacks[2] + STACK_WORDS, task_echo);

    /* PendSV lowest (0xff) so it never preempts another handler; SysTick above it. */
    SCB_SHPR3 = (0x80u << 24) | (0xffu << 16);

    current_task = &tasks[0];
    __asm volatile("svc %0" :: "i"(SVC_START) : "memory");
    for (;;) {
        /* not reached: svc 0 does not return here */
    }
}
