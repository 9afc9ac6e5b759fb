/* Rule group 2: PRIMASK, BASEPRI, BASEPRI_MAX and FAULTMASK.
 *  - what each register reads back after writes (BASEPRI keeps the implemented bits);
 *  - MSR BASEPRI_MAX only ever raises the masking (a lower value that is not 0), never lowers it;
 *  - BASEPRI masks by group priority (PRIGROUP applies);
 *  - IRQs pended while masked are held and then taken in priority order when the mask drops;
 *  - FAULTMASK masks priority 0 too, and an exception return clears it; PRIMASK survives one. */
#include "probe.h"

static void check_readback(void)
{
    uint32_t pm, bp_ff, bp_41, fm;

    set_primask(1);
    pm = get_primask();
    set_primask(0);
    set_basepri(0xff);
    bp_ff = get_basepri();
    set_basepri(0x41);
    bp_41 = get_basepri();
    set_basepri(0);
    set_faultmask(1);
    fm = get_faultmask();
    set_faultmask(0);
    check("readback");
    kv("primask", pm);
    kv("basepri_ff", bp_ff);
    kv("basepri_41", bp_41);
    kv("faultmask", fm);
    kv("after", get_primask() | get_basepri() | get_faultmask());
    endl();
}

static void check_basepri_max(void)
{
    uint32_t a, b, c, d, e;

    set_basepri(0);
    set_basepri_max(0x80);      /* from 0 (no masking): any non-zero value raises it */
    a = get_basepri();
    set_basepri_max(0xc0);      /* weaker masking: ignored */
    b = get_basepri();
    set_basepri_max(0x40);      /* stronger: taken */
    c = get_basepri();
    set_basepri_max(0);         /* 0 would remove the masking: ignored */
    d = get_basepri();
    set_basepri(0xa0);          /* plain BASEPRI may lower it */
    e = get_basepri();
    set_basepri(0);
    check("basepri_max");
    kv("from0", a);
    kv("weaker", b);
    kv("stronger", c);
    kv("zero", d);
    kv("plain", e);
    endl();
}

/* BASEPRI=0x40: sw0 (0x60) and sw1 (0x40) wait, sw2 (0x20) runs at once. Lowering BASEPRI to 0x60
 * lets sw1 in; 0 lets sw0 in. */
static void check_basepri(void)
{
    char at_set[16], at_60[16];
    unsigned int i;
    uint32_t pend_set;

    sw_reset();
    sw_prio(0, 0x60);
    sw_prio(1, 0x40);
    sw_prio(2, 0x20);
    set_basepri(0x40);
    sw_pend(0x1);
    sw_pend(0x2);
    sw_pend(0x4);
    pend_set = sw_pending();
    for (i = 0; i < sizeof(at_set); i++)
        at_set[i] = log_text[i];
    set_basepri(0x60);
    for (i = 0; i < sizeof(at_60); i++)
        at_60[i] = log_text[i];
    set_basepri(0);
    at_set[15] = at_60[15] = '\0';
    check("basepri");
    kvs("at_40", at_set);
    kv("pending_40", pend_set);
    kvs("at_60", at_60);
    kvs("at_0", (const char *)log_text);
    endl();
}

/* With PRIGROUP=5 the group priority is bits 7:6: BASEPRI=0x60 masks as 0x40 does, so sw1 (0x40)
 * waits while sw2 (0x20, group 0) runs. */
static void check_basepri_group(void)
{
    char at[16];
    unsigned int i;

    SCB_AIRCR = AIRCR_VECTKEY | (5u << 8);
    barrier();
    sw_reset();
    sw_prio(1, 0x40);
    sw_prio(2, 0x20);
    set_basepri(0x60);
    sw_pend(0x2);
    sw_pend(0x4);
    for (i = 0; i < sizeof(at); i++)
        at[i] = log_text[i];
    at[15] = '\0';
    set_basepri(0);
    SCB_AIRCR = AIRCR_VECTKEY;
    barrier();
    check("basepri_group");
    kvs("at_60", at);
    kvs("at_0", (const char *)log_text);
    endl();
}

/* PRIMASK held: five IRQs pended one by one in scrambled priority order, taken when it clears. */
static void check_primask_order(void)
{
    uint32_t held;

    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x40);
    sw_prio(2, 0xc0);
    sw_prio(3, 0x40);
    sw_prio(4, 0x00);
    __asm volatile("cpsid i" ::: "memory");
    sw_pend(1u << 2);
    sw_pend(1u << 0);
    sw_pend(1u << 3);
    sw_pend(1u << 4);
    sw_pend(1u << 1);
    held = log_text[0] == '\0';
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("primask_order");
    kv("held", held);
    kvs("log", (const char *)log_text);
    endl();
}

/* FAULTMASK masks even priority 0 (and below: execution priority -1). */
static void check_faultmask(void)
{
    uint32_t held, pend;

    sw_reset();
    sw_prio(0, 0x00);
    set_faultmask(1);
    sw_pend(0x1);
    held = log_text[0] == '\0';
    pend = sw_pending();
    set_faultmask(0);
    check("faultmask");
    kv("held", held);
    kv("pending", pend);
    kvs("log", (const char *)log_text);
    endl();
}

/* An exception return clears FAULTMASK (ARMv7-M: on return from any exception but NMI):
 * sw0 (0x80) sets FAULTMASK and pends sw1 (0x40), which must wait for sw0's return. */
static volatile uint32_t fm_in_handler;

static void set_fm(void)
{
    set_faultmask(1);
    fm_in_handler = get_faultmask();
}

static void check_faultmask_return(void)
{
    uint32_t fm_after;

    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x40);
    sw_hook[0] = set_fm;
    sw_then_pend[0] = 1u << 1;
    sw_pend(0x1);
    fm_after = get_faultmask();
    set_faultmask(0);
    check("faultmask_return");
    kv("in_handler", fm_in_handler);
    kv("after_return", fm_after);
    kvs("log", (const char *)log_text);
    endl();
}

/* PRIMASK is not touched by exception entry or return: set in a handler, it is still set after. */
static void set_pm(void) { __asm volatile("cpsid i" ::: "memory"); }

static void check_primask_return(void)
{
    uint32_t pm_after, held;

    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x40);
    sw_hook[0] = set_pm;
    sw_then_pend[0] = 1u << 1;
    sw_pend(0x1);
    pm_after = get_primask();
    held = sw_pending();
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("primask_return");
    kv("after_return", pm_after);
    kv("held", held);
    kvs("log", (const char *)log_text);
    endl();
}

/* A handler runs with the masks of the code it interrupted: BASEPRI set in thread mode is seen in
 * the handler; BASEPRI raised in a handler holds back a higher-priority IRQ there. */
static volatile uint32_t bp_in_handler;

static void raise_bp(void)
{
    bp_in_handler = get_basepri();
    set_basepri(0x20);
    sw_pend(1u << 1);           /* 0x40: better than sw0 (0x80), masked by BASEPRI 0x20 */
    note(sw_pending() & 2 ? 'h' : '-');
    set_basepri(0);
}

static void check_basepri_handler(void)
{
    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x40);
    sw_hook[0] = raise_bp;
    set_basepri(0xa0);
    sw_pend(0x1);
    set_basepri(0);
    check("basepri_handler");
    kv("seen", bp_in_handler);
    kvs("log", (const char *)log_text);
    endl();
}

int main(void)
{
    probe_init("masks");
    check_readback();
    check_basepri_max();
    check_basepri();
    check_basepri_group();
    check_primask_order();
    check_faultmask();
    check_faultmask_return();
    check_primask_return();
    check_basepri_handler();
    done();
}
