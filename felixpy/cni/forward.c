/*
 * felixpy CNI forwarder: the binary `felixpy install-cni` puts on the host as /opt/cni/bin/felixpy
 * (the CNI plugin) and /opt/cni/bin/felixpy-ipam (the IPAM plugin). Built static
 * (`gcc -static -Os`), so it runs on any Linux host whatever its libc or Python.
 *
 * It does no networking itself. It reads the CNI environment and the network configuration on
 * stdin, sends them as one JSON line to the felixpy agent's unix socket (the protocol of
 * felixpy/cni/plugin.py: the request's strings, "reply": "cni" and the configuration as the
 * runtime sent it), and prints the agent's answer ("<exit code> <JSON>") as the runtime expects.
 * Run as felixpy-ipam (any name ending in "-ipam") it adds "plugin": "ipam" and the agent answers
 * as an IPAM plugin does.
 *
 * Checked here, because they need no agent: CNI_COMMAND, the cniVersion, the presence of the
 * CNI_* variables the command needs, and that stdin is one JSON object. Everything else
 * (container ID, interface name, netns, the configuration's fields) is the agent's to validate.
 * No agent: exit at once with CNI error 11 ("try again later") naming the socket.
 *
 * Socket: config "agent_socket", else "<run_dir>/cni.sock" (config "run_dir", else env
 * FELIXPY_RUN_DIR, else /var/run/felixpy); as felixpy-ipam the "ipam" section's keys win.
 * Log: with config "log_file_path" one line per request is appended to that file (created 0600
 * with its directories; renamed to <file>.1 once over "log_file_max_size" MB, default 100).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_INPUT (16u << 20)
#define MAX_ANSWER (1u << 20)
#define ERR_INCOMPATIBLE_VERSION 1
#define ERR_INVALID_ENV 4
#define ERR_IO 5
#define ERR_DECODE 6
#define ERR_INVALID_CONFIG 7
#define ERR_TRY_AGAIN 11

static const char *const VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", NULL};
static const char VERSION_ANSWER[] =
    "{\"cniVersion\": \"1.0.0\", \"supportedVersions\": [\"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\"]}";

/* ---- a growable byte buffer ---- */
struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) _exit(ERR_IO);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string literal, ASCII only: what Python's json.dumps(s) gives for s decoded from UTF-8
 * with surrogateescape (the Python plugin's encoding), so both plugins send the same bytes. */
static void quote(struct buf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    char esc[16];
    put(b, "\"", 1);
    while (*u) {
        unsigned c = *u, cp = 0, len = 0;
        if (c < 0x80) {
            if (c == '"' || c == '\\') {
                esc[0] = '\\';
                esc[1] = (char)c;
                put(b, esc, 2);
            } else if (c == '\n') put(b, "\\n", 2);
            else if (c == '\r') put(b, "\\r", 2);
            else if (c == '\t') put(b, "\\t", 2);
            else if (c == '\b') put(b, "\\b", 2);
            else if (c == '\f') put(b, "\\f", 2);
            else if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                put(b, esc, 6);
            } else put(b, (const char *)u, 1);
            u++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) cp = c & 0x1f, len = 2;
        else if (c >= 0xe0 && c <= 0xef) cp = c & 0x0f, len = 3;
        else if (c >= 0xf0 && c <= 0xf4) cp = c & 0x07, len = 4;
        unsigned i = 1;
        for (; len && i < len; i++) {
            if ((u[i] & 0xc0) != 0x80) break;
            cp = (cp << 6) | (u[i] & 0x3f);
        }
        int ok = len && i == len && !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10ffff))
                 && !(cp >= 0xd800 && cp <= 0xdfff);
        if (!ok) { /* surrogateescape: one undecodable byte -> U+DC80..U+DCFF */
            cp = 0xdc00 + c;
            len = 1;
        }
        if (cp >= 0x10000) {
            unsigned v = cp - 0x10000, hi = 0xd800 + (v >> 10), lo = 0xdc00 + (v & 0x3ff);
            char e[13] = {'\\', 'u', hex[hi >> 12], hex[(hi >> 8) & 15], hex[(hi >> 4) & 15], hex[hi & 15],
                          '\\', 'u', hex[lo >> 12], hex[(lo >> 8) & 15], hex[(lo >> 4) & 15], hex[lo & 15], 0};
            put(b, e, 12);
        } else {
            char e[7] = {'\\', 'u', hex[cp >> 12], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15], hex[cp & 15], 0};
            put(b, e, 6);
        }
        u += len;
    }
    put(b, "\"", 1);
}

