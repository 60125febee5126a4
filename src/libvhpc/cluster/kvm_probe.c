/*
 * kvm_probe.c - does KVM actually run a guest here?  A module being loaded
 * and /dev/kvm opening are not enough (nested setups with broken VMX, a
 * /dev/kvm that hangs), so `--accel auto` runs a four-instruction real-mode
 * guest in a child process first: it must write 0x2a to I/O port 0x10 and
 * halt, within a time bound, or KVM is not used.
 */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GUEST_PHYS 0x1000u
#define PROBE_PORT 0x10u
#define PROBE_BYTE 0x2au

/* Exit codes of the probe child: 0 = the guest ran; else the step that failed. */
enum { P_OK, P_OPEN, P_API, P_VM, P_MEM, P_VCPU, P_REGS, P_RUN, P_IO, P_HLT };

static const char *const step_name[] = {
    [P_OPEN] = "opening /dev/kvm",
    [P_API] = "KVM_GET_API_VERSION is not 12",
    [P_VM] = "KVM_CREATE_VM",
    [P_MEM] = "setting up guest memory",
    [P_VCPU] = "KVM_CREATE_VCPU",
    [P_REGS] = "setting the vCPU's registers",
    [P_RUN] = "KVM_RUN",
    [P_IO] = "the guest's first exit was not its OUT to the probe port",
    [P_HLT] = "the guest did not halt after its OUT",
};

static int probe_child(void)
{
    /* mov $0x2a,%al; out %al,$0x10; hlt */
    static const unsigned char code[] = {0xb0, PROBE_BYTE, 0xe6, PROBE_PORT, 0xf4};
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return P_OPEN;
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        return P_API;
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return P_VM;
    void *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return P_MEM;
    memcpy(mem, code, sizeof(code));
    struct kvm_userspace_memory_region region = {.slot = 0,
                                                 .guest_phys_addr = GUEST_PHYS,
                                                 .memory_size = 0x1000,
                                                 .userspace_addr = (unsigned long)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return P_MEM;
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vcpu < 0 || size < (int)sizeof(struct kvm_run))
        return P_VCPU;
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        return P_VCPU;
    struct kvm_sregs sregs;
    struct kvm_regs regs = {.rip = GUEST_PHYS, .rflags = 2};
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        return P_REGS;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        return P_REGS;
    if (ioctl(vcpu, KVM_RUN, 0) < 0)
        return P_RUN;
    if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
        run->io.port != PROBE_PORT || run->io.size != 1 || run->io.data_offset >= (unsigned)size ||
        ((unsigned char *)run)[run->io.data_offset] != PROBE_BYTE)
        return P_IO;
    if (ioctl(vcpu, KVM_RUN, 0) < 0)
        return P_RUN;
    return run->exit_reason == KVM_EXIT_HLT ? P_OK : P_HLT;
}

int vhpc_kvm_probe(int timeout_ms, char *why, size_t len)
{
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, len, "KVM probe: fork: %s", strerror(errno));
        return 0;
    }
    if (pid == 0)
        _exit(probe_child());
    int status;
    for (int waited = 0;; waited += 5) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            snprintf(why, len, "KVM probe: waitpid: %s", strerror(errno));
            return 0;
        }
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(why, len, "a probe guest on /dev/kvm did not halt within %d ms", timeout_ms);
            return 0;
        }
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == P_OK)
        return 1;
    if (WIFEXITED(status) && WEXITSTATUS(status) < (int)(sizeof(step_name) / sizeof(step_name[0])))
        snprintf(why, len, "a probe guest on /dev/kvm failed: %s", step_name[WEXITSTATUS(status)]);
    else
        snprintf(why, len, "a probe guest on /dev/kvm crashed (status 0x%x)", status);
    return 0;
}
