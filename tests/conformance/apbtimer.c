/* Rule group 10a: the CMSDK APB timers (TIMER0 at 0x40000000, IRQ 8; TIMER1 at 0x40001000, IRQ 9).
 * Registers: CTRL (+0: enable, external input enable, external clock, interrupt enable), VALUE
 * (+4), RELOAD (+8), INTSTATUS/INTCLEAR (+0xC), ID registers (+0xFD0..+0xFFC).
 *  - reset values, which CTRL bits are kept, ID registers;
 *  - with the timer stopped: VALUE writes read back, a RELOAD write also sets VALUE;
 *  - counting down, the reload at 0, INTSTATUS with and without the interrupt enable, INTCLEAR,
 *    the interrupt line into the NVIC (pending although disabled there) and the IRQ handler;
 *  - RELOAD=0: the counter stops at 0.
 * Values read while a timer runs depend on timing: only comparisons are printed. */
#include "probe.h"

#define T_CTRL(b)       REG((b) + 0x00u)
#define T_VALUE(b)      REG((b) + 0x04u)
#define T_RELOAD(b)     REG((b) + 0x08u)
#define T_INT(b)        REG((b) + 0x0Cu)
#define T_ID(b, i)      REG((b) + 0xFD0u + 4u * (i))
#define TIMER0          0x40000000u
#define TIMER1          0x40001000u
#define CTRL_EN         (1u << 0)
#define CTRL_IE         (1u << 3)
#define SPIN_MAX        200000u

static uint32_t timeouts;
static volatile uint32_t hits[2], int_in_handler[2];

/* Stops its timer at the third interrupt, so the count does not depend on how soon thread code
 * sees it. */
static void timer_irq(uint32_t n, uint32_t base)
{
    int_in_handler[n] = T_INT(base);
    T_INT(base) = 1;
    if (++hits[n] == 3)
        T_CTRL(base) = 0;
}

void IRQ8_Handler(void) { timer_irq(0, TIMER0); }
void IRQ9_Handler(void) { timer_irq(1, TIMER1); }

static void check_reset(const char *name, uint32_t base)
{
    uint32_t i;

    check(name);
    kv("ctrl", T_CTRL(base));
    kv("value", T_VALUE(base));
    kv("reload", T_RELOAD(base));
    kv("intstatus", T_INT(base));
    kvs("ids", "");
    for (i = 0; i < 12; i++) {
        uart_putc("0123456789abcdef"[(T_ID(base, i) >> 4) & 0xfu]);
        uart_putc("0123456789abcdef"[T_ID(base, i) & 0xfu]);
    }
    endl();
}

static void check_registers(uint32_t base)
{
    uint32_t ctrl_ff, value, reload_sets;

    T_CTRL(base) = 0xfe;        /* everything but enable */
    ctrl_ff = T_CTRL(base);
    T_CTRL(base) = 0;
    T_VALUE(base) = 0x12345678u;
    value = T_VALUE(base);
    T_RELOAD(base) = 0x1000;
    reload_sets = T_VALUE(base);
    check("stopped_regs");
    kv("ctrl_fe", ctrl_ff);
    kv("value", value);
    kv("value_after_reload_write", reload_sets);
    kv("reload", T_RELOAD(base));
    endl();
}

/* Counting without the interrupt enable: down, reload at 0 (seen as the value going up). */
static void check_count(uint32_t base)
{
    uint32_t i, first, prev, now, wrapped = 0, went_down, intstatus, stopped1, stopped2;

    T_CTRL(base) = 0;
    T_INT(base) = 1;
    T_RELOAD(base) = 3000;
    T_VALUE(base) = 3000;
    T_CTRL(base) = CTRL_EN;
    first = prev = T_VALUE(base);
    went_down = 0;
    for (i = 0; i < SPIN_MAX && !wrapped; i++) {
        now = T_VALUE(base);
        went_down |= now < prev;
        wrapped = now > prev;
        prev = now;
    }
    if (i == SPIN_MAX)
        timeouts++;
    intstatus = T_INT(base);
    T_CTRL(base) = 0;
    stopped1 = T_VALUE(base);
    for (i = 0; i < 1000; i++)
        __asm volatile("");
    stopped2 = T_VALUE(base);
    check("count_no_ie");
    kv("first_le_reload", first <= 3000);
    kv("went_down", went_down);
    kv("wrapped_le_reload", prev <= 3000);
    kv("intstatus", intstatus);
    kv("stopped_holds", stopped1 == stopped2);
    if (timeouts)
        kvd("timeout", timeouts);
    timeouts = 0;
    endl();
}

