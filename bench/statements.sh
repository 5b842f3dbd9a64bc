#!/usr/bin/env bash
# statements.sh: how many statements and rows video-scheduler runs per
# deleted id and per recorded id, measured with each database's own tools:
#   PostgreSQL 15  pg_stat_statements (track=all) and pg_stat_user_tables,
#                  EXPLAIN (ANALYZE, BUFFERS) of the claims on the backlog
#   MariaDB 10.11  the slow query log at long_query_time=0 (every statement,
#                  prepared ones expanded, with rows and time), the general
#                  log (prepares and closes per text), performance_schema
#                  (commands per user, table I/O), EXPLAIN of the claims
#   SQLite         SQLite's own sqlite3_trace_v2 / sqlite3_stmt_status,
#                  installed into the server's bundled (static) SQLite by an
#                  LD_PRELOAD shim, and EXPLAIN QUERY PLAN over 100,000 rows
# Private instances only: PostgreSQL in /tmp/pgprof on port 55432, MariaDB in
# /tmp/myprof on port 53306; both stopped and deleted at exit. The machine's
# own servers (3306, 5432) are not touched.
#
# Usage (as root): bash statements.sh [pg] [my] [sqlite]   (default: all)
#   env: BIN (the release binary), WORK (/tmp/vsprof), N_DRAIN (20000),
#        BODY (1000), N_SEED (5000), PAR (16), SETTLE (11)
# Per backend: a fresh database; the pause set with the CLI; the server
# (batch_size 500, executors 4, fast_lane true) started; then windows, each
# with the statistics reset before and read after:
#   record_v1  20,000 ids POSTed in bodies of 1,000 while paused (recording only)
#   drain      POST /v1/resume, until the kept counts say nothing is left
#   idle       10 s with nothing queued (the timer's claims)
#   seed_c1    5,000 GET /video-delete-record/{id}, one at a time, keep-alive
#   seed_c16   the same over 16 connections
#   live_v1    20,000 ids POSTed in bodies of 1,000 while the server deletes
# PostgreSQL and SQLite again with fast_lane false (suffix _nolane); PostgreSQL once more for
# a drain under auto_explain (log_analyze), scans counted by statement (pg-drain-plans.tsv).
# Completion is polled by a separate user (watcher) or the sqlite3 CLI,
# not through the server, so the server's statements are all workload.
# Results: $WORK/results/*.tsv, the tables on stdout and in $WORK/report.md.
set -euo pipefail

write_helpers() {
cat > "$WORK/sqltrace.c" <<'C_SOURCE'
/* LD_PRELOAD shim: SQLite's own sqlite3_trace_v2 on every connection of a
 * process whose SQLite is linked in statically (video-scheduler bundles it).
 * The symbols are looked up in the executable's .symtab; an auto extension
 * (sqlite3_auto_extension) installs the trace on each sqlite3_open.
 * Writes one line per finished statement to $SQLTRACE_OUT:
 *   <ns from first step to reset, own clock>\t<rows>\t<fullscan steps>\t<vm steps>\t<1 if prepared for this run>\t<sql text>
 * rows = rows returned (SQLITE_TRACE_ROW count) or, for a statement that
 * returned none and writes, sqlite3_changes(). */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

static int (*p_auto_extension)(void (*)(void));
static int (*p_trace_v2)(sqlite3 *, unsigned, int (*)(unsigned, void *, void *, void *), void *);
static const char *(*p_sql)(sqlite3_stmt *);
static sqlite3 *(*p_db_handle)(sqlite3_stmt *);
static int (*p_changes)(sqlite3 *);
static int (*p_stmt_readonly)(sqlite3_stmt *);
static int (*p_stmt_status)(sqlite3_stmt *, int, int);

static FILE *out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread sqlite3_stmt *row_stmt;
static __thread long row_count;
static __thread struct timespec started;
#include <time.h>


#define TRACE_STMT 1
#define TRACE_PROFILE 2
#define TRACE_ROW 4

static int cb(unsigned kind, void *ctx, void *p, void *x) {
    (void)ctx;
    sqlite3_stmt *st = p;
    if (kind == TRACE_STMT) {
        row_stmt = st;
        row_count = 0;
        clock_gettime(CLOCK_MONOTONIC, &started);
    } else if (kind == TRACE_ROW) {
        if (row_stmt == st) row_count++;
    } else if (kind == TRACE_PROFILE) {
        (void)x; /* SQLite's own figure has millisecond steps: timed here */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ns = row_stmt == st ? (now.tv_sec - started.tv_sec) * 1000000000LL + (now.tv_nsec - started.tv_nsec) : -1;
        long rows = row_stmt == st ? row_count : 0;
        if (rows == 0 && !p_stmt_readonly(st)) rows = p_changes(p_db_handle(st));
        const char *s = p_sql(st);
        pthread_mutex_lock(&lock);
        /* SQLITE_STMTSTATUS_FULLSCAN_STEP 1, _AUTOINDEX 3, _VM_STEP 4, read and reset */
        /* SQLITE_STMTSTATUS_FULLSCAN_STEP 1 and _VM_STEP 4 (read and reset);
         * _RUN 6: 1 on a statement's first run, i.e. prepared for this run */
        int full = p_stmt_status(st, 1, 1), vm = p_stmt_status(st, 4, 1);
        int fresh = p_stmt_status(st, 6, 0) <= 1;
        fprintf(out, "%lld\t%ld\t%d\t%d\t%d\t", ns, rows, full, vm, fresh);
        for (; s && *s; s++) fputc((*s == '\n' || *s == '\t' || *s == '\r') ? ' ' : *s, out);
        fputc('\n', out);
        fflush(out);
        pthread_mutex_unlock(&lock);
        row_stmt = NULL;
    }
    return 0;
}

static int entry(sqlite3 *db, const char **err, const void *api) {
    (void)err;
    (void)api;
    p_trace_v2(db, TRACE_STMT | TRACE_PROFILE | TRACE_ROW, cb, NULL);
    return 0;
}

static uintptr_t bias;
static int first_phdr(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    bias = info->dlpi_addr; /* the first object is the executable */
    return 1;
}

static void *lookup(const char *want, Elf64_Shdr *sh, int n, int fd) {
    for (int i = 0; i < n; i++) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        Elf64_Shdr *strs = &sh[sh[i].sh_link];
        char *names = malloc(strs->sh_size);
        Elf64_Sym *syms = malloc(sh[i].sh_size);
        pread(fd, names, strs->sh_size, strs->sh_offset);
        pread(fd, syms, sh[i].sh_size, sh[i].sh_offset);
        size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        void *found = NULL;
        for (size_t k = 0; k < count && !found; k++)
            if (syms[k].st_value && strcmp(names + syms[k].st_name, want) == 0)
                found = (void *)(bias + syms[k].st_value);
        free(names);
        free(syms);
        if (found) return found;
    }
    return NULL;
}

