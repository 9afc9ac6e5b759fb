/* Shared by the conformance probes: register names, the report format and the event log.
 *
 * A probe prints what it observed, one line per check: "<check> key=value ...", values in hex
 * (or a log of handler entries), then "DONE". The built-in engine must print the same bytes as
 * QEMU (tests/test_conformance.py). Nothing printed may depend on instruction timing. */
#ifndef PROBE_H
#define PROBE_H

#include <stdint.h>
#include "uart.h"

#define REG(addr)       (*(volatile uint32_t *)(addr))
#define REG8(addr)      (*(volatile uint8_t *)(addr))

/* System Control Space */
#define ICTR            REG(0xE000E004u)
#define SYST_CSR        REG(0xE000E010u)
#define SYST_RVR        REG(0xE000E014u)
#define SYST_CVR        REG(0xE000E018u)
#define SYST_CALIB      REG(0xE000E01Cu)
#define NVIC_ISER(n)    REG(0xE000E100u + 4u * (n))
#define NVIC_ICER(n)    REG(0xE000E180u + 4u * (n))
#define NVIC_ISPR(n)    REG(0xE000E200u + 4u * (n))
#define NVIC_ICPR(n)    REG(0xE000E280u + 4u * (n))
#define NVIC_IABR(n)    REG(0xE000E300u + 4u * (n))
#define NVIC_IPR8(irq)  REG8(0xE000E400u + (irq))
#define NVIC_IPR(n)     REG(0xE000E400u + 4u * (n))
#define SCB_CPUID       REG(0xE000ED00u)
#define SCB_ICSR        REG(0xE000ED04u)
#define SCB_VTOR        REG(0xE000ED08u)
#define SCB_AIRCR       REG(0xE000ED0Cu)
#define SCB_SCR         REG(0xE000ED10u)
#define SCB_CCR         REG(0xE000ED14u)
#define SCB_SHPR1       REG(0xE000ED18u)
#define SCB_SHPR2       REG(0xE000ED1Cu)
#define SCB_SHPR3       REG(0xE000ED20u)
#define SCB_SHPR8(exc)  REG8(0xE000ED14u + (exc))   /* byte priority of system exception 4..15 */
#define SCB_SHCSR       REG(0xE000ED24u)
#define SCB_CFSR        REG(0xE000ED28u)
#define SCB_HFSR        REG(0xE000ED2Cu)
#define SCB_DFSR        REG(0xE000ED30u)
#define SCB_MMFAR       REG(0xE000ED34u)
#define SCB_BFAR        REG(0xE000ED38u)
#define SCB_CPACR       REG(0xE000ED88u)
#define DEMCR           REG(0xE000EDFCu)
#define STIR            REG(0xE000EF00u)
#define FPCCR           REG(0xE000EF34u)
#define FPCAR           REG(0xE000EF38u)
#define FPDSCR          REG(0xE000EF3Cu)

#define AIRCR_VECTKEY   0x05FA0000u
#define ICSR_PENDSVSET  (1u << 28)
#define ICSR_PENDSTSET  (1u << 26)

/* IRQs the probes pend by software: nothing drives them on mps2-an385 (QEMU or the built-in
 * engine), so a handler's return leaves them idle. */
#define SWIRQ0          24u

/* ---- barriers and special registers ---- */
static inline void barrier(void) { __asm volatile("dsb\n\tisb" ::: "memory"); }

static inline uint32_t get_ipsr(void)
{
    uint32_t v;
    __asm volatile("mrs %0, ipsr" : "=r"(v));
    return v & 0x1ffu;
}

