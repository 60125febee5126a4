/*
 * opts.h - the one option parser of every `vhpc` verb.  A verb describes
 * its options in a table (name, kind, where the value goes, help) and
 * cli_parse reads argv by it: --name VALUE or --name=VALUE (or an
 * unambiguous abbreviation of the name, as getopt_long takes), in any order
 * (the last of a repeated option wins, except a list's), numbers strictly
 * (vhpc/util.h), "--" ends the options.  --help (or -h) prints the verb's
 * synopsis, then one line per option from the table, then its footer.
 * Errors name the verb and the option, e.g.
 *   "vhpc run: --vms 1x: expected a whole number from 1 to 64".
 *
 *   static const struct cli_opt opts[] = {
 *       CLI_OPT("vms", CLI_INT, &nvms, "N", "VMs to boot", .min = 1, .max = 64),
 *       CLI_OPT("each", CLI_FLAG, &each, NULL, "in every VM"),
 *       {0}};
 *   struct cli_spec spec = {"run", run_usage, opts};
 *   int st = cli_parse(&spec, argc, argv, &args);
 *   if (st != CLI_PARSED)
 *       return st;  // 0 after --help, 2 after a usage error (printed)
 */
#ifndef VHPC_CLI_OPTS_H
#define VHPC_CLI_OPTS_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum cli_kind {
    CLI_FLAG, /* bool *dst: true when given; takes no value */
    CLI_STR,  /* const char **dst: the value */
    CLI_INT,  /* int *dst: a whole number in [min, max] */
    CLI_MIB,  /* long *dst: a size in MiB (M, G, T suffixes) in [min, max] */
    CLI_LIST, /* const char **dst, an array of max: each use adds its value, *count */
    CLI_FN,   /* fn parses the value into dst (a message in *err on failure) */
};

struct cli_opt {
    const char *name; /* without the dashes: "vms" is --vms */
    enum cli_kind kind;
    void *dst;
    const char *arg;  /* the value's name in --help ("N"); NULL for a flag */
    const char *help; /* what it does; '\n' starts a line indented under the first */
    long min, max;    /* CLI_INT, CLI_MIB: the range; CLI_LIST: at most max values */
    size_t *count;    /* CLI_LIST: how many were given */
    /* CLI_INT: what a bad value is told it should be, instead of "a whole
     * number from MIN to MAX" (the wording some messages have always had). */
    const char *expect;
    int (*fn)(const struct cli_opt *o, const char *val, vhpc_err_t *err); /* CLI_FN */
};

/* One entry of a table: CLI_OPT("vms", CLI_INT, &n, "N", "VMs", .min = 1, .max = 64). */
#define CLI_OPT(n, k, d, a, h, ...)                                                                \
    {                                                                                              \
        .name = (n), .kind = (k), .dst = (d), .arg = (a), .help = (h), __VA_ARGS__                 \
    }

/* What follows the options: nothing, or (tail) the command to run. */
enum cli_tail {
    CLI_NO_TAIL,      /* every argument is an option or a positional */
    CLI_TAIL_AT_ARG,  /* the first argument that is no option starts the command ("--" too) */
    CLI_TAIL_DASHDASH /* only "--" starts the command */
};

struct cli_spec {
    const char *cmd;            /* "run", "vm start": errors say "vhpc run: ..." */
    const char *usage;          /* --help: the synopsis and what the verb does */
    const struct cli_opt *opts; /* ends with an entry whose name is NULL */
    const struct cli_opt *more; /* a second table (shared by verbs), or NULL */
    const char *footer;         /* --help: after the options, or NULL */
    int max_pos;                /* positional arguments allowed (in cli_args.pos) */
    enum cli_tail tail;
    /* An option naming a file of more options (run's --job): the file's are
     * read first, so that the command line's win.  load gives them as
     * arguments ("--vms", "4") and the file's command line (or NULL). */
    const char *file_opt;
    int (*load)(const char *path, char ***args, int *nargs, char **command, vhpc_err_t *err);
};

#define CLI_MAX_POS 64
struct cli_args {
    char *pos[CLI_MAX_POS]; /* the positional arguments, in order */
    int npos;
    char **tail; /* the command (CLI_TAIL_*), NULL-terminated as argv is; NULL if none */
    int ntail;
    char *file_command; /* the command of spec->file_opt's file, or NULL */
};

/* Parse argv[1..argc-1] by spec into the options' destinations and *args.
 * Returns CLI_PARSED to go on, else the verb's exit status: 0 once --help
 * was printed, 2 after a usage error (printed on stderr). */
#define CLI_PARSED (-1)
int cli_parse(const struct cli_spec *spec, int argc, char **argv, struct cli_args *args);

/* Print the verb's help (usage, the options' table, footer) on f. */
void cli_help(const struct cli_spec *spec, FILE *f);

/* A verb's subcommands: the first argument picks one, which gets argv from
 * there on; "--help" or none prints help (stdout, 0; stderr, 2). */
struct cli_sub {
    const char *name;
    int (*fn)(int argc, char **argv);
};
int cli_dispatch(const char *cmd, const struct cli_sub *subs, const char *help, int argc,
                 char **argv);

#endif