__attribute__((constructor)) static void init(void) {
    const char *path = getenv("SQLTRACE_OUT");
    if (!path) return;
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return;
    exe[len] = 0;
    if (!strstr(exe, "video-scheduler")) return; /* not curl, sh, ... */
    int fd = open(exe, O_RDONLY);
    if (fd < 0) return;
    Elf64_Ehdr eh;
    pread(fd, &eh, sizeof eh, 0);
    Elf64_Shdr *sh = malloc((size_t)eh.e_shnum * sizeof *sh);
    pread(fd, sh, (size_t)eh.e_shnum * sizeof *sh, eh.e_shoff);
    dl_iterate_phdr(first_phdr, NULL);
    p_auto_extension = lookup("sqlite3_auto_extension", sh, eh.e_shnum, fd);
    p_trace_v2 = lookup("sqlite3_trace_v2", sh, eh.e_shnum, fd);
    p_sql = lookup("sqlite3_sql", sh, eh.e_shnum, fd);
    p_db_handle = lookup("sqlite3_db_handle", sh, eh.e_shnum, fd);
    p_changes = lookup("sqlite3_changes", sh, eh.e_shnum, fd);
    p_stmt_readonly = lookup("sqlite3_stmt_readonly", sh, eh.e_shnum, fd);
    p_stmt_status = lookup("sqlite3_stmt_status", sh, eh.e_shnum, fd);
    close(fd);
    free(sh);
    if (!p_auto_extension || !p_trace_v2 || !p_sql || !p_db_handle || !p_changes || !p_stmt_readonly || !p_stmt_status) {
        fprintf(stderr, "sqltrace: sqlite3 symbols not found\n");
        return;
    }
    out = fopen(path, "a");
    if (!out) return;
    p_auto_extension((void (*)(void))entry);
    fprintf(stderr, "sqltrace: tracing SQLite statements to %s\n", path);
}
C_SOURCE
cat > "$WORK/agg.py" <<'PY_SOURCE'
#!/usr/bin/env python3
"""Aggregates what each database recorded into one TSV per workload, and
prints the report.

  agg.py mysql SLOWLOG SLOW_OFFSET GENLOG GEN_OFFSET USER OUT.tsv
  agg.py sqlite TRACE FIRST_LINE OUT.tsv
  agg.py report RESULTS_DIR

TSV columns: calls, rows, ms, x1, x2, x3, statement (normalized text).
  PostgreSQL (pg_stat_statements): x1 shared blocks hit+read, x2 WAL records
  MariaDB (slow log, general log): rows = affected + sent, x1 rows examined,
    x2 COM_STMT_PREPARE of that text (general log), x3 COM_STMT_CLOSE
  SQLite (sqlite3_trace_v2): x1 full-scan steps, x2 VM steps, x3 runs on a
    statement prepared for that run (not from diesel's statement cache)
"""
import collections
import glob
import os
import re
import sys


def norm_mysql(sql):
    s = sql.strip().rstrip(";").strip()
    s = re.sub(r"'(?:[^'\\]|\\.|'')*'", "?", s)
    s = re.sub(r"(?<![\w`?])-?\d+(?:\.\d+)?(?![\w`])", "?", s)
    s = re.sub(r"(?<!IS )(?<!NOT )\bNULL\b", "?", s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"IN \(\?(?:, \?)*\)", "IN (?...)", s)
    s = re.sub(r"(\([^()]*\))(?:, \1)+", r"\1, ...", s)
    return s


def mysql(slow, slow_off, gen, gen_off, user, out):
    stats = collections.defaultdict(lambda: [0, 0, 0.0, 0, 0, 0])
    with open(slow, "rb") as f:
        f.seek(int(slow_off))
        text = f.read().decode("utf-8", "replace")
    for entry in re.split(r"(?m)^# User@Host: ", text)[1:]:
        who = entry.split("[", 1)[0]
        if who != user:
            continue
        m = re.search(r"Query_time: ([\d.]+).*?Rows_sent: (\d+)\s+Rows_examined: (\d+)", entry)
        a = re.search(r"Rows_affected: (\d+)", entry)
        body = [l for l in entry.splitlines()[1:] if not l.startswith("#")]
        body = [l for l in body if not re.match(r"(SET timestamp=\d+;|use \w+;)$", l)]
        sql = " ".join(body).strip()
        if not sql or not m:
            continue
        st = stats[norm_mysql(sql)]
        st[0] += 1
        st[1] += int(m.group(2)) + (int(a.group(1)) if a else 0)
        st[2] += float(m.group(1)) * 1000
        st[3] += int(m.group(3))
    # The general log: which texts are prepared (and closed) each time.
    users, last = {}, {}
    line_re = re.compile(r"^(?:\d{6}\s+\d+:\d+:\d+)?\s+(\d+) (Connect|Query|Prepare|Execute|Close stmt|Quit|Init DB|Reset stmt)\t?(.*)$")
    with open(gen, "rb") as f:
        data = f.read()
    pos = 0
    for raw in data.decode("utf-8", "replace").splitlines(keepends=True):
        here = pos
        pos += len(raw.encode("utf-8", "replace"))
        m = line_re.match(raw.rstrip("\n"))
        if not m:
            continue
        tid, cmd, arg = m.group(1), m.group(2), m.group(3)
        if cmd == "Connect":
            users[tid] = arg.split("@", 1)[0]
            continue
        if here < int(gen_off) or users.get(tid) != user:
            continue
        if cmd == "Prepare":
            last[tid] = norm_mysql(arg)
            stats[last[tid]][4] += 1
        elif cmd == "Close stmt" and tid in last:
            stats[last[tid]][5] += 1
    with open(out, "w") as o:
        for q, (c, r, ms, ex, prep, close) in sorted(stats.items(), key=lambda kv: -kv[1][0]):
            o.write(f"{c}\t{r}\t{ms:.3f}\t{ex}\t{prep}\t{close}\t{q}\n")


