/* The dual-core mailbox (boards/dual-core-mailbox.yaml): a 4 KiB region both CPUs map at
 * 0x20300000, and a doorbell each way: a pulse on GPIO0 pin 0 of one CPU raises IRQ 7 on the
 * other (the board's irq_routes). */
#ifndef MAILBOX_H
#define MAILBOX_H

#include <stdint.h>

struct mailbox {
    volatile uint32_t seq;      /* message number, written last */
    volatile uint32_t value;
};

#ifndef MAILBOX_ADDR
#define MAILBOX_ADDR    0x20300000u
#endif
#define MAILBOX         ((struct mailbox *)MAILBOX_ADDR)
#define GPIO0_DATAOUT   (*(volatile uint32_t *)0x40010004u)
#define GPIO0_OUTENSET  (*(volatile uint32_t *)0x40010010u)
#define NVIC_ISER0      (*(volatile uint32_t *)0xE000E100u)
#define DOORBELL_IRQ    7u

/* One pulse on the doorbell line: the other CPU's NVIC latches the rising edge. */
static inline void ring(void)
{
    GPIO0_DATAOUT = 1u;
    GPIO0_DATAOUT = 0u;
}

static inline void doorbell_init(void)
{
    GPIO0_OUTENSET = 1u;
    NVIC_ISER0 = 1u << DOORBELL_IRQ;
}

#endif