/* ---- a validating JSON scanner that keeps a few string/number members ---- */
struct want {
    const char *key;
    char *top;  /* value in the top-level object (malloc'd text; strings unescaped, ASCII only) */
    char *ipam; /* value in the top-level "ipam" object */
};

struct scan {
    const char *s, *end;
    int depth;
    const char *err;
};

static struct want WANTED[] = {
    {"cniVersion", NULL, NULL},   {"agent_socket", NULL, NULL},      {"run_dir", NULL, NULL},
    {"timeout_seconds", NULL, NULL}, {"log_file_path", NULL, NULL}, {"log_file_max_size", NULL, NULL},
    {NULL, NULL, NULL},
};

static void ws(struct scan *sc) {
    while (sc->s < sc->end && (*sc->s == ' ' || *sc->s == '\t' || *sc->s == '\n' || *sc->s == '\r')) sc->s++;
}

static int fail(struct scan *sc, const char *why) {
    if (!sc->err) sc->err = why;
    return -1;
}

/* A string at sc->s; with out, its value (escapes resolved, non-ASCII kept as UTF-8 bytes). */
static int scan_string(struct scan *sc, struct buf *out) {
    if (sc->s >= sc->end || *sc->s != '"') return fail(sc, "expecting a string");
    sc->s++;
    while (sc->s < sc->end) {
        unsigned char c = (unsigned char)*sc->s;
        if (c == '"') {
            sc->s++;
            return 0;
        }
        if (c < 0x20) return fail(sc, "control character in a string");
        if (c == '\\') {
            if (sc->end - sc->s < 2) break;
            char e = sc->s[1];
            const char *m = strchr("\"\\/bfnrtu", e);
            if (!m || !e) return fail(sc, "invalid escape in a string");
            if (e == 'u') {
                if (sc->end - sc->s < 6) break;
                for (int i = 2; i < 6; i++)
                    if (!strchr("0123456789abcdefABCDEF", sc->s[i]) || !sc->s[i]) return fail(sc, "invalid \\u escape");
                if (out) put(out, "?", 1); /* the kept keys are paths and numbers: ASCII */
                sc->s += 6;
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                if (out) put(out, &to[strchr(from, e) - from], 1);
                sc->s += 2;
            }
            continue;
        }
        if (out) put(out, sc->s, 1);
        sc->s++;
    }
    return fail(sc, "unterminated string");
}

static int scan_value(struct scan *sc, struct want *keep, int in_ipam);

