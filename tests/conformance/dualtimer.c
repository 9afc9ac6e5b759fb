/* Rule group 10b: the CMSDK APB dual timer at 0x40002000 (IRQ 10 on mps2-an385; QEMU models it).
 * Timer n (1, 2) at +0x20*(n-1): Load +0, Value +4, Control +8 (bit 7 enable, 6 periodic,
 * 5 interrupt enable, 3:2 prescale, 1 32-bit size, 0 one-shot), IntClr +0xC, RIS +0x10, MIS +0x14,
 * BGLoad +0x18; ITCR +0xF00; ID registers +0xFD0..+0xFFC.
 *  - reset values; with a timer stopped: Load sets Value, BGLoad sets Load but not Value;
 *  - one-shot: counts to 0 and stays, RIS set, MIS only with the interrupt enable, IntClr;
 *  - free-running: wraps to the top of its 16- or 32-bit range; periodic: reloads Load;
 *  - the interrupt (periodic, three times);
 *  - prescale 1, 16, 256: the rate against APB timer 0 on the same 25 MHz clock (rounded ratio).
 * Values read while a timer runs depend on timing: only comparisons are printed. */
#include "probe.h"

#define DT_BASE         0x40002000u
#define DT_LOAD(n)      REG(DT_BASE + 0x20u * ((n) - 1u) + 0x00u)
#define DT_VALUE(n)     REG(DT_BASE + 0x20u * ((n) - 1u) + 0x04u)
#define DT_CTRL(n)      REG(DT_BASE + 0x20u * ((n) - 1u) + 0x08u)
#define DT_INTCLR(n)    REG(DT_BASE + 0x20u * ((n) - 1u) + 0x0Cu)
#define DT_RIS(n)       REG(DT_BASE + 0x20u * ((n) - 1u) + 0x10u)
#define DT_MIS(n)       REG(DT_BASE + 0x20u * ((n) - 1u) + 0x14u)
#define DT_BGLOAD(n)    REG(DT_BASE + 0x20u * ((n) - 1u) + 0x18u)
#define DT_ITCR         REG(DT_BASE + 0xF00u)
#define DT_ID(i)        REG(DT_BASE + 0xFD0u + 4u * (i))
#define C_EN            (1u << 7)
#define C_PERIODIC      (1u << 6)
#define C_IE            (1u << 5)
#define C_PRESCALE(p)   ((p) << 2)
#define C_32BIT         (1u << 1)
#define C_ONESHOT       (1u << 0)
#define DT_IRQ          10u
#define SPIN_MAX        200000u

#define T0_CTRL         REG(0x40000000u)
#define T0_VALUE        REG(0x40000004u)
#define T0_RELOAD       REG(0x40000008u)

static volatile uint32_t hits, mis_in_handler;

void IRQ10_Handler(void)
{
    mis_in_handler = DT_MIS(1);
    DT_INTCLR(1) = 1;
    if (++hits == 3)
        DT_CTRL(1) = 0;         /* the count does not depend on how soon thread code sees it */
}

static void timeout_if(uint32_t i)
{
    if (i >= SPIN_MAX)
        kvs("timeout", "1");
}

static void check_reset(void)
{
    uint32_t n, i;

    for (n = 1; n <= 2; n++) {
        check(n == 1 ? "reset_timer1" : "reset_timer2");
        kv("load", DT_LOAD(n));
        kv("value", DT_VALUE(n));
        kv("control", DT_CTRL(n));
        kv("ris", DT_RIS(n));
        kv("mis", DT_MIS(n));
        kv("bgload", DT_BGLOAD(n));
        endl();
    }
    check("ids");
    kv("itcr", DT_ITCR);
    kvs("ids", "");
    for (i = 0; i < 12; i++) {
        uart_putc("0123456789abcdef"[(DT_ID(i) >> 4) & 0xfu]);
        uart_putc("0123456789abcdef"[DT_ID(i) & 0xfu]);
    }
    endl();
}

static void check_stopped(void)
{
    uint32_t ctrl, v_load, l_bg, v_bg, v16;

    DT_CTRL(1) = 0x7f;          /* everything but enable */
    ctrl = DT_CTRL(1);
    DT_CTRL(1) = C_32BIT;
    DT_LOAD(1) = 0x12345678u;
    v_load = DT_VALUE(1);
    DT_BGLOAD(1) = 0x1000;
    l_bg = DT_LOAD(1);
    v_bg = DT_VALUE(1);
    DT_CTRL(1) = 0;             /* 16-bit */
    DT_LOAD(1) = 0x12345678u;
    v16 = DT_VALUE(1);
    check("stopped_regs");
    kv("control_7f", ctrl);
    kv("value_after_load", v_load);
    kv("load_after_bgload", l_bg);
    kv("value_after_bgload", v_bg);
    kv("load_16bit", DT_LOAD(1));
    kv("value_16bit", v16);
    endl();
    DT_CTRL(1) = 0;
}

