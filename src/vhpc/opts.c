/*
 * opts.c - see opts.h: the option parser every verb uses, its --help, and
 * the subcommand dispatch of `vhpc vm`, `vhpc image` and `vhpc node`.
 */
#include "opts.h"
#include "vhpc/util.h"
#include "vhpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The option called name (len bytes), or the only one it abbreviates (as
 * getopt_long allows: --ima for --image); NULL if none or several. */
static const struct cli_opt *find(const struct cli_spec *s, const char *name, size_t len)
{
    const struct cli_opt *tables[] = {s->more, s->opts}, *prefix_of = NULL;
    int prefixes = 0;
    for (int t = 0; t < 2; t++)
        for (const struct cli_opt *o = tables[t]; o && o->name; o++) {
            if (strncmp(o->name, name, len) != 0)
                continue;
            if (strlen(o->name) == len)
                return o;
            prefix_of = o;
            prefixes++;
        }
    return prefixes == 1 ? prefix_of : NULL;
}

/* Store one option's value; 0, or the message of a bad one in *err. */
static int store(const struct cli_opt *o, const char *val, vhpc_err_t *err)
{
    char opt[64];
    snprintf(opt, sizeof(opt), "--%s", o->name);
    switch (o->kind) {
    case CLI_FLAG: *(bool *)o->dst = true; return 0;
    case CLI_STR: *(const char **)o->dst = val; return 0;
    case CLI_INT: {
        long v;
        if (vhpc_parse_long(opt, val, o->min, o->max, &v, err) < 0)
            return o->expect
                       ? vhpc_err_setmsg(err, -EINVAL, "%s %s: expected %s", opt, val, o->expect)
                       : -EINVAL;
        *(int *)o->dst = (int)v;
        return 0;
    }
    case CLI_MIB: return vhpc_parse_mib_opt(opt, val, o->min, o->max, (long *)o->dst, err);
    case CLI_LIST:
        if (*o->count >= (size_t)o->max)
            return vhpc_err_setmsg(err, -E2BIG, "at most %ld %s", o->max, opt);
        ((const char **)o->dst)[(*o->count)++] = val;
        return 0;
    case CLI_FN: return o->fn(o, val, err);
    }
    return vhpc_err_setmsg(err, -EINVAL, "%s: no such kind of option", opt);
}

/* The rest of argv from i on is the command. */
static void take_tail(struct cli_args *a, int argc, char **argv, int i)
{
    a->tail = argv + i;
    a->ntail = argc - i;
}

/* One "--name[=value]" at argv[*i] (value from argv[*i + 1] if needed):
 * -1 when parsed, else the exit status. */
static int one_option(const struct cli_spec *s, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *name = a + 2, *eq = strchr(name, '=');
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        cli_help(s, stdout);
        return 0;
    }
    const struct cli_opt *o =
        a[1] == '-' ? find(s, name, eq ? (size_t)(eq - name) : strlen(name)) : NULL;
    if (!o)
        return cli_usage(s->cmd, "unknown option '%s'", a);
    const char *val = eq ? eq + 1 : NULL;
    if (o->kind == CLI_FLAG && val)
        return cli_usage(s->cmd, "--%s takes no value", o->name);
    if (o->kind != CLI_FLAG && !val) {
        if (*i + 1 >= argc)
            return cli_usage(s->cmd, "--%s needs a value (%s)", o->name, o->arg ? o->arg : "?");
        val = argv[++*i];
    }
    vhpc_err_t err = {0};
    if (store(o, val, &err) < 0)
        return cli_usage(s->cmd, "%s", err.msg);
    return CLI_PARSED;
}

/* With spec->file_opt given, the file's options before argv's in *argv
 * (allocated: it lives as long as the process); -1 when parsed, else the
 * exit status. */
