/* Rule group 7: SysTick.
 *  - reset values and CALIB; RVR keeps 24 bits; any CVR write clears the counter and COUNTFLAG;
 *  - COUNTFLAG is set when the counter goes from 1 to 0 (not by the reload from the 0 a CVR write
 *    left), read as 1 once and cleared by that read;
 *  - RVR=0: the counter stops at 0 (one COUNTFLAG for reaching it) until RVR is set again;
 *  - CLKSOURCE: against APB timer 0 (25 MHz bus clock), the processor clock runs at the same rate
 *    and the reference clock 25 times slower (1 MHz on mps2); printed as a rounded ratio;
 *  - TICKINT: the exception, and ICSR.PENDSTSET/PENDSTCLR.
 * Spins are bounded; a line shows "timeout" if one ran out. */
#include "probe.h"

#define CSR_ENABLE      (1u << 0)
#define CSR_TICKINT     (1u << 1)
#define CSR_CLKSOURCE   (1u << 2)
#define CSR_COUNTFLAG   (1u << 16)
#define ICSR_PENDSTCLR  (1u << 25)
#define SPIN_MAX        2000000u

#define T0_CTRL         REG(0x40000000u)
#define T0_VALUE        REG(0x40000004u)
#define T0_RELOAD       REG(0x40000008u)

static uint32_t timeouts;

static void report_timeouts(void)
{
    if (timeouts)
        kvd("timeout", timeouts);
    timeouts = 0;
}

static void check_reset(void)
{
    uint32_t csr = SYST_CSR, rvr = SYST_RVR, cvr = SYST_CVR, calib = SYST_CALIB;

    SYST_RVR = 0xffffffffu;
    check("reset");
    kv("csr", csr);
    kv("rvr", rvr);
    kv("cvr", cvr);
    kv("calib", calib);
    kv("rvr_ffffffff", SYST_RVR);
    SYST_CVR = 0x12345;
    kv("cvr_after_write", SYST_CVR);
    endl();
}

/* Wait for the counter to leave 0 (the first reload), then for a wrap (the value goes up). */
static uint32_t wait_reload(void)
{
    uint32_t i, v = 0;

    for (i = 0; i < SPIN_MAX && (v = SYST_CVR) == 0; i++) {
    }
    if (i == SPIN_MAX)
        timeouts++;
    return v;
}

static void wait_wrap(void)
{
    uint32_t i, prev = SYST_CVR, now;

    for (i = 0; i < SPIN_MAX; i++) {
        now = SYST_CVR;
        if (now > prev)
            return;
        prev = now;
    }
    timeouts++;
}

static void check_countflag(void)
{
    uint32_t first_reload, after_reload, wrapped1, wrapped2, cleared_by_cvr, stopped1, stopped2;

    SYST_CSR = 0;
    SYST_RVR = 0x3ff;
    SYST_CVR = 0;
    SYST_CSR = CSR_ENABLE | CSR_CLKSOURCE;
    first_reload = wait_reload();
    after_reload = SYST_CSR & CSR_COUNTFLAG;
    wait_wrap();
    SYST_CSR = CSR_CLKSOURCE;   /* stop: no further wrap between the reads */
    stopped1 = SYST_CVR;
    wrapped1 = SYST_CSR & CSR_COUNTFLAG;
    wrapped2 = SYST_CSR & CSR_COUNTFLAG;
    stopped2 = SYST_CVR;
    SYST_CSR = CSR_ENABLE | CSR_CLKSOURCE;
    wait_wrap();
    SYST_CSR = CSR_CLKSOURCE;
    SYST_CVR = 0;
    cleared_by_cvr = SYST_CSR & CSR_COUNTFLAG;
    check("countflag");
    kv("first_reload_le_rvr", first_reload <= 0x3ff);
    kv("after_first_reload", after_reload);
    kv("after_wrap", wrapped1);
    kv("second_read", wrapped2);
    kv("stopped_holds", stopped1 == stopped2);
    kv("after_cvr_write", cleared_by_cvr);
    report_timeouts();
    endl();
}