static void check_oneshot(void)
{
    uint32_t i, v0, v1, ris, mis, mis_ie, ris_clr, ctrl;

    DT_CTRL(1) = 0;
    DT_INTCLR(1) = 1;
    DT_LOAD(1) = 1000;
    DT_CTRL(1) = C_EN | C_32BIT | C_ONESHOT;
    for (i = 0; i < SPIN_MAX && !DT_RIS(1); i++) {
    }
    v0 = DT_VALUE(1);
    ris = DT_RIS(1);
    mis = DT_MIS(1);
    ctrl = DT_CTRL(1);
    for (i = 0; i < 20000; i++)
        __asm volatile("");
    v1 = DT_VALUE(1);
    DT_CTRL(1) = C_EN | C_32BIT | C_ONESHOT | C_IE;
    mis_ie = DT_MIS(1);
    DT_INTCLR(1) = 1;
    ris_clr = DT_RIS(1);
    DT_CTRL(1) = 0;
    unpend_irq(DT_IRQ);
    check("oneshot");
    kv("value", v0);
    kv("value_later", v1);
    kv("ris", ris);
    kv("mis_no_ie", mis);
    kv("control", ctrl);
    kv("mis_ie", mis_ie);
    kv("ris_after_intclr", ris_clr);
    timeout_if(i);
    endl();
}

/* Free-running (periodic bit clear) wraps to the top of the counter; periodic reloads Load. */
static uint32_t wrap_value(uint32_t ctrl)
{
    uint32_t i, prev, now = 0;

    DT_CTRL(1) = 0;
    DT_INTCLR(1) = 1;
    DT_LOAD(1) = 1000;
    DT_CTRL(1) = C_EN | ctrl;
    prev = DT_VALUE(1);
    for (i = 0; i < SPIN_MAX; i++) {
        now = DT_VALUE(1);
        if (now > prev)
            break;
        prev = now;
    }
    DT_CTRL(1) = 0;
    DT_INTCLR(1) = 1;
    return i >= SPIN_MAX ? 0xdeadu : now;
}

static void check_wrap(void)
{
    uint32_t free32 = wrap_value(C_32BIT), free16 = wrap_value(0), per = wrap_value(C_32BIT | C_PERIODIC);

    check("wrap");
    kv("free32_high", free32 > 0x10000000u);
    kv("free16_high", free16 > 1000u && free16 <= 0xffffu);
    kv("periodic_le_load", per <= 1000u);
    endl();
}

static void check_irq(void)
{
    uint32_t i;

    hits = 0;
    unpend_irq(DT_IRQ);
    enable_irq(DT_IRQ);
    DT_CTRL(1) = 0;
    DT_INTCLR(1) = 1;
    DT_LOAD(1) = 2000;
    DT_CTRL(1) = C_EN | C_PERIODIC | C_IE | C_32BIT;
    for (i = 0; i < SPIN_MAX && hits < 3; i++) {
    }
    DT_CTRL(1) = 0;
    disable_irq(DT_IRQ);
    check("irq");
    kv("hits", hits);
    kv("mis_in_handler", mis_in_handler);
    kv("ris_after", DT_RIS(1));
    timeout_if(i);
    endl();
}

/* Ticks of APB timer 0 per tick of dual timer 1 at prescale setting p. */
static uint32_t prescale_ratio(uint32_t p)
{
    uint32_t d0, d1, t0, t1, i, dd, dt;

    T0_CTRL = 0;
    T0_RELOAD = 0xffffffffu;
    T0_VALUE = 0xffffffffu;
    DT_CTRL(1) = 0;
    DT_LOAD(1) = 0xffffffffu;
    T0_CTRL = 1;
    DT_CTRL(1) = C_EN | C_PERIODIC | C_32BIT | C_PRESCALE(p);
    d0 = DT_VALUE(1);
    t0 = T0_VALUE;
    for (i = 0; i < 1000000u; i++)
        __asm volatile("");
    d1 = DT_VALUE(1);
    t1 = T0_VALUE;
    T0_CTRL = 0;
    DT_CTRL(1) = 0;
    dd = d0 - d1;
    dt = t0 - t1;
    return dd ? (dt + dd / 2) / dd : 0xffffffffu;
}

static void check_prescale(void)
{
    uint32_t r1 = prescale_ratio(0), r16 = prescale_ratio(1), r256 = prescale_ratio(2);

    check("prescale");
    kvd("div1", r1);
    kvd("div16", r16);
    kvd("div256", r256);
    endl();
}

static void check_timer2(void)
{
    uint32_t i, v, ris;

    DT_CTRL(2) = 0;
    DT_INTCLR(2) = 1;
    DT_LOAD(2) = 500;
    DT_CTRL(2) = C_EN | C_32BIT | C_ONESHOT;
    for (i = 0; i < SPIN_MAX && !DT_RIS(2); i++) {
    }
    v = DT_VALUE(2);
    ris = DT_RIS(2);
    DT_INTCLR(2) = 1;
    DT_CTRL(2) = 0;
    check("timer2_oneshot");
    kv("value", v);
    kv("ris", ris);
    kv("timer1_ris", DT_RIS(1));
    timeout_if(i);
    endl();
}

int main(void)
{
    probe_init("dualtimer");
    check_reset();
    check_stopped();
    check_oneshot();
    check_wrap();
    check_irq();
    check_prescale();
    check_timer2();
    done();
}
