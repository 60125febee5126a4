/*
 * test_vm_accel - choosing the accelerator: the --accel parser, the KVM
 * probe guest (it runs on any /dev/kvm that works, PVM included, and fails
 * with a reason where there is none), and what auto and kvm resolve to on
 * this host.
 */
#include "testutil.h"
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

static bool have(const char *path)
{
    return access(path, F_OK) == 0;
}

static void test_parse(void)
{
    enum vhpc_accel a;
    T_ASSERT(vhpc_accel_parse("auto", &a) == 0 && a == VHPC_ACCEL_AUTO, "auto");
    T_ASSERT(vhpc_accel_parse("kvm", &a) == 0 && a == VHPC_ACCEL_KVM, "kvm");
    T_ASSERT(vhpc_accel_parse("tcg", &a) == 0 && a == VHPC_ACCEL_TCG, "tcg");
    T_ASSERT(vhpc_accel_parse("xen", &a) == -EINVAL, "xen refused");
    T_ASSERT(vhpc_accel_parse("", &a) == -EINVAL, "empty refused");
}

static void test_probe(void)
{
    char why[256] = "";
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int ok = vhpc_kvm_probe(10000, why, sizeof(why));
    if (fd >= 0) {
        close(fd);
        T_ASSERT(ok == 1, "/dev/kvm opens but the probe guest failed: %s", why);
    } else {
        T_ASSERT(ok == 0 && strstr(why, "/dev/kvm"), "no /dev/kvm: %d '%s'", ok, why);
    }
}

static void test_resolve(void)
{
    enum vhpc_accel out = VHPC_ACCEL_AUTO;
    vhpc_err_t e = {0};
    bool hw = have("/sys/module/kvm_intel") || have("/sys/module/kvm_amd");
    T_ASSERT(vhpc_accel_resolve(VHPC_ACCEL_TCG, &out, &e) == 0 && out == VHPC_ACCEL_TCG, "tcg");
    T_ASSERT(vhpc_accel_resolve(VHPC_ACCEL_AUTO, &out, &e) == 0, "auto: %s", e.msg);
    if (!hw) {
        T_ASSERT(out == VHPC_ACCEL_TCG, "auto without kvm_intel/kvm_amd must be TCG");
        T_ASSERT(vhpc_accel_resolve(VHPC_ACCEL_KVM, &out, &e) == -ENODEV &&
                     strstr(e.msg, "--accel kvm") && strstr(e.msg, "--accel tcg"),
                 "kvm refused with advice: '%s'", e.msg);
        if (have("/sys/module/kvm_pvm"))
            T_ASSERT(strstr(e.msg, "PVM"), "the PVM host is named: '%s'", e.msg);
    }
    printf("auto -> %s%s\n", vhpc_accel_name(out), hw ? "" : " (no kvm_intel/kvm_amd)");
}

static const struct t_case cases[] = {
    {"parse", test_parse, 10},
    {"probe", test_probe, 30},
    {"resolve", test_resolve, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
