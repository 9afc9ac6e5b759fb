/* The two kernel entry points that must be assembly: PendSV switches tasks, SVC 0 starts the
 * first one. Tasks run in thread mode on the process stack (PSP); a task's saved context is its
 * hardware exception frame (r0-r3, r12, lr, pc, xPSR, pushed by the core) with r4-r11 stored
 * just below it, and the task's control block keeps the resulting stack pointer (field 0). */
    .syntax unified
    .thumb
    .text

/* Lowest priority, so it only ever interrupts thread mode, i.e. a task on PSP. */
    .global PendSV_Handler
    .type PendSV_Handler, %function
    .thumb_func
PendSV_Handler:
    mrs     r0, psp
    stmdb   r0!, {r4-r11}       /* complete the outgoing task's frame */
    bl      rtos_switch         /* r0 = its stack pointer in, the next task's out */
    ldmia   r0!, {r4-r11}
    msr     psp, r0
    ldr     lr, =0xFFFFFFFD     /* EXC_RETURN: thread mode, PSP (bl clobbered lr) */
    bx      lr
    .size PendSV_Handler, . - PendSV_Handler

/* The SVC number is the low byte of the 16-bit svc instruction just before the stacked PC.
 * The frame is on MSP for main's svc 0 and on PSP for the tasks' calls. */
    .global SVC_Handler
    .type SVC_Handler, %function
    .thumb_func
SVC_Handler:
    tst     lr, #4
    ite     eq
    mrseq   r0, msp
    mrsne   r0, psp
    ldr     r1, [r0, #24]       /* stacked pc */
    ldrb    r1, [r1, #-2]       /* svc immediate */
    cbz     r1, start_first_task
    b       svc_dispatch        /* C: svc_dispatch(frame, number), returns with lr = EXC_RETURN */

/* svc 0 from main: start the tick, then "return" into current_task, whose stack holds a made-up
 * frame. EXC_RETURN 0xFFFFFFFD also sets CONTROL.SPSEL, so the task runs on PSP. SysTick cannot
 * preempt this handler (SVC has the higher priority), so the first PendSV always finds a task. */
start_first_task:
    bl      systick_start
    ldr     r0, =current_task
    ldr     r0, [r0]
    ldr     r0, [r0]            /* current_task->sp */
    ldmia   r0!, {r4-r11}
    msr     psp, r0
    ldr     lr, =0xFFFFFFFD
    bx      lr
    .size SVC_Handler, . - SVC_Handler