static void check_reload_zero(void)
{
    uint32_t i, at_zero, flag1, flag2, still, restarted;

    SYST_CSR = 0;
    SYST_RVR = 0x3ff;
    SYST_CVR = 0;
    SYST_CSR = CSR_ENABLE | CSR_CLKSOURCE;
    wait_reload();
    (void)SYST_CSR;             /* clear COUNTFLAG */
    SYST_RVR = 0;               /* the counter runs down to 0 and stays there */
    for (i = 0; i < SPIN_MAX && SYST_CVR != 0; i++) {
    }
    if (i == SPIN_MAX)
        timeouts++;
    at_zero = SYST_CVR;
    flag1 = SYST_CSR & CSR_COUNTFLAG;
    for (i = 0; i < 3000; i++)  /* several former periods */
        __asm volatile("");
    still = SYST_CVR;
    flag2 = SYST_CSR & CSR_COUNTFLAG;
    check("reload_zero");
    kv("cvr", at_zero);
    kv("countflag", flag1);
    kv("cvr_later", still);
    kv("countflag_later", flag2);
    report_timeouts();
    endl();
    /* The counter reloads RVR whenever it is 0 and ticks (ARMv7-M B3.3): with RVR set again it
     * counts again, without touching CSR. */
    SYST_RVR = 0x3ff;
    restarted = wait_reload();
    SYST_CSR = 0;
    check("reload_zero_restart");
    kv("restarts_le_rvr", restarted != 0 && restarted <= 0x3ff);
    report_timeouts();
    endl();
}

/* SysTick and APB timer 0 started together; elapsed ticks compared after a busy loop. */
static uint32_t clock_ratio(uint32_t clksource)
{
    uint32_t s0, s1, t0, t1, i, ds, dt;

    T0_CTRL = 0;
    T0_RELOAD = 0xffffffffu;
    T0_VALUE = 0xffffffffu;
    T0_CTRL = 1;
    SYST_CSR = 0;
    SYST_RVR = 0xffffff;
    SYST_CVR = 0;
    SYST_CSR = CSR_ENABLE | clksource;
    wait_reload();
    s0 = SYST_CVR;
    t0 = T0_VALUE;
    for (i = 0; i < 300000u; i++)
        __asm volatile("");
    s1 = SYST_CVR;
    t1 = T0_VALUE;
    SYST_CSR = 0;
    T0_CTRL = 0;
    ds = s0 - s1;
    dt = t0 - t1;
    if (ds == 0)
        return 0xffffffffu;
    return (dt + ds / 2) / ds;
}

static void check_clksource(void)
{
    uint32_t cpu = clock_ratio(CSR_CLKSOURCE), ref = clock_ratio(0);

    check("clksource");
    kvd("timer_per_tick_cpu", cpu);
    kvd("timer_per_tick_ref", ref);
    report_timeouts();
    endl();
}

static volatile uint32_t ticks, tick_icsr;

void SysTick_Handler(void)
{
    if (++ticks == 3)
        SYST_CSR = CSR_CLKSOURCE;       /* stop: the count does not depend on thread timing */
    tick_icsr = SCB_ICSR;
}

static void check_tickint(void)
{
    uint32_t i, n, pend_set, pend_clr, after_clr;

    ticks = 0;
    SYST_CSR = 0;
    SYST_RVR = 0x3ff;
    SYST_CVR = 0;
    SYST_CSR = CSR_ENABLE | CSR_TICKINT | CSR_CLKSOURCE;
    for (i = 0; i < SPIN_MAX && ticks < 3; i++) {
    }
    if (i == SPIN_MAX)
        timeouts++;
    SYST_CSR = CSR_CLKSOURCE;
    n = ticks;
    __asm volatile("cpsid i" ::: "memory");
    SCB_ICSR = ICSR_PENDSTSET;
    barrier();
    pend_set = SCB_ICSR;
    SCB_ICSR = ICSR_PENDSTCLR;
    barrier();
    pend_clr = SCB_ICSR;
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    after_clr = ticks;
    SCB_ICSR = ICSR_PENDSTSET;  /* taken at once */
    barrier();
    check("tickint");
    kvd("ticks", n);
    kv("icsr_in_handler", tick_icsr);
    kv("icsr_pendst", pend_set);
    kv("icsr_cleared", pend_clr);
    kvd("ticks_after_clear", after_clr);
    kvd("ticks_after_set", ticks);
    report_timeouts();
    endl();
}

int main(void)
{
    probe_init("systick");
    check_reset();
    check_countflag();
    check_reload_zero();
    check_clksource();
    check_tickint();
    done();
}
