#ifndef TOLLGATE_SCHED_SHIM_H
#define TOLLGATE_SCHED_SHIM_H
#ifdef __linux__
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

/// Linux's struct sched_attr (SCHED_ATTR_SIZE_VER0: 48 bytes), which glibc does not declare.
struct tollgate_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

/// The calling thread to the normal policy at `nice`, with a time slice of `slice_ns` (Linux 6.12
/// and later read a fair task's slice from sched_runtime; older kernels ignore it). 0 on success,
/// else -1 with errno set. sched_setattr has no glibc wrapper, and syscall() is variadic (Swift
/// cannot call it).
static inline int tollgate_set_fair_slice(int nice, uint64_t slice_ns) {
    struct tollgate_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.sched_policy = 0;   /* SCHED_OTHER */
    attr.sched_nice = nice;
    attr.sched_runtime = slice_ns;
    return (int)syscall(SYS_sched_setattr, 0, &attr, 0);
}
#endif
#endif
