/* Rule group 9: BKPT with no debugger attached.
 *  - with halting debug off and DEMCR.MON_EN clear, BKPT escalates to HardFault: HFSR shows it
 *    (ARMv7-M: DEBUGEVT, bit 31), DFSR.BKPT (bit 1) records the event, the stacked PC is the BKPT;
 *  - DEMCR.MON_EN (bit 16) is writable; with it set BKPT is a DebugMonitor exception instead.
 * Each handler steps over the BKPT. Lockup (a fault in HardFault) is tests/firmware/lockup.elf. */
#include "probe.h"

#define DEMCR_MON_EN    (1u << 16)

static volatile uint32_t bkpt_site;
static volatile uint32_t hf_hits, hf_hfsr, hf_cfsr, hf_dfsr, hf_pc_off, hf_xpsr;
static volatile uint32_t dm_hits, dm_dfsr, dm_pc_off, dm_ipsr;

void hf_c(uint32_t *frame)
{
    hf_hits++;
    hf_hfsr = SCB_HFSR;
    hf_cfsr = SCB_CFSR;
    hf_dfsr = SCB_DFSR;
    hf_pc_off = frame[6] - bkpt_site;
    hf_xpsr = frame[7];
    SCB_HFSR = hf_hfsr;
    SCB_CFSR = hf_cfsr;
    SCB_DFSR = hf_dfsr;
    if (frame[6] == bkpt_site)
        frame[6] += 2;
}
FRAME_SHIM(HardFault_Handler, hf_c)

void dm_c(uint32_t *frame)
{
    dm_hits++;
    dm_dfsr = SCB_DFSR;
    dm_ipsr = get_ipsr();
    dm_pc_off = frame[6] - bkpt_site;
    SCB_DFSR = dm_dfsr;
    if (frame[6] == bkpt_site)
        frame[6] += 2;
}
FRAME_SHIM(DebugMon_Handler, dm_c)

static void do_bkpt(void)
{
    __asm volatile("adr r1, 1f\n\t"
                   "str r1, [%0]\n\t"
                   ".balign 4\n"
                   "1: bkpt #0x12\n\t"
                   "nop"
                   :: "r"(&bkpt_site) : "r1", "memory");
}

static void check_hardfault(void)
{
    uint32_t dfsr_before = SCB_DFSR, demcr = DEMCR;

    do_bkpt();
    check("bkpt_no_debugger");
    kv("demcr", demcr);
    kv("dfsr_before", dfsr_before);
    kv("hf_hits", hf_hits);
    kv("hfsr", hf_hfsr);
    kv("cfsr", hf_cfsr);
    kv("dfsr", hf_dfsr);
    kv("pc_off", hf_pc_off);
    kv("xpsr", hf_xpsr);
    kv("hfsr_after", SCB_HFSR);
    endl();
}

static void check_monitor(void)
{
    uint32_t demcr;

    hf_hits = hf_hfsr = 0;
    DEMCR = DEMCR_MON_EN;
    demcr = DEMCR;
    do_bkpt();
    DEMCR = 0;
    check("bkpt_monitor");
    kv("demcr", demcr);
    kv("dm_hits", dm_hits);
    kv("dm_ipsr", dm_ipsr);
    kv("dm_dfsr", dm_dfsr);
    kv("dm_pc_off", dm_pc_off);
    kv("hf_hits", hf_hits);
    kv("hfsr", hf_hfsr);
    endl();
}

int main(void)
{
    probe_init("bkpt");
    check_hardfault();
    check_monitor();
    done();
}