static int scan_object(struct scan *sc, struct want *keep, int in_ipam) {
    sc->s++; /* '{' */
    ws(sc);
    if (sc->s < sc->end && *sc->s == '}') {
        sc->s++;
        return 0;
    }
    for (;;) {
        struct buf key = {0};
        ws(sc);
        if (scan_string(sc, &key) < 0) {
            free(key.p);
            return -1;
        }
        ws(sc);
        if (sc->s >= sc->end || *sc->s != ':') {
            free(key.p);
            return fail(sc, "expecting ':'");
        }
        sc->s++;
        ws(sc);
        int r;
        if (keep && key.p && strcmp(key.p, "ipam") == 0 && !in_ipam && sc->s < sc->end && *sc->s == '{') {
            r = scan_object(sc, keep, 1);
        } else {
            struct want *w = NULL;
            for (struct want *k = keep; k && k->key; k++)
                if (key.p && strcmp(k->key, key.p) == 0) w = k;
            const char *start = sc->s;
            struct buf val = {0};
            if (w && sc->s < sc->end && *sc->s == '"') r = scan_string(sc, &val);
            else r = scan_value(sc, NULL, 0);
            if (w && r == 0) {
                char **slot = in_ipam ? &w->ipam : &w->top;
                free(*slot);
                if (val.p) *slot = val.p;
                else if (*start != '{' && *start != '[') *slot = strndup(start, (size_t)(sc->s - start));
                else *slot = NULL;
                val.p = NULL;
            }
            free(val.p);
        }
        free(key.p);
        if (r < 0) return -1;
        ws(sc);
        if (sc->s < sc->end && *sc->s == ',') {
            sc->s++;
            continue;
        }
        if (sc->s < sc->end && *sc->s == '}') {
            sc->s++;
            return 0;
        }
        return fail(sc, "expecting ',' or '}'");
    }
}

static int scan_value(struct scan *sc, struct want *keep, int in_ipam) {
    ws(sc);
    if (sc->s >= sc->end) return fail(sc, "expecting a value");
    if (++sc->depth > 512) return fail(sc, "nested too deeply");
    int r = 0;
    char c = *sc->s;
    if (c == '{') r = scan_object(sc, keep, in_ipam);
    else if (c == '[') {
        sc->s++;
        ws(sc);
        if (sc->s < sc->end && *sc->s == ']') sc->s++;
        else
            for (;;) {
                if (scan_value(sc, NULL, 0) < 0) return -1;
                ws(sc);
                if (sc->s < sc->end && *sc->s == ',') {
                    sc->s++;
                    continue;
                }
                if (sc->s < sc->end && *sc->s == ']') {
                    sc->s++;
                    break;
                }
                return fail(sc, "expecting ',' or ']'");
            }
    } else if (c == '"') r = scan_string(sc, NULL);
    else if (c == '-' || (c >= '0' && c <= '9')) {
        const char *p = sc->s;
        if (*p == '-') p++;
        if (p >= sc->end || !(*p >= '0' && *p <= '9')) return fail(sc, "invalid number");
        if (*p == '0') p++;
        else
            while (p < sc->end && *p >= '0' && *p <= '9') p++;
        if (p < sc->end && *p == '.') {
            p++;
            if (p >= sc->end || !(*p >= '0' && *p <= '9')) return fail(sc, "invalid number");
            while (p < sc->end && *p >= '0' && *p <= '9') p++;
        }
        if (p < sc->end && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < sc->end && (*p == '+' || *p == '-')) p++;
            if (p >= sc->end || !(*p >= '0' && *p <= '9')) return fail(sc, "invalid number");
            while (p < sc->end && *p >= '0' && *p <= '9') p++;
        }
        sc->s = p;
    } else {
        static const char *const lits[] = {"true", "false", "null", NULL};
        int ok = 0;
        for (int i = 0; lits[i]; i++) {
            size_t n = strlen(lits[i]);
            if ((size_t)(sc->end - sc->s) >= n && memcmp(sc->s, lits[i], n) == 0) {
                sc->s += n;
                ok = 1;
                break;
            }
        }
        if (!ok) return fail(sc, "expecting a JSON value");
    }
    sc->depth--;
    return r;
}

/* ---- the invocation ---- */
static const char *want(const char *key, int ipam_mode) {
    for (struct want *w = WANTED; w->key; w++)
        if (strcmp(w->key, key) == 0) return (ipam_mode && w->ipam) ? w->ipam : w->top;
    return NULL;
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v ? v : dflt;
}

static char g_version[16] = "1.0.0";

