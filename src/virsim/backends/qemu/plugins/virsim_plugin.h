/*
 * What virsim's QEMU TCG plugins (vprobe.c, vsync.c, vcov.c) share: the part of QEMU's
 * include/qemu/qemu-plugin.h (API version 1) they use, written out because Debian ships no header,
 * and the one way to read QEMU's virtual clock from inside a plugin. Included once per plugin.
 */
#ifndef VIRSIM_PLUGIN_H
#define VIRSIM_PLUGIN_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                                     void *ptr, uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define QEMU_CLOCK_VIRTUAL 1

/* QEMU's virtual clock and instruction count as last published (clock_get_ns: qemu_clock_get_ns,
 * icount_raw: icount_get_raw, both looked up by the plugin). In the vCPU thread QEMU's icount read
 * aborts unless the current instruction may do I/O; hiding current_cpu (thread-local, so looked up
 * in this thread) makes it read the count the vCPU published at the start of its budget, which is
 * exact where the vCPU is out of its execution loop (a timer, the main loop). */
static inline int64_t virsim_virtual_clock(int64_t (*clock_get_ns)(int), int64_t (*icount_raw)(void),
                                           int64_t *insns)
{
    void **cur = dlsym(RTLD_DEFAULT, "current_cpu");
    void *saved = cur ? *cur : NULL;
    int64_t clock;
    if (cur)
        *cur = NULL;
    clock = clock_get_ns(QEMU_CLOCK_VIRTUAL);
    if (insns)
        *insns = icount_raw ? icount_raw() : 0;
    if (cur)
        *cur = saved;
    return clock;
}

#endif
