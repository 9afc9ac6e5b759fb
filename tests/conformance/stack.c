/* Rule group 5: stack alignment on exception entry (CCR.STKALIGN) and vector table relocation.
 *  - CCR reads back with STKALIGN (bit 9) set out of reset, and STKALIGN is writable on ARMv7-M;
 *  - with STKALIGN=1 a frame pushed from a 4-but-not-8-byte aligned SP goes 4 bytes lower and
 *    stacked xPSR bit 9 says so; from an aligned SP it does not; with STKALIGN=0 the frame goes
 *    right below the SP and bit 9 stays clear; every return restores the SP exactly;
 *  - VTOR: reset value, the bits it keeps, a RAM table taking effect at once;
 *  - a vector without the Thumb bit: INVSTATE UsageFault at the handler's first instruction. */
#include "probe.h"

#define CCR_STKALIGN    (1u << 9)
#define SHCSR_USGFAULTENA (1u << 18)

static void check_ccr(void)
{
    uint32_t reset = SCB_CCR, cleared, set;

    SCB_CCR = reset & ~CCR_STKALIGN;
    cleared = SCB_CCR;
    SCB_CCR = reset | CCR_STKALIGN;
    set = SCB_CCR;
    SCB_CCR = reset;
    check("ccr");
    kv("reset", reset);
    kv("stkalign_cleared", cleared);
    kv("stkalign_set", set);
    endl();
}

/* Move SP to an 8-byte boundary minus `minus` (0 or 4), pend sw0, come back. C code must not run
 * with SP moved, so it is one asm block; the handler records its frame address. */
static void one_entry(uint32_t stkalign, uint32_t minus, const char *name)
{
    uint32_t sp_before, sp_after, ccr_now;

    sw_reset();
    SCB_CCR = stkalign ? (SCB_CCR | CCR_STKALIGN) : (SCB_CCR & ~CCR_STKALIGN);
    ccr_now = SCB_CCR;
    __asm volatile("mov r3, sp\n\t"
                   "bic r2, r3, #7\n\t"
                   "subs r2, r2, %[minus]\n\t"
                   "mov sp, r2\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb\n\t"                    /* IRQ taken here */
                   "mov %[after], sp\n\t"
                   "mov %[before], r2\n\t"
                   "mov sp, r3"
                   : [after] "=&r"(sp_after), [before] "=&r"(sp_before)
                   : [bit] "r"(1u << SWIRQ0), [ispr] "r"(&NVIC_ISPR(0)), [minus] "r"(minus)
                   : "r2", "r3", "memory");
    SCB_CCR |= CCR_STKALIGN;
    check(name);
    kv("ccr", ccr_now);
    kv("sp_mod8", sp_before & 7u);
    kv("frame_below_sp", sp_before - sw_frame[0]);
    kv("xpsr_bit9", (sw_stacked_xpsr[0] >> 9) & 1u);
    kv("frame_mod8", sw_frame[0] & 7u);
    kv("sp_restored", sp_after == sp_before);
    kvs("log", (const char *)log_text);
    endl();
}

/* ---- VTOR ---- */
static uint32_t ram_vectors[16 + 32] __attribute__((aligned(256)));
static volatile uint32_t ram_hits;

static void ram_irq_handler(void) { ram_hits++; }

static void check_vtor(void)
{
    uint32_t reset = SCB_VTOR, readback, lowbits, i;

    for (i = 0; i < 16 + 32; i++)
        ram_vectors[i] = vector_table[i];
    ram_vectors[16 + SWIRQ0 + 1] = (uint32_t)ram_irq_handler;
    sw_reset();
    ram_hits = 0;
    SCB_VTOR = (uint32_t)ram_vectors | 0x7fu;    /* bits 6:0 are not kept */
    barrier();
    lowbits = SCB_VTOR;
    SCB_VTOR = (uint32_t)ram_vectors;
    barrier();
    readback = SCB_VTOR;
    sw_pend(0x3);               /* sw0 through the copied entry, sw1 through the new one */
    SCB_VTOR = reset;
    barrier();
    sw_pend(0x2);               /* the ROM table again */
    check("vtor");
    kv("reset", reset);
    kv("low_bits_masked", lowbits == ((uint32_t)ram_vectors & ~0x7fu));
    kv("readback_ok", readback == (uint32_t)ram_vectors);
    kv("ram_hits", ram_hits);
    kvs("log", (const char *)log_text);
    endl();
}

/* ---- a vector without the Thumb bit ---- */
static volatile uint32_t uf_cfsr, uf_pc, uf_xpsr, uf_hits;

__attribute__((naked)) static void return_stub(void) { __asm volatile("bx lr"); }

void uf_c(uint32_t *frame)
{
    uf_hits++;
    uf_cfsr = SCB_CFSR;
    SCB_CFSR = uf_cfsr;
    uf_pc = frame[6];
    uf_xpsr = frame[7];
    /* finish the IRQ handler that could not start: run a `bx lr` (LR is its EXC_RETURN) */
    frame[6] = (uint32_t)return_stub & ~1u;
    frame[7] |= 1u << 24;
}
FRAME_SHIM(UsageFault_Handler, uf_c)

static void check_arm_vector(void)
{
    uint32_t i;

    for (i = 0; i < 16 + 32; i++)
        ram_vectors[i] = vector_table[i];
    ram_vectors[16 + SWIRQ0 + 2] = (uint32_t)ram_irq_handler & ~1u;
    sw_reset();
    ram_hits = 0;
    sw_prio(2, 0x80);           /* below the UsageFault's 0, so the fault can preempt */
    SCB_SHCSR |= SHCSR_USGFAULTENA;
    SCB_VTOR = (uint32_t)ram_vectors;
    barrier();
    sw_pend(0x4);
    SCB_VTOR = 0;
    barrier();
    check("vector_without_thumb_bit");
    kv("hits", uf_hits);
    kv("cfsr", uf_cfsr);
    kv("pc_is_handler", uf_pc == ((uint32_t)ram_irq_handler & ~1u));
    kv("ram_hits", ram_hits);
    kv("xpsr", uf_xpsr);
    kv("active_after", NVIC_IABR(0) >> SWIRQ0);
    endl();
}

int main(void)
{
    probe_init("stack");
    check_ccr();
    one_entry(1, 4, "stkalign1_misaligned");
    one_entry(1, 0, "stkalign1_aligned");
    one_entry(0, 4, "stkalign0_misaligned");
    one_entry(0, 0, "stkalign0_aligned");
    check_vtor();
    check_arm_vector();
    done();
}