/* The CNI error object, as felixpy/cni/plugin.py prints it. */
static int cni_error(struct buf *out, int code, const char *msg, const char *details) {
    char num[16];
    out->n = 0;
    puts_(out, "{\"cniVersion\": ");
    quote(out, g_version);
    snprintf(num, sizeof num, "%d", code);
    puts_(out, ", \"code\": ");
    puts_(out, num);
    puts_(out, ", \"msg\": ");
    quote(out, msg);
    puts_(out, ", \"details\": ");
    quote(out, details ? details : "");
    puts_(out, "}");
    return 1;
}

/* Read to EOF, or (line != 0) to the first newline: the agent's answer is one line, and waiting for
 * its close would wait for the answering thread to be scheduled again. */
static int read_all(int fd, struct buf *b, size_t limit, int line) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) return 0;
        put(b, chunk, (size_t)n);
        if (b->n >= limit || (line && memchr(chunk, '\n', (size_t)n))) return 0;
    }
}

static void mkdirs(const char *path) {
    char *p = strdup(path);
    for (char *s = p + 1; p && *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    free(p);
}

static void log_line(const char *path, const char *max_mb, const char *mode, const char *command, int code,
                     double ms, const char *msg) {
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        mkdirs(path);
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    }
    if (fd < 0) return; /* the log is best effort: never fail a CNI call for it */
    struct stat st;
    double limit = (max_mb && *max_mb ? strtod(max_mb, NULL) : 100.0) * 1024 * 1024;
    if (fstat(fd, &st) == 0 && limit > 0 && (double)st.st_size > limit) {
        char *old = NULL;
        if (asprintf(&old, "%s.1", path) > 0) {
            rename(path, old);
            free(old);
        }
        close(fd);
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return;
    }
    struct timespec now;
    struct tm tm;
    char stamp[40];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    struct buf line = {0};
    char head[256];
    snprintf(head, sizeof head, "%s.%03ldZ plugin=%s command=%s containerID=", stamp, now.tv_nsec / 1000000, mode,
             command);
    puts_(&line, head);
    quote(&line, env_or("CNI_CONTAINERID", ""));
    puts_(&line, " ifname=");
    quote(&line, env_or("CNI_IFNAME", ""));
    puts_(&line, " netns=");
    quote(&line, env_or("CNI_NETNS", ""));
    snprintf(head, sizeof head, " exit=%d ms=%.1f", code, ms);
    puts_(&line, head);
    if (msg && *msg) {
        puts_(&line, " result=");
        quote(&line, msg);
    }
    puts_(&line, "\n");
    ssize_t ignored = write(fd, line.p, line.n);
    (void)ignored;
    close(fd);
    free(line.p);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

/* Connect, send, read the whole answer; returns 0 or a CNI error code with out filled. */
static int call_agent(const char *path, const char *payload, size_t len, double timeout, struct buf *answer,
                      struct buf *out) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char details[512];
    if (strlen(path) >= sizeof addr.sun_path) {
        snprintf(details, sizeof details, "socket path longer than %zu bytes", sizeof addr.sun_path - 1);
        return cni_error(out, ERR_INVALID_CONFIG, "felixpy agent socket path is too long", details), ERR_INVALID_CONFIG;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char msg[600];
    if (fd < 0) return cni_error(out, ERR_IO, "cannot create a unix socket", strerror(errno)), ERR_IO;
    struct timeval tv = {.tv_sec = (time_t)timeout, .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        snprintf(msg, sizeof msg, "felixpy agent is not running (socket %s)", path);
        snprintf(details, sizeof details, "[Errno %d] %s", errno, strerror(errno));
        close(fd);
        return cni_error(out, ERR_TRY_AGAIN, msg, details), ERR_TRY_AGAIN;
    }
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, payload + sent, len - sent, MSG_NOSIGNAL); /* an agent gone: EPIPE, not SIGPIPE */
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto io_error;
        sent += (size_t)n;
    }
    if (read_all(fd, answer, MAX_ANSWER, 1) < 0) goto io_error;
    close(fd);
    return 0;