/* Interrupt enable set, NVIC line disabled: INTSTATUS rises, the NVIC latches the line as pending;
 * INTCLEAR drops INTSTATUS, the NVIC keeps its pending bit until cleared there. */
static void check_intstatus(uint32_t base, uint32_t irq)
{
    uint32_t i, st, pend, st_cleared, pend_after_clear, pend_icpr;

    disable_irq(irq);
    unpend_irq(irq);
    T_CTRL(base) = 0;
    T_INT(base) = 1;
    T_RELOAD(base) = 3000;
    T_VALUE(base) = 3000;
    T_CTRL(base) = CTRL_EN | CTRL_IE;
    for (i = 0; i < SPIN_MAX && !T_INT(base); i++) {
    }
    if (i == SPIN_MAX)
        timeouts++;
    T_CTRL(base) = 0;
    st = T_INT(base);
    pend = irq_pending(irq);
    T_INT(base) = 1;
    st_cleared = T_INT(base);
    pend_after_clear = irq_pending(irq);
    unpend_irq(irq);
    pend_icpr = irq_pending(irq);
    check("intstatus_ie");
    kv("intstatus", st);
    kv("nvic_pending", pend);
    kv("intstatus_cleared", st_cleared);
    kv("nvic_pending_after_intclear", pend_after_clear);
    kv("nvic_pending_after_icpr", pend_icpr);
    if (timeouts)
        kvd("timeout", timeouts);
    timeouts = 0;
    endl();
}

/* The interrupt, three times (periodic), then stopped. */
static void check_irq(uint32_t n, uint32_t base, uint32_t irq)
{
    uint32_t i;

    hits[n] = 0;
    unpend_irq(irq);
    enable_irq(irq);
    T_CTRL(base) = 0;
    T_INT(base) = 1;
    T_RELOAD(base) = 2000;
    T_VALUE(base) = 2000;
    T_CTRL(base) = CTRL_EN | CTRL_IE;
    for (i = 0; i < SPIN_MAX && hits[n] < 3; i++) {
    }
    T_CTRL(base) = 0;
    disable_irq(irq);
    check(n ? "irq_timer1" : "irq_timer0");
    kv("hits", hits[n]);
    kv("intstatus_in_handler", int_in_handler[n]);
    kv("intstatus_after", T_INT(base));
    if (i == SPIN_MAX)
        kvs("timeout", "1");
    endl();
}

/* RELOAD=0: counting down from VALUE, the timer reaches 0 and stays there. */
static void check_reload_zero(uint32_t base)
{
    uint32_t i, v0, v1, st;

    T_CTRL(base) = 0;
    T_INT(base) = 1;
    T_RELOAD(base) = 0;
    T_VALUE(base) = 2000;
    T_CTRL(base) = CTRL_EN | CTRL_IE;
    for (i = 0; i < SPIN_MAX && T_VALUE(base) != 0; i++) {
    }
    if (i == SPIN_MAX)
        timeouts++;
    v0 = T_VALUE(base);
    for (i = 0; i < 20000; i++)
        __asm volatile("");
    v1 = T_VALUE(base);
    st = T_INT(base);
    T_CTRL(base) = 0;
    T_INT(base) = 1;
    unpend_irq(8);
    check("reload_zero");
    kv("value", v0);
    kv("value_later", v1);
    kv("intstatus", st);
    if (timeouts)
        kvd("timeout", timeouts);
    timeouts = 0;
    endl();
}

int main(void)
{
    probe_init("apbtimer");
    check_reset("reset_timer0", TIMER0);
    check_reset("reset_timer1", TIMER1);
    check_registers(TIMER0);
    check_count(TIMER0);
    check_intstatus(TIMER0, 8);
    check_irq(0, TIMER0, 8);
    check_irq(1, TIMER1, 9);
    check_reload_zero(TIMER0);
    done();
}
