/*
 * mpi.c - `--with-mpi` (mpi.h): the same provider and settings for minimal
 * and full images; a minimal image takes Open MPI's files from the host, a
 * full image installs Debian's packages.  Before, each CLI verb added these
 * itself (cmd_image.c and cmd_image_full.c, with the provider lookup
 * written twice); the builds do it now, so `vhpc run --build-missing` gets
 * the same image as `vhpc image build --full --with-mpi`.
 */
#include "mpi.h"
#include "paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The settings that make Open MPI use the cluster: the provider ivc
 * (matched messages through IVC between VMs on one host, TCP otherwise),
 * daemons started through vhpc-rsh, the cluster's VMs as the default hosts.
 * Each can be overridden per run (mpirun --mca, -x, or the environment). */
static const char *const mpi_env[] = {"FI_PROVIDER_PATH=" VHPC_FI_DIR,
                                      "OMPI_MCA_pml=cm",
                                      "OMPI_MCA_mtl=ofi",
                                      "OMPI_MCA_mtl_ofi_provider_include=ivc",
                                      "OMPI_MCA_btl=self,vader,tcp",
                                      "OMPI_MCA_btl_tcp_if_include=eth0",
                                      "OMPI_MCA_oob_tcp_if_include=eth0",
                                      "OMPI_MCA_plm_rsh_agent=vhpc-rsh",
                                      "OMPI_MCA_orte_default_hostfile=/etc/vhpc/hostfile",
                                      "OMPI_ALLOW_RUN_AS_ROOT=1",
                                      "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                                      NULL};

#define LIBDIR "/usr/lib/x86_64-linux-gnu"

/* A minimal image's Open MPI: the launcher, daemon, components and data. */
static const char *const mpi_paths[] = {
    "/usr/bin/mpirun", "/usr/bin/mpiexec",   "/usr/bin/orted", LIBDIR "/openmpi",
    LIBDIR "/pmix2",   "/usr/share/openmpi", "/etc/openmpi",   NULL};

/* A full image's. */
static const char *const mpi_packages[] = {"openmpi-bin", "libfabric1", NULL};

/* a then b (either may be NULL), one NULL-terminated malloc'd list. */
static const char **cat(const char *const *a, const char *const *b)
{
    size_t na = 0, nb = 0;
    while (a && a[na])
        na++;
    while (b && b[nb])
        nb++;
    const char **v = calloc(na + nb + 1, sizeof(*v));
    for (size_t i = 0; v && i < na; i++)
        v[i] = a[i];
    for (size_t i = 0; v && i < nb; i++)
        v[na + i] = b[i];
    return v;
}

/* The provider and the settings, common to both kinds. */
static int provider_and_env(const char *const **files, const char *const **env, struct img_mpi *m,
                            vhpc_err_t *err)
{
    char prov[4096];
    if (vhpc_tool_path("libivc-fi.so", prov, sizeof(prov)) < 0)
        return vhpc_err_setmsg(err, -ENOENT,
                               "--with-mpi: cannot find libivc-fi.so (build it, or set "
                               "$VHPC_LIBIVC_FI_SO)");
    snprintf(m->provider, sizeof(m->provider), "%s=" VHPC_FI_DIR "/libivc-fi.so", prov);
    const char *const provider[] = {m->provider, NULL};
    if (!(m->files = cat(*files, provider)) || !(m->env = cat(mpi_env, *env)))
        return vhpc_err_set(err, -ENOMEM, "--with-mpi");
    return 0;
}

/* The lists of m in place of the caller's, or m freed on failure. */
static int use(int r, const char *const **files, const char *const **env, struct img_mpi *m)
{
    if (r < 0) {
        img_mpi_free(m);
        return r;
    }
    *files = m->files;
    *env = m->env;
    return 0;
}

int img_mpi_minimal(const char *const **add, const char *const **files, const char *const **env,
                    struct img_mpi *m, vhpc_err_t *err)
{
    memset(m, 0, sizeof(*m));
    int r = provider_and_env(files, env, m, err);
    for (int i = 0; r == 0 && mpi_paths[i]; i++)
        if (access(mpi_paths[i], F_OK) < 0)
            r = vhpc_err_setmsg(err, -ENOENT,
                                "--with-mpi: %s is missing (apt-get install openmpi-bin "
                                "libfabric1)",
                                mpi_paths[i]);
    if (r == 0 && !(m->add = cat(*add, mpi_paths)))
        r = vhpc_err_set(err, -ENOMEM, "--with-mpi");
    if (r == 0)
        *add = m->add;
    return use(r, files, env, m);
}

int img_mpi_full(const char *const **packages, const char *const **files, const char *const **env,
                 struct img_mpi *m, vhpc_err_t *err)
{
    memset(m, 0, sizeof(*m));
    int r = provider_and_env(files, env, m, err);
    if (r == 0 && !(m->packages = cat(*packages, mpi_packages)))
        r = vhpc_err_set(err, -ENOMEM, "--with-mpi");
    if (r == 0)
        *packages = m->packages;
    return use(r, files, env, m);
}

void img_mpi_free(struct img_mpi *m)
{
    free(m->add);
    free(m->packages);
    free(m->files);
    free(m->env);
    memset(m, 0, sizeof(*m));
}