io_error:
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        snprintf(msg, sizeof msg, "felixpy agent did not answer in %gs (socket %s)", timeout, path);
        close(fd);
        return cni_error(out, ERR_TRY_AGAIN, msg, ""), ERR_TRY_AGAIN;
    }
    snprintf(msg, sizeof msg, "talking to the felixpy agent at %s failed", path);
    snprintf(details, sizeof details, "[Errno %d] %s", errno, strerror(errno));
    close(fd);
    return cni_error(out, ERR_IO, msg, details), ERR_IO;
}

static int invoke(const char *mode, const char *command, struct buf *in, struct buf *out, const char **logpath,
                  const char **logmax) {
    int ipam_mode = strcmp(mode, "ipam") == 0;
    struct scan sc = {.s = in->p ? in->p : "", .end = (in->p ? in->p : "") + in->n};
    ws(&sc);
    if (sc.s == sc.end) sc.s = sc.end = "{}", sc.end += 2; /* no config: as the Python plugin, "{}" */
    const char *start = sc.s;
    int r = scan_value(&sc, WANTED, 0);
    ws(&sc);
    if (r == 0 && sc.s != sc.end) r = fail(&sc, "extra data after the JSON value");
    if (r < 0) {
        char details[128];
        snprintf(details, sizeof details, "%s at offset %ld", sc.err, (long)(sc.s - (in->p ? in->p : sc.s)));
        return cni_error(out, ERR_DECODE, "network configuration is not valid JSON", details);
    }
    if (*start != '{') return cni_error(out, ERR_INVALID_CONFIG, "network configuration must be a JSON object", "");
    *logpath = want("log_file_path", ipam_mode);
    *logmax = want("log_file_max_size", ipam_mode);
    const char *version = want("cniVersion", 0);
    int supported = 0;
    for (int i = 0; VERSIONS[i]; i++) supported |= version && strcmp(version, VERSIONS[i]) == 0;
    if (supported) strcpy(g_version, version); /* errors answer in the caller's version when it is one */
    if (strcmp(command, "ADD") && strcmp(command, "DEL") && strcmp(command, "CHECK")) {
        struct buf m = {0};
        puts_(&m, "unknown CNI_COMMAND ");
        put(&m, "'", 1);
        puts_(&m, command);
        put(&m, "'", 1);
        cni_error(out, ERR_INVALID_ENV, m.p, "");
        free(m.p);
        return 1;
    }
    const char *missing[3];
    int nmissing = 0;
    static const char *const required[] = {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"};
    for (int i = 0; i < 3; i++) {
        if (i == 2 && strcmp(command, "DEL") == 0) break;
        const char *v = getenv(required[i]);
        if (!v || !*v) missing[nmissing++] = required[i];
    }
    if (nmissing) {
        struct buf d = {0};
        for (int i = 0; i < nmissing; i++) {
            if (i) puts_(&d, ", ");
            puts_(&d, missing[i]);
        }
        cni_error(out, ERR_INVALID_ENV, "missing CNI environment variables", d.p);
        free(d.p);
        return 1;
    }
    if (!supported) {
        char msg[128];
        snprintf(msg, sizeof msg, "unsupported cniVersion '%.64s'", version ? version : "");
        return cni_error(out, ERR_INCOMPATIBLE_VERSION, msg, "supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0");
    }
    /* The socket path. */
    struct buf sock = {0};
    const char *explicit = want("agent_socket", ipam_mode);
    if (explicit && *explicit) puts_(&sock, explicit);
    else {
        const char *dir = want("run_dir", ipam_mode);
        if (!dir || !*dir) dir = getenv("FELIXPY_RUN_DIR");
        if (!dir || !*dir) dir = "/var/run/felixpy";
        puts_(&sock, dir);
        puts_(&sock, dir[strlen(dir) - 1] == '/' ? "cni.sock" : "/cni.sock");
    }
    const char *t = want("timeout_seconds", ipam_mode);
    double timeout = t && *t ? strtod(t, NULL) : 120.0;
    if (!(timeout > 0)) timeout = 120.0;
    /* The request line (felixpy/cni/plugin.py's encode_request; "plugin" only as felixpy-ipam). */
    struct buf req = {0};
    static const char *const fields[][2] = {{"command", NULL},           {"containerID", "CNI_CONTAINERID"},
                                            {"netns", "CNI_NETNS"},      {"ifname", "CNI_IFNAME"},
                                            {"args", "CNI_ARGS"},        {"path", "CNI_PATH"}};
    put(&req, "{", 1);
    for (int i = 0; i < 6; i++) {
        if (i) puts_(&req, ", ");
        quote(&req, fields[i][0]);
        puts_(&req, ": ");
        quote(&req, fields[i][1] ? env_or(fields[i][1], "") : command);
    }
    puts_(&req, ", \"reply\": \"cni\"");
    if (ipam_mode) puts_(&req, ", \"plugin\": \"ipam\"");
    puts_(&req, ", \"config\": ");
    size_t at = req.n;
    put(&req, start, (size_t)(sc.end - start));
    for (size_t i = at; i < req.n; i++)
        if (req.p[i] == '\n' || req.p[i] == '\r') req.p[i] = ' ';
    puts_(&req, "}\n");
    struct buf answer = {0};
    int rc = call_agent(sock.p, req.p, req.n, timeout, &answer, out);
    free(req.p);
    if (rc) {
        free(sock.p);
        return 1;
    }
    /* "<exit code>[ <JSON>]" */
    char *a = answer.p ? answer.p : "";
    size_t n = answer.n;
    while (n && (a[n - 1] == '\n' || a[n - 1] == '\r' || a[n - 1] == ' ')) a[--n] = 0;
    if ((a[0] == '0' || a[0] == '1') && (a[1] == 0 || a[1] == ' ')) {
        out->n = 0;
        if (a[1]) puts_(out, a + 2);
        free(sock.p);
        rc = a[0] - '0';
        free(answer.p);
        return rc;
    }
    char msg[600];
    snprintf(msg, sizeof msg, "bad answer from the felixpy agent at %s", sock.p);
    cni_error(out, ERR_IO, msg, n ? "answer is not '<code> <JSON>'" : "empty answer");
    free(sock.p);
    free(answer.p);
    return 1;
}

int main(int argc, char **argv) {
    (void)argc;
    const char *name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    size_t nl = strlen(name);
    const char *mode = nl >= 5 && strcmp(name + nl - 5, "-ipam") == 0 ? "ipam" : "cni";
    const char *command = env_or("CNI_COMMAND", "");
    if (strcmp(command, "VERSION") == 0) {
        puts(VERSION_ANSWER);
        return 0;
    }
    double started = now_ms();
    struct buf in = {0}, out = {0};
    const char *logpath = NULL, *logmax = NULL;
    int code;
    if (read_all(0, &in, MAX_INPUT, 0) < 0)
        code = cni_error(&out, ERR_IO, "cannot read the network configuration", strerror(errno));
    else if (in.n >= MAX_INPUT)
        code = cni_error(&out, ERR_INVALID_CONFIG, "network configuration is larger than 16 MiB", "");
    else
        code = invoke(mode, command, &in, &out, &logpath, &logmax);
    if (out.n) {
        put(&out, "\n", 1);
        size_t done = 0;
        while (done < out.n) {
            ssize_t w = write(1, out.p + done, out.n - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            done += (size_t)w;
        }
    }
    if (logpath) {
        if (out.n) out.p[out.n - 1] = 0;
        log_line(logpath, logmax, mode, command, code, now_ms() - started, out.p ? out.p : "");
    }
    return code;
}