#define SPECIAL_GET(name)                                               \
    static inline uint32_t get_##name(void)                             \
    {                                                                   \
        uint32_t v;                                                     \
        __asm volatile("mrs %0, " #name : "=r"(v) :: "memory");         \
        return v;                                                       \
    }
#define SPECIAL_SET(name)                                               \
    static inline void set_##name(uint32_t v)                           \
    {                                                                   \
        __asm volatile("msr " #name ", %0\n\tisb" :: "r"(v) : "memory"); \
    }
SPECIAL_GET(primask)
SPECIAL_SET(primask)
SPECIAL_GET(basepri)
SPECIAL_SET(basepri)
SPECIAL_SET(basepri_max)
SPECIAL_GET(faultmask)
SPECIAL_SET(faultmask)
SPECIAL_GET(control)
SPECIAL_SET(control)
SPECIAL_GET(msp)
SPECIAL_GET(psp)
SPECIAL_SET(psp)

/* Pend external IRQ `irq` by software; dsb+isb make it preempt before the next instruction if it
 * can. */
static inline void pend_irq(uint32_t irq)
{
    NVIC_ISPR(irq / 32u) = 1u << (irq % 32u);
    barrier();
}

static inline void enable_irq(uint32_t irq) { NVIC_ISER(irq / 32u) = 1u << (irq % 32u); barrier(); }
static inline void disable_irq(uint32_t irq) { NVIC_ICER(irq / 32u) = 1u << (irq % 32u); barrier(); }
static inline void unpend_irq(uint32_t irq) { NVIC_ICPR(irq / 32u) = 1u << (irq % 32u); barrier(); }
static inline uint32_t irq_pending(uint32_t irq) { return (NVIC_ISPR(irq / 32u) >> (irq % 32u)) & 1u; }
static inline uint32_t irq_active(uint32_t irq) { return (NVIC_IABR(irq / 32u) >> (irq % 32u)) & 1u; }

/* ---- report ---- */
void probe_init(const char *name);      /* UART on, "probe <name>" line */
void check(const char *name);           /* start a line */
void kv(const char *key, uint32_t v);   /* " key=0x%08x" */
void kvd(const char *key, uint32_t v);  /* " key=<decimal>" */
void kvs(const char *key, const char *s);
void endl(void);
void done(void) __attribute__((noreturn));     /* "DONE" and sleep for ever */

/* ---- event log: handlers note() what they see; a check prints it with kvs("log", log_text) ---- */
extern volatile char log_text[64];
void log_clear(void);
void note(char c);
void note_hex(uint32_t v);              /* one hex digit */

/* ---- handlers: weak, defaulting to one that reports "UNEXPECTED exc=N" and ends the probe ---- */
void NMI_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void SVC_Handler(void);
void DebugMon_Handler(void);
void PendSV_Handler(void);
void SysTick_Handler(void);
void IRQ_Handler(void);                 /* every external IRQ, unless a probe gives IRQn_Handler */
#define DECLARE_IRQ(n) void IRQ##n##_Handler(void);
DECLARE_IRQ(0) DECLARE_IRQ(1) DECLARE_IRQ(8) DECLARE_IRQ(9) DECLARE_IRQ(10)

/* Entry shim: EXC_RETURN bit 2 says which stack the frame is on. Calls c_handler(frame, exc_return);
 * the C handler returns with LR still holding EXC_RETURN. */
#define FRAME_SHIM(name, c_handler)                                       \
    __attribute__((naked)) void name(void)                                \
    {                                                                     \
        __asm volatile("tst lr, #4\n\t"                                   \
                       "ite eq\n\t"                                       \
                       "mrseq r0, msp\n\t"                                \
                       "mrsne r0, psp\n\t"                                \
                       "mov r1, lr\n\t"                                   \
                       "b " #c_handler);                                  \
    }

extern const uint32_t vector_table[];
extern uint32_t __stack_top[];

#endif

/* ---- software IRQs (swirq.c): IRQs SWIRQ0..SWIRQ0+7 share one handler that notes "[i" on entry
 * and "]" on exit in the log, records what it saw, calls the probe's hook and then pends the IRQs
 * in sw_then_pend[i] (once) ---- */
#define NSW 8u
extern volatile uint32_t sw_then_pend[NSW];     /* bit j: pend sw IRQ j on entry (then cleared) */
extern void (*volatile sw_hook[NSW])(void);     /* called on entry, before sw_then_pend */
extern volatile uint32_t sw_exc_return[NSW], sw_icsr[NSW], sw_active[NSW], sw_frame[NSW];
extern volatile uint32_t sw_stacked_pc[NSW], sw_stacked_xpsr[NSW], sw_count[NSW];
void sw_reset(void);                    /* clear scripts, records and the log; enable all, priority 0 */
void sw_prio(uint32_t i, uint32_t prio);
void sw_pend(uint32_t mask);            /* bit j: sw IRQ j; one NVIC_ISPR write, then dsb+isb */
uint32_t sw_pending(void);              /* bit j: sw IRQ j pending */

/* Entry shim for handlers that choose how to return: c_handler(frame, exc_return) returns the
 * value the shim then branches to with BX (normally the EXC_RETURN it was given). */
#define RETURN_SHIM(name, c_handler)                                      \
    __attribute__((naked)) void name(void)                                \
    {                                                                     \
        __asm volatile("tst lr, #4\n\t"                                   \
                       "ite eq\n\t"                                       \
                       "mrseq r0, msp\n\t"                                \
                       "mrsne r0, psp\n\t"                                \
                       "mov r1, lr\n\t"                                   \
                       "push {r1, lr}\n\t"                                \
                       "bl " #c_handler "\n\t"                            \
                       "pop {r1, r2}\n\t"                                 \
                       "bx r0");                                          \
    }
