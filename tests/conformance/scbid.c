/* System Control Space identification and reset values (Cortex-M3 on mps2-an385): CPUID, ICTR,
 * ACTLR, the CPUID scheme registers ID_PFR0..ID_ISAR4, the fault status registers, CPACR, the
 * debug registers DHCSR/DEMCR, MPU_TYPE and the SCS peripheral/component ID registers. All are read
 * before anything is written, as the probe's first act. */
#include "probe.h"

#define ACTLR           REG(0xE000E008u)
#define AFSR            REG(0xE000ED3Cu)
#define ID_REG(i)       REG(0xE000ED40u + 4u * (i))     /* PFR0 PFR1 DFR0 AFR0 MMFR0-3 ISAR0-4 */
#define MPU_TYPE        REG(0xE000ED90u)
#define DHCSR           REG(0xE000EDF0u)
#define SCS_ID(i)       REG(0xE000EFD0u + 4u * (i))

static const char *const id_names[13] = {
    "id_pfr0", "id_pfr1", "id_dfr0", "id_afr0", "id_mmfr0", "id_mmfr1", "id_mmfr2", "id_mmfr3",
    "id_isar0", "id_isar1", "id_isar2", "id_isar3", "id_isar4",
};

int main(void)
{
    uint32_t scb[11], ids[13], scs_ids[12], dbg[3], i;

    scb[0] = SCB_CPUID;
    scb[1] = ICTR;
    scb[2] = ACTLR;
    scb[3] = SCB_ICSR;
    scb[4] = SCB_VTOR;
    scb[5] = SCB_AIRCR;
    scb[6] = SCB_SCR;
    scb[7] = SCB_CCR;
    scb[8] = SCB_SHCSR;
    scb[9] = SCB_CFSR | SCB_HFSR | SCB_MMFAR | SCB_BFAR | AFSR | SCB_DFSR;
    scb[10] = SCB_CPACR;
    for (i = 0; i < 13; i++)
        ids[i] = ID_REG(i);
    dbg[0] = DHCSR & 0xffffu;   /* the top half (S_ bits) reflects live core state */
    dbg[1] = DEMCR;
    dbg[2] = MPU_TYPE;
    for (i = 0; i < 12; i++)
        scs_ids[i] = SCS_ID(i);

    probe_init("scbid");
    check("scb");
    kv("cpuid", scb[0]);
    kv("ictr", scb[1]);
    kv("actlr", scb[2]);
    kv("icsr", scb[3]);
    kv("vtor", scb[4]);
    kv("aircr", scb[5]);
    kv("scr", scb[6]);
    kv("ccr", scb[7]);
    kv("shcsr", scb[8]);
    kv("fault_status", scb[9]);
    kv("cpacr", scb[10]);
    endl();
    check("cpuid_scheme");
    for (i = 0; i < 13; i++)
        kv(id_names[i], ids[i]);
    endl();
    check("debug");
    kv("dhcsr_low", dbg[0]);
    kv("demcr", dbg[1]);
    kv("mpu_type", dbg[2]);
    endl();
    check("scs_ids");
    kvs("pid4..cid3", "");
    for (i = 0; i < 12; i++) {
        uart_putc("0123456789abcdef"[(scs_ids[i] >> 4) & 0xfu]);
        uart_putc("0123456789abcdef"[scs_ids[i] & 0xfu]);
    }
    endl();
    done();
}