def sqlite(trace, first, out):
    stats = collections.defaultdict(lambda: [0, 0, 0.0, 0, 0, 0])
    with open(trace, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < int(first):
                continue
            parts = line.rstrip("\n").split("\t", 5)
            if len(parts) < 6:
                continue
            ns, rows, full, vm, fresh, sql = parts
            st = stats[re.sub(r"\s+", " ", sql).strip()]
            st[0] += 1
            st[1] += int(rows)
            st[2] += max(int(ns), 0) / 1e6
            st[3] += int(full)
            st[4] += int(vm)
            st[5] += int(fresh)
    with open(out, "w") as o:
        for q, (c, r, ms, full, vm, fresh) in sorted(stats.items(), key=lambda kv: -kv[1][0]):
            o.write(f"{c}\t{r}\t{ms:.3f}\t{full}\t{vm}\t{fresh}\t{q}\n")


# What each statement is, from its text (any backend), matched on a form
# with every constant and placeholder as `?` and without backticks.
RULES = [
    ("txn", r"^(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|SAVEPOINT|RELEASE)\b"),
    ("session", r"^(SET|PRAGMA|SHOW) "),
    ("record (fast lane)", r"WITH paused AS .*INSERT INTO video_del_rec|INSERT INTO video_del_rec \(id, created_at, not_before, source, request_id, state, locked_by"),
    ("record", r"INSERT (OR IGNORE |IGNORE )?INTO video_del_rec\b"),
    ("claim: urgent", r"priority = \? AND not_before <= \? ORDER BY not_before"),
    ("claim: expired leases", r"state = \? AND not_before <= \?"),
    ("claim: oldest due", r"not_before <= \? ORDER BY not_before LIMIT \?"),
    ("claim: lease (MySQL UPDATE)", r"^UPDATE video_del_rec SET state = \?, locked_by"),
    ("ack: remove + receipt + counts (one statement)", r"^WITH gone AS"),
    ("ack: lock leased rows (MySQL)", r"^SELECT video_del_rec\.id .*FOR UPDATE"),
    ("ack: receipts INSERT ... SELECT", r"^INSERT INTO video_del_receipt"),
    ("ack: DELETE done rows", r"^DELETE FROM video_del_rec\b"),
    ("ack: reschedule failed", r"^UPDATE video_del_rec SET state = \?, attempts"),
    ("counts UPDATE", r"^UPDATE video_del_counts"),
    ("pause read", r"^SELECT video_del_control\.value FROM video_del_control"),
    ("control UPDATE (pause/resume)", r"^UPDATE video_del_control SET value"),
    ("stats (harness)", r"FROM video_del_counts|COUNT\(\*\)|min\(video_del_rec\.not_before\)"),
]
BACKGROUND = r"video_del_event|video_del_receipt|video_del_announce|video_del_control SET locked_by|statement_timestamp|current_setting|pg_is_in_recovery|wsrep|@@|UNIX_TIMESTAMP|julianday|__diesel_schema_migrations|^SELECT \?$"


def flat(q):
    s = q.replace("`", "").replace('"', "")
    s = re.sub(r"\$\d+", "?", s)
    s = re.sub(r"'(?:[^']|'')*'", "?", s)
    s = re.sub(r"(?<![\w?])-?\d+(?:\.\d+)?(?!\w)", "?", s)
    return s


def kind(q):
    s = flat(q)
    for name, rx in RULES:
        if re.search(rx, s):
            return name
    if re.search(BACKGROUND, s):
        return "background"
    return "other"


def short(q, width=150):
    s = q
    s = re.sub(r"NOT EXISTS \(SELECT (1|\$\d+|\?) FROM video_del_control WHERE name = ('paused'|\$\d+|\?) AND value <> (0|\$\d+|\?)\)", "NOT EXISTS(paused)", s)
    s = re.sub(r"SET state = ('running'|\$\d+), locked_by = \S+ locked_until = \S+ not_before = \S+ claims = claims \+ (1|\$\d+)", "SET <lease>", s)
    s = re.sub(r"RETURNING id, attempts, created_at, source, request_id, paths", "RETURNING <claimed>", s)
    s = re.sub(r"CAST\(\(julianday\('now'\) - 2440587\.5\) \* 86400000\.0 AS INTEGER\)|CAST\(extract\(\$\d+ FROM statement_timestamp\(\)\) \* \$\d+ AS BIGINT\)", "<db now>", s)
    s = s.replace("`", "").replace('"', "")
    s = re.sub(r"video_del_(\w+)\.(\w+)", r"\2", s)
    if len(s) > width:
        s = s[: width - 3] + "..."
    return s.replace("|", "\\|")


def read_tsv(path):
    rows = []
    for line in open(path, encoding="utf-8", errors="replace"):
        p = line.rstrip("\n").split("\t", 6)
        if len(p) == 7:
            rows.append((int(p[0]), int(p[1]), float(p[2]), p[3], p[4], p[5], p[6]))
    return rows


def meta(path):
    m = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.strip().split("=", 1)
                m[k] = v
    return m


HEAD = {
    "pg": ("blocks", "WAL recs", None),
    "my": ("rows examined", "prepares", "closes"),
    "sqlite": ("full-scan steps", "VM steps", "prepares"),
}
NAMES = {"pg": "PostgreSQL 15", "my": "MariaDB 10.11", "sqlite": "SQLite (bundled)"}
NOT_PER_ID = {"stats (harness)", "background"}


def report(res):
    order = ["record_v1", "drain", "idle", "seed_c1", "seed_c16", "live_v1",
             "record_v1_nolane", "drain_nolane", "seed_c1_nolane", "seed_c16_nolane", "live_v1_nolane"]
    summary = []
    for backend in ["pg", "my", "sqlite"]:
        files = {os.path.basename(f)[len(backend) + 1:-4]: f for f in glob.glob(f"{res}/{backend}-*.tsv")
                 if not f.endswith((".tables.tsv", ".protocol.tsv", "-plans.tsv"))}
        for label in [l for l in order if l in files] + sorted(set(files) - set(order)):
            rows = read_tsv(files[label])
            m = meta(f"{res}/{backend}-{label}.meta")
            n = int(m.get("ids", "0") or 0)
            unit = m.get("unit", "ids")
            h1, h2, h3 = HEAD[backend]
            print(f"\n### {NAMES[backend]}: {label} ({m.get('what', '')})\n")
            print(f"{n} {unit}, {m.get('secs', '?')} s wall; fast_lane {m.get('fast_lane', '-')}; {m.get('note', '')}\n")
            cols = ["kind", "statement", "calls", "rows", "total ms", f"calls / 1,000 {unit}", h1, h2] + ([h3] if h3 else [])
            print("| " + " | ".join(cols) + " |")
            print("|" + "---|" * len(cols))
            by_kind = collections.Counter()
            tot = 0
            for calls, r, ms, x1, x2, x3, q in rows:
                if backend == "pg" and re.search(r"pg_stat_statements|pg_stat_reset", q):
                    continue
                k = kind(q)
                by_kind[k] += calls
                if k not in NOT_PER_ID:
                    tot += calls
                per = f"{1000 * calls / n:.1f}" if n else "-"
                vals = [k, f"`{short(q)}`", str(calls), str(r), f"{ms:.1f}", per, x1, x2] + ([x3] if h3 else [])
                print("| " + " | ".join(vals) + " |")
            per_id = tot / n if n else 0
            print(f"\n**{tot} statements** (harness and background excluded)"
                  + (f" = **{per_id:.3f} per {unit[:-1] if unit.endswith('s') else unit}**" if n else "")
                  + "; by kind: " + ", ".join(f"{k} {v}" for k, v in by_kind.most_common()))
            proto = f"{res}/{backend}-{label}.protocol.tsv"
            if os.path.exists(proto):
                print("\nperformance_schema, the server's user, by command: "
                      + ", ".join(f"{l.split(chr(9))[0]} {l.split(chr(9))[1].strip()}" for l in open(proto) if l.strip()))
            tables = f"{res}/{backend}-{label}.tables.tsv"
            if os.path.exists(tables):
                lines = [l.rstrip("\n").split("\t") for l in open(tables) if l.strip()]
                if lines:
                    hdr = lines[0]
                    print("\n| " + " | ".join(hdr) + " |")
                    print("|" + "---|" * len(hdr))
                    for l in lines[1:]:
                        print("| " + " | ".join(l) + " |")
            summary.append((NAMES[backend], label, n, unit, tot, per_id))
    print("\n### Summary: statements per id\n")
    print("| backend | workload | ids | statements | per id |")
    print("|---|---|---|---|---|")
    for b, label, n, unit, tot, per in summary:
        print(f"| {b} | {label} | {n} {unit} | {tot} | {per:.3f} |")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "mysql":
        mysql(*sys.argv[2:9])
    elif cmd == "sqlite":
        sqlite(*sys.argv[2:5])
    elif cmd == "report":
        report(sys.argv[2])
PY_SOURCE
}

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
WORK=${WORK:-/tmp/vsprof}
BIN_SRC=${BIN:-/work/main/target/release/video-scheduler}
N_DRAIN=${N_DRAIN:-20000}     # ids queued for the drain
BODY=${BODY:-1000}            # ids per POST /v1/deletions
N_SEED=${N_SEED:-5000}        # GET /video-delete-record/{id}
PAR=${PAR:-16}                # concurrent connections of the concurrent seed run
SETTLE=${SETTLE:-11}          # PostgreSQL backends flush table counters within 10 s of going idle
BACKENDS=${*:-pg my sqlite}
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=/tmp/pgprof PGPORT=55432
MYDATA=/tmp/myprof MYPORT=53306
RES=$WORK/results
mkdir -p "$WORK/bin" "$RES"
rm -f "$RES"/*

# A copy of the binary (the tree may be rebuilt while this runs); its path
# must contain "video-scheduler" (the SQLite shim checks it).
BIN=$WORK/bin/video-scheduler
[ "$(readlink -f "$BIN_SRC")" = "$(readlink -f "$BIN")" ] || cp -f "$BIN_SRC" "$BIN"
echo "binary: $BIN ($(sha256sum "$BIN" | cut -c1-16))" >&2

write_helpers   # sqltrace.c, agg.py (at the end of this file)
gcc -O2 -shared -fPIC -o "$WORK/sqltrace.so" "$WORK/sqltrace.c" -lpthread 2>/dev/null

# ---------------------------------------------------------------------------
# Cleanup: only what this script started, by pid
# ---------------------------------------------------------------------------
SERVER_PID= MY_PID= PG_STARTED=
cleanup() {
    set +e
    stop_server
    if [ -n "$MY_PID" ]; then kill -TERM "$MY_PID" 2>/dev/null; wait "$MY_PID" 2>/dev/null; MY_PID=; fi
    if [ -n "$PG_STARTED" ]; then
        su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $PGDATA -m fast -w stop" >/dev/null 2>&1; PG_STARTED=
    fi
    rm -rf "$PGDATA" /tmp/pgprof.log "$MYDATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------------------
# Inputs: bodies of BODY ids, seed URL lists
# ---------------------------------------------------------------------------
# ids: 8 hex digits of the run (`tag`), then a counter, UUID-shaped
make_bodies() {  # dir tag
    mkdir -p "$1"
    python3 - "$1" "$2" "$N_DRAIN" "$BODY" <<'PY'
import json, sys
d, tag, n, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for b in range(0, n, body):
    ids = ["%08x-0000-4000-8000-%012x" % (tag, i) for i in range(b, min(b + body, n))]
    open(f"{d}/{b // body:04d}.json", "w").write(json.dumps({"ids": ids}))
PY
}
make_seed() {  # file tag url
    local i
    for ((i = 1; i <= N_SEED; i++)); do
        printf 'url = "%s/video-delete-record/%08x-0000-4000-8000-%012x"\noutput = "/dev/null"\n' "$3" "$2" "$i"
    done > "$1"
}
post_bodies() {  # dir
    local f
    for f in "$1"/*.json; do
        curl -sf -XPOST "$URL/v1/deletions" -H 'content-type: application/json' --data-binary @"$f" -o /dev/null -w '%{http_code}\n'
    done | sort | uniq -c | tr -s ' ' >&2
}

# ---------------------------------------------------------------------------
# The scheduler
# ---------------------------------------------------------------------------
start_server() {  # dir [env assignments...]
    local dir=$1; shift
    : > "$dir/server.log"
    ( cd "$dir" && exec env "$@" "$BIN" --config "$dir/conf.json" serve >> "$dir/server.log" 2>&1 ) &
    SERVER_PID=$!
    URL=
    for _ in $(seq 200); do
        URL=$(grep -o 'listening on http://[0-9.:]*' "$dir/server.log" | head -1 | sed 's/listening on //') || true
        [ -n "$URL" ] && break
        sleep 0.1
    done
    [ -n "$URL" ] || { cat "$dir/server.log" >&2; exit 1; }
    log "server $SERVER_PID at $URL"
}
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; fi
}
write_conf() {  # dir database_url fast_lane
    mkdir -p "$1/videos"
    cat > "$1/conf.json" <<EOF
{"listen": "127.0.0.1:0", "database_url": "$2", "storage": {"root": "$1/videos"},
 "batch_size": 500, "executors": 4, "fast_lane": $3}
EOF
}

# ---------------------------------------------------------------------------
# PostgreSQL: pg_stat_statements (the server's role `postgres` only; the
# watcher role polls and reads) and pg_stat_user_tables
# ---------------------------------------------------------------------------
PSQL="psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $PGPORT -U watcher -d prof"
pg_start() {
    rm -rf "$PGDATA" /tmp/pgprof.log
    su postgres -s /bin/sh -c "$PGBIN/initdb -D $PGDATA -A trust -U postgres" >/dev/null
    su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $PGDATA -l /tmp/pgprof.log -w start -o '-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.max=10000'" >/dev/null
    PG_STARTED=1
    psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d postgres -c "CREATE ROLE watcher LOGIN SUPERUSER"
}
pg_newdb() {
    psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d postgres -c "DROP DATABASE IF EXISTS prof" -c "CREATE DATABASE prof OWNER postgres"
    psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d prof -c "CREATE EXTENSION pg_stat_statements"
}
pg_reset() { sleep "$SETTLE"; $PSQL -Atc "SELECT pg_stat_statements_reset(), pg_stat_reset()" >/dev/null; }
pg_left() { $PSQL -Atc "SELECT coalesce(sum(queued) + sum(failed), 0) FROM video_del_counts"; }
pg_dump() {  # label
    $PSQL -c "COPY (SELECT calls, rows, round(total_exec_time::numeric, 3), shared_blks_hit + shared_blks_read, wal_records, '',
        regexp_replace(query, '\s+', ' ', 'g') FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
        WHERE r.rolname = 'postgres' AND s.dbid = (SELECT oid FROM pg_database WHERE datname = 'prof')
        ORDER BY calls DESC, total_exec_time DESC) TO STDOUT" > "$RES/pg-$1.tsv"
    sleep "$SETTLE"   # the table counters, flushed by idle backends
    { printf 'table\tseq_scan\tidx_scan\tn_tup_ins\tn_tup_upd\tn_tup_hot_upd\tn_tup_del\n'
      $PSQL -c "COPY (SELECT relname, seq_scan, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
        FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname IN ('video_del_rec', 'video_del_receipt', 'video_del_counts', 'video_del_control')
        ORDER BY relname) TO STDOUT"; } > "$RES/pg-$1.tables.tsv"
}
pg_explain() {  # the claims, the ack and the lane's INSERT on a copy of the backlog, deletions not paused
    $PSQL 2>&1 <<'SQL' | sed -E "s/'\{[^}]{200,}\}'/'{...the 500 ids...}'/g" > "$RES/pg-explain.txt"
\pset format unaligned
\pset tuples_only on
CREATE SCHEMA eqp;
CREATE TABLE eqp.video_del_rec (LIKE public.video_del_rec INCLUDING ALL);
INSERT INTO eqp.video_del_rec SELECT * FROM public.video_del_rec;
CREATE TABLE eqp.video_del_control (LIKE public.video_del_control INCLUDING ALL);
INSERT INTO eqp.video_del_control SELECT * FROM public.video_del_control;
UPDATE eqp.video_del_control SET value = 0;
CREATE TABLE eqp.video_del_receipt (LIKE public.video_del_receipt INCLUDING ALL);
CREATE TABLE eqp.video_del_counts (LIKE public.video_del_counts INCLUDING ALL);
INSERT INTO eqp.video_del_counts SELECT * FROM public.video_del_counts;
ANALYZE eqp.video_del_rec, eqp.video_del_control, eqp.video_del_counts;
SET search_path = eqp;
\echo '== claim: urgent (none urgent)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE video_del_rec SET state = 'running', locked_by = 'x', locked_until = 9000000000000000, not_before = 9000000000000000, claims = claims + 1
 WHERE id IN (SELECT id FROM video_del_rec WHERE NOT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0)
   AND priority = 1 AND not_before <= 8000000000000000 ORDER BY not_before LIMIT 500 FOR UPDATE SKIP LOCKED)
 RETURNING id, attempts, created_at, source, request_id, paths;
BEGIN;
\echo '== claim: oldest due, 500 of the backlog'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE video_del_rec SET state = 'running', locked_by = 'x', locked_until = 9000000000000000, not_before = 9000000000000000, claims = claims + 1
 WHERE id IN (SELECT id FROM video_del_rec WHERE NOT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0)
   AND not_before <= 8000000000000000 ORDER BY not_before LIMIT 500 FOR UPDATE SKIP LOCKED)
 RETURNING id, attempts, created_at, source, request_id, paths;
SELECT array_agg(id)::text AS ids FROM video_del_rec WHERE locked_by = 'x' \gset
\echo '== ack: the 500 rows removed, receipts written, counts kept, one statement'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH gone AS (DELETE FROM video_del_rec WHERE id = ANY(:'ids'::varchar[]) AND locked_by = 'x'
   AND locked_until > CAST(extract(epoch FROM statement_timestamp()) * 1000 AS BIGINT)
   RETURNING id, created_at, attempts, source, request_id, claims),
 kept AS (INSERT INTO video_del_receipt (id, requested_at, completed_at, attempts, deleted, missing, acked_by, source, request_id, targets, claims)
   SELECT id, created_at, 1, attempts + 1, 0, 1, 'x', source, request_id, '[]', claims FROM gone RETURNING completions),
 counted AS (UPDATE video_del_counts SET queued = queued - (SELECT count(*) FROM gone),
   done = done + (SELECT count(*) FROM kept WHERE completions = 1) WHERE shard = 3)
SELECT count(*) AS removed FROM gone;
ROLLBACK;
BEGIN;
\echo '== the lane INSERT as the server sends it (one id): every reference to l.go is an InitPlan reading the pause'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH paused AS (SELECT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0) AS stop),
 leased AS (SELECT NOT stop AS go, 1::bigint AS now, 'x'::varchar AS owner, 2::bigint AS until FROM paused),
 new AS (INSERT INTO video_del_rec (id, created_at, not_before, source, request_id, state, locked_by, locked_until, claims)
   SELECT id, now, CASE WHEN l.go THEN until ELSE now END, source, request_id, CASE WHEN l.go THEN 'running' ELSE 'pending' END,
     CASE WHEN l.go THEN owner END, CASE WHEN l.go THEN until END, CASE WHEN l.go THEN 1 ELSE 0 END
   FROM unnest('{lane-1}'::varchar[], '{seed}'::varchar[], '{NULL}'::varchar[]) AS row(id, source, request_id), leased l
   ON CONFLICT DO NOTHING RETURNING id, state),
 counted AS (UPDATE video_del_counts SET queued = queued + (SELECT count(*) FROM new) WHERE shard = 3)
SELECT id, state::text AS state FROM new;
ROLLBACK;
BEGIN;
\echo '== the same with leased AS MATERIALIZED: the pause read once'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH paused AS (SELECT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0) AS stop),
 leased AS MATERIALIZED (SELECT NOT stop AS go, 1::bigint AS now, 'x'::varchar AS owner, 2::bigint AS until FROM paused),
 new AS (INSERT INTO video_del_rec (id, created_at, not_before, source, request_id, state, locked_by, locked_until, claims)
   SELECT id, now, CASE WHEN l.go THEN until ELSE now END, source, request_id, CASE WHEN l.go THEN 'running' ELSE 'pending' END,
     CASE WHEN l.go THEN owner END, CASE WHEN l.go THEN until END, CASE WHEN l.go THEN 1 ELSE 0 END
   FROM unnest('{lane-1}'::varchar[], '{seed}'::varchar[], '{NULL}'::varchar[]) AS row(id, source, request_id), leased l
   ON CONFLICT DO NOTHING RETURNING id, state),
 counted AS (UPDATE video_del_counts SET queued = queued + (SELECT count(*) FROM new) WHERE shard = 3)
SELECT id, state::text AS state FROM new;
ROLLBACK;
RESET search_path;
DROP SCHEMA eqp CASCADE;
SQL
}

pg_plans() {  # tag: the plans of a drain as the server runs them (auto_explain), scans counted by statement
    B=pg DIR=$WORK/pg_plans
    rm -rf "$DIR"; mkdir -p "$DIR"; pg_newdb
    $PSQL -d postgres -c "LOAD 'auto_explain'" -c "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" -c "ALTER SYSTEM SET auto_explain.log_analyze = on" \
        -c "ALTER SYSTEM SET auto_explain.log_buffers = on" -c "ALTER SYSTEM SET auto_explain.log_timing = off" -c "SELECT pg_reload_conf()" >/dev/null
    write_conf "$DIR" "postgres://postgres@127.0.0.1:$PGPORT/prof" true
    "$BIN" --config "$DIR/conf.json" migrate >&2
    "$BIN" --config "$DIR/conf.json" pause >/dev/null
    make_bodies "$DIR/bodies" "$1"
    start_server "$DIR"
    post_bodies "$DIR/bodies"
    local from; from=$(wc -l < /tmp/pgprof.log)
    resume; wait_empty; stop_server
    tail -n +"$from" /tmp/pgprof.log > "$DIR/plans.log"
    $PSQL -d postgres -c "ALTER SYSTEM RESET ALL" -c "SELECT pg_reload_conf()" >/dev/null
    awk '/Query Text:/ { k = "other" }
         /Query Text: WITH gone/ { k = "ack (WITH gone ...)" }
         /Query Text: UPDATE video_del_rec SET state/ { k = "claim (UPDATE ... WHERE id IN (SELECT ...))" }
         /Query Text:/ { n[k]++ }
         /Seq Scan on video_del_rec / { seq[k]++ }
         /Index Scan using video_del_rec_pkey on video_del_rec / { pk[k]++ }
         /Hash Semi Join/ { hj[k]++ }
         /Rows Removed by Filter/ { sub(/.*Rows Removed by Filter: /, ""); if (k != "other") rm[k] += $0 }
         END { printf "statement\tplans\tSeq Scan on video_del_rec\tIndex Scan using video_del_rec_pkey\tHash Semi Join\trows removed by filter\n";
               for (k in n) printf "%s\t%d\t%d\t%d\t%d\t%d\n", k, n[k], seq[k], pk[k], hj[k], rm[k] }' "$DIR/plans.log" > "$RES/pg-drain-plans.tsv"
    log "pg drain plans: $(tr '\n' ';' < "$RES/pg-drain-plans.tsv")"
}

# ---------------------------------------------------------------------------
# MariaDB: the slow log at long_query_time 0 (every statement with its rows
# and time, the prepared ones expanded), the general log (which texts are
# prepared and closed each time), performance_schema (commands by user,
# table I/O). The server connects as root, the watcher as `watcher`.
# ---------------------------------------------------------------------------
MYSQL="mariadb -h127.0.0.1 -P$MYPORT -uwatcher prof"
my_start() {
    rm -rf "$MYDATA"
    mariadb-install-db --datadir=$MYDATA --user=mysql --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
    /usr/sbin/mariadbd --no-defaults --user=mysql --datadir=$MYDATA --port=$MYPORT --bind-address=127.0.0.1 \
        --socket=/tmp/myprof.sock --pid-file=$MYDATA/mariadbd.pid --log-error=$MYDATA/error.log \
        --performance-schema=ON --performance-schema-consumer-events-statements-current=ON \
        --slow-query-log=ON --slow-query-log-file=$MYDATA/slow.log --long-query-time=0 \
        --general-log=ON --general-log-file=$MYDATA/general.log &
    MY_PID=$!
    for _ in $(seq 100); do mariadb-admin -h127.0.0.1 -P$MYPORT -uroot ping >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb -h127.0.0.1 -P$MYPORT -uroot -e "CREATE USER watcher@'%'; GRANT ALL ON *.* TO watcher@'%'"
}
my_newdb() { mariadb -h127.0.0.1 -P$MYPORT -uroot -e "DROP DATABASE IF EXISTS prof; CREATE DATABASE prof"; }
my_reset() {
    $MYSQL -e "TRUNCATE performance_schema.events_statements_summary_by_user_by_event_name;
               TRUNCATE performance_schema.table_io_waits_summary_by_table"
    MY_SLOW_OFF=$(stat -c %s $MYDATA/slow.log) MY_GEN_OFF=$(stat -c %s $MYDATA/general.log)
}
my_left() { $MYSQL -NBe "SELECT coalesce(sum(queued) + sum(failed), 0) FROM video_del_counts"; }
my_dump() {  # label
    python3 "$WORK/agg.py" mysql $MYDATA/slow.log "$MY_SLOW_OFF" $MYDATA/general.log "$MY_GEN_OFF" root "$RES/my-$1.tsv"
    $MYSQL -NBe "SELECT EVENT_NAME, COUNT_STAR FROM performance_schema.events_statements_summary_by_user_by_event_name
                 WHERE USER = 'root' AND COUNT_STAR > 0 ORDER BY COUNT_STAR DESC" > "$RES/my-$1.protocol.tsv"
    { printf 'table\trows fetched\trows inserted\trows updated\trows deleted\n'
      $MYSQL -NBe "SELECT OBJECT_NAME, COUNT_FETCH, COUNT_INSERT, COUNT_UPDATE, COUNT_DELETE
        FROM performance_schema.table_io_waits_summary_by_table WHERE OBJECT_SCHEMA = 'prof'
        AND OBJECT_NAME IN ('video_del_rec', 'video_del_receipt', 'video_del_counts', 'video_del_control') ORDER BY OBJECT_NAME"
    } > "$RES/my-$1.tables.tsv"
}
my_explain() {  # the claim's and the ack's statements on a copy of the backlog (database eqp), not paused
    local in500
    in500=$(python3 -c 'import json,sys; print(", ".join("\x27%s\x27" % i for i in json.load(open(sys.argv[1]))["ids"][:500]))' "$DIR/bodies/0000.json")
    $MYSQL -t > "$RES/my-explain.txt" 2>&1 <<SQL
CREATE DATABASE eqp;
CREATE TABLE eqp.video_del_rec LIKE prof.video_del_rec;
INSERT INTO eqp.video_del_rec SELECT * FROM prof.video_del_rec;
CREATE TABLE eqp.video_del_control LIKE prof.video_del_control;
INSERT INTO eqp.video_del_control SELECT * FROM prof.video_del_control;
UPDATE eqp.video_del_control SET value = 0;
USE eqp;
SELECT 'claim: urgent' AS statement;
ANALYZE SELECT id, attempts, created_at, source, request_id, paths FROM video_del_rec WHERE NOT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0) AND priority = 1 AND not_before <= 8000000000000000 ORDER BY not_before LIMIT 500 OFFSET 0 FOR UPDATE SKIP LOCKED;
SELECT 'claim: oldest due' AS statement;
ANALYZE SELECT id, attempts, created_at, source, request_id, paths FROM video_del_rec WHERE NOT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0) AND not_before <= 8000000000000000 ORDER BY not_before LIMIT 500 OFFSET 0 FOR UPDATE SKIP LOCKED;
SELECT 'claim: lease, 500 ids' AS statement;
ANALYZE UPDATE video_del_rec SET state = 'running', locked_by = 'x', locked_until = 9000000000000000, not_before = 9000000000000000, claims = claims + 1 WHERE id IN ($in500);
SELECT 'ack: locking read, 500 ids' AS statement;
ANALYZE SELECT id FROM video_del_rec WHERE id IN ($in500) AND locked_by = 'x' AND locked_until > CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) FOR UPDATE;
SELECT 'ack: DELETE, 500 ids' AS statement;
ANALYZE DELETE FROM video_del_rec WHERE id IN ($in500);
DROP DATABASE eqp;
SQL
}

# ---------------------------------------------------------------------------
# SQLite: SQLite's own sqlite3_trace_v2 and sqlite3_stmt_status, installed
# into the server's bundled SQLite by the LD_PRELOAD shim (sqltrace.c)
# ---------------------------------------------------------------------------
SQLITE_DB=
sqlite_newdb() { :; }
sqlite_reset() { SQ_FIRST=$(( $(wc -l < "$SQ_TRACE") + 1 )); }
sqlite_left() { sqlite3 "$SQLITE_DB" "SELECT coalesce(sum(queued) + sum(failed), 0) FROM video_del_counts"; }
sqlite_dump() { python3 "$WORK/agg.py" sqlite "$SQ_TRACE" "$SQ_FIRST" "$RES/sqlite-$1.tsv"; }
sqlite_explain() {  # every statement the server ran, on a copy holding 100,000 rows
    local db=$WORK/eqp.db q
    rm -f $db*
    cp "$SQLITE_DB" $db
    sqlite3 $db <<'SQL'
DELETE FROM video_del_rec;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO video_del_rec (id, created_at, not_before, source, state, priority, locked_by, locked_until, claims)
SELECT printf('%08x-0000-4000-8000-%012x', 99, i), 0, i * 10, 'v1',
       CASE WHEN i % 100 = 0 THEN 'running' ELSE 'pending' END, CASE WHEN i % 1000 = 0 THEN 1 ELSE 0 END,
       CASE WHEN i % 100 = 0 THEN 'x' END, CASE WHEN i % 100 = 0 THEN i * 10 END, 0 FROM n;
SQL
    cut -f6 "$SQ_TRACE" | sort -u | grep -E '^(SELECT|INSERT|UPDATE|DELETE|WITH) ' | grep -v ';$' \
      | grep -v '__diesel_schema_migrations' | while IFS= read -r q; do
        printf '\n-- %s\n' "$q"
        sqlite3 $db "EXPLAIN QUERY PLAN $q" 2>&1 || true
    done > "$RES/sqlite-eqp.txt"
    # The claim's subselect while paused and not: VM steps (sqlite3's .stats)
    local claim="SELECT count(*) FROM (SELECT id FROM video_del_rec WHERE NOT EXISTS (SELECT 1 FROM video_del_control WHERE name = 'paused' AND value <> 0) AND not_before <= 9000000000000000 ORDER BY not_before LIMIT 500)"
    { echo; echo "-- the oldest-due claim's subselect over 100,000 due rows, paused, then not paused"
      sqlite3 $db "UPDATE video_del_control SET value = 1 WHERE name = 'paused'"
      sqlite3 -cmd ".stats on" $db "$claim" 2>&1 | grep -E '^[0-9]|Steps'
      sqlite3 $db "UPDATE video_del_control SET value = 0 WHERE name = 'paused'"
      sqlite3 -cmd ".stats on" $db "$claim" 2>&1 | grep -E '^[0-9]|Steps'
    } >> "$RES/sqlite-eqp.txt"
    rm -f $db*
}

# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------
wait_empty() {  # the kept counts (queued + failed) at 0, read by the watcher
    local n=0 left
    while :; do
        left=$(${B}_left)
        n=$((n + 1))
        [ "$left" = 0 ] && break
        [ $n -gt 3000 ] && { log "not drained: $left left"; break; }
        sleep 0.2
    done
    POLLS=$n
}
window() {  # label ids unit what fast_lane wait(yes|no) command...
    local label=$1 ids=$2 unit=$3 what=$4 lane=$5 wait=$6; shift 6
    ${B}_reset
    local t0; t0=$(date +%s.%N)
    "$@"
    POLLS=0
    [ "$wait" = yes ] && wait_empty
    local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
    ${B}_dump "$label"
    curl -s "$URL/v1/stats" > "$RES/$B-$label.stats.json"   # after the dump: not counted
    printf 'ids=%s\nunit=%s\nwhat=%s\nfast_lane=%s\nsecs=%.2f\nnote=%s\n' "$ids" "$unit" "$what" "$lane" "$secs" \
        "watcher polls: $POLLS; done so far: $(jq -r .done "$RES/$B-$label.stats.json")" > "$RES/$B-$label.meta"
    log "$B $label: $secs s, $POLLS polls"
}
record_paused() { post_bodies "$DIR/bodies"; }
resume() { curl -sf -XPOST "$URL/v1/resume" -o /dev/null; }
idle10() { sleep 10; }
seed_c1() { curl -s -K "$1" -w '%{http_code}\n' | sort | uniq -c | tr -s ' ' >&2; }
seed_par() { curl -s --no-progress-meter --parallel --parallel-max "$PAR" -K "$1" -w '%{http_code}\n' | sort | uniq -c | tr -s ' ' >&2; }
live() { post_bodies "$1"; }

run_backend() {  # B lane(true|false) suffix tag-base
    local lane=$2 sfx=$3 tag=$4 url
    B=$1
    DIR=$WORK/$B$sfx
    rm -rf "$DIR"; mkdir -p "$DIR"
    case $B in
        pg) url="postgres://postgres@127.0.0.1:$PGPORT/prof" ;;
        my) url="mysql://root@127.0.0.1:$MYPORT/prof" ;;
        sqlite) SQLITE_DB=$DIR/vs.db; url="sqlite://$SQLITE_DB" ;;
    esac
    ${B}_newdb
    write_conf "$DIR" "$url" "$lane"
    local envs=()
    if [ "$B" = sqlite ]; then
        SQ_TRACE=$DIR/trace.tsv; : > "$SQ_TRACE"
        envs=(LD_PRELOAD="$WORK/sqltrace.so" SQLTRACE_OUT="$SQ_TRACE")
    fi
    env "${envs[@]}" "$BIN" --config "$DIR/conf.json" migrate >&2
    env "${envs[@]}" "$BIN" --config "$DIR/conf.json" pause >/dev/null
    make_bodies "$DIR/bodies" $((tag + 1))
    make_bodies "$DIR/live" $((tag + 2))
    start_server "$DIR" "${envs[@]}"
    make_seed "$DIR/seed1.curl" $((tag + 3)) "$URL"
    make_seed "$DIR/seedp.curl" $((tag + 4)) "$URL"
    window "record_v1$sfx" "$N_DRAIN" ids "POST /v1/deletions, $BODY ids a body, deletions paused" "$lane" no record_paused
    if [ "$sfx" = "" ] && [ "$B" != sqlite ]; then ${B}_explain || log "$B explain failed"; fi
    window "drain$sfx" "$N_DRAIN" ids "resume, then claims and acks until nothing is left" "$lane" yes resume
    if [ "$sfx" = "" ]; then window "idle$sfx" 10 seconds "10 s, nothing queued" "$lane" yes idle10; fi
    window "seed_c1$sfx" "$N_SEED" ids "GET /video-delete-record/{id}, one connection, one id at a time" "$lane" yes seed_c1 "$DIR/seed1.curl"
    window "seed_c$PAR$sfx" "$N_SEED" ids "GET /video-delete-record/{id}, $PAR connections" "$lane" yes seed_par "$DIR/seedp.curl"
    window "live_v1$sfx" "$N_DRAIN" ids "POST /v1/deletions, $BODY ids a body, server deleting meanwhile" "$lane" yes live "$DIR/live"
    stop_server
    if [ "$sfx" = "" ] && [ "$B" = sqlite ]; then sqlite_explain || log "sqlite explain failed"; fi
}

for B in $BACKENDS; do
    case $B in
        pg) pg_start; run_backend pg true "" 16; run_backend pg false _nolane 32; pg_plans 96 ;;
        my) my_start; run_backend my true "" 48 ;;
        sqlite) run_backend sqlite true "" 64; run_backend sqlite false _nolane 80 ;;
    esac
done
python3 "$WORK/agg.py" report "$RES" | tee "$WORK/report.md"
for f in "$RES"/pg-drain-plans.tsv "$RES"/*explain.txt "$RES"/sqlite-eqp.txt; do [ -f "$f" ] && { echo; echo "== $f"; cat "$f"; }; done
exit 0