static int with_file(const struct cli_spec *s, int *argc, char ***argv, struct cli_args *a)
{
    size_t ol = s->file_opt ? strlen(s->file_opt) : 0;
    char **v = *argv;
    int n = *argc;
    for (int i = 1; ol && i < n && strcmp(v[i], "--") != 0; i++) {
        if (strncmp(v[i], "--", 2) != 0 || strncmp(v[i] + 2, s->file_opt, ol) != 0 ||
            (v[i][2 + ol] != 0 && v[i][2 + ol] != '='))
            continue;
        const char *file = v[i][2 + ol] == '=' ? v[i] + 3 + ol : i + 1 < n ? v[i + 1] : "";
        char **fargs, **all;
        int nf;
        vhpc_err_t err = {0};
        if (s->load(file, &fargs, &nf, &a->file_command, &err) < 0)
            return cli_fail(&err);
        if (!(all = calloc((size_t)(n + nf + 1), sizeof(*all))))
            return cli_usage(s->cmd, "out of memory");
        all[0] = v[0];
        memcpy(all + 1, fargs, (size_t)nf * sizeof(*all));
        memcpy(all + 1 + nf, v + 1, (size_t)(n - 1) * sizeof(*all));
        free(fargs); /* its strings live on in all */
        *argc = n + nf;
        *argv = all;
        break;
    }
    return CLI_PARSED;
}

int cli_parse(const struct cli_spec *s, int argc, char **argv, struct cli_args *a)
{
    memset(a, 0, sizeof(*a));
    int st = with_file(s, &argc, &argv, a);
    if (st != CLI_PARSED)
        return st;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            if (s->tail != CLI_NO_TAIL) {
                take_tail(a, argc, argv, i + 1);
                return CLI_PARSED;
            }
            for (i++; i < argc; i++) /* the rest: positional, even "-x" */
                if (a->npos < s->max_pos && a->npos < CLI_MAX_POS)
                    a->pos[a->npos++] = argv[i];
                else
                    return cli_usage(s->cmd, "unexpected argument '%s'", argv[i]);
            return CLI_PARSED;
        }
        if (arg[0] == '-' && arg[1]) {
            if ((st = one_option(s, argc, argv, &i)) != CLI_PARSED)
                return st;
        } else if (s->tail == CLI_TAIL_AT_ARG) {
            take_tail(a, argc, argv, i);
            return CLI_PARSED;
        } else if (a->npos < s->max_pos && a->npos < CLI_MAX_POS) {
            a->pos[a->npos++] = argv[i];
        } else {
            return cli_usage(s->cmd, "unexpected argument '%s'", arg);
        }
    }
    return CLI_PARSED;
}

/* The help's text of one option, its continuation lines indented to col. */
static void help_line(FILE *f, const struct cli_opt *o, int col)
{
    char left[64];
    snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(f, "  %-*s ", col - 3, left);
    for (const char *h = o->help ? o->help : "", *nl; *h; h = nl + 1) {
        nl = strchr(h, '\n');
        if (!nl) {
            fprintf(f, "%s", h);
            break;
        }
        fprintf(f, "%.*s\n%*s", (int)(nl - h), h, col, "");
    }
    fputc('\n', f);
}

void cli_help(const struct cli_spec *s, FILE *f)
{
    const struct cli_opt *tables[] = {s->more, s->opts};
    int col = 0;
    for (int t = 0; t < 2; t++)
        for (const struct cli_opt *o = tables[t]; o && o->name; o++) {
            int w = (int)(strlen(o->name) + (o->arg ? strlen(o->arg) + 1 : 0)) + 2;
            if (w > col)
                col = w;
        }
    col += 4; /* two blanks before "--", two after the longest */
    fputs(s->usage, f);
    for (int t = 0; t < 2; t++)
        for (const struct cli_opt *o = tables[t]; o && o->name; o++)
            if (o->help)
                help_line(f, o, col);
    if (s->footer)
        fputs(s->footer, f);
}

int cli_dispatch(const char *cmd, const struct cli_sub *subs, const char *help, int argc,
                 char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const struct cli_sub *s = subs; s->name; s++)
        if (!strcmp(argv[1], s->name))
            return s->fn(argc - 1, argv + 1);
    return cli_usage(cmd, "unknown subcommand '%s' (vhpc %s --help lists them)", argv[1], cmd);
}
