/*
 * felixpy bundle launcher: what `felixpy install-cni` puts on the host as /opt/cni/bin/<plugin> for a
 * dynamically linked reference plugin it copies from the image (Debian's portmap needs glibc).
 * Static (`gcc -static -Os`), so it runs on any Linux host. It runs
 *
 *     <dir>/felixpy-bundle/lib/ld.so --library-path <dir>/felixpy-bundle/lib --argv0 <argv[0]>
 *         <dir>/felixpy-bundle/<name> <argv[1..]>
 *
 * where <dir>/<name> is this file as the kernel found it (/proc/self/exe, else an absolute argv[0]): the plugin with the
 * image's own loader and libraries, whatever the host has. Environment and stdin/stdout pass through.
 * Exit 1 with a CNI error on stdout when the bundle is missing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 && argc > 0 && argv[0][0] == '/' && strlen(argv[0]) < sizeof self) {
        /* no /proc (a bare chroot): the runtime runs plugins by their absolute path */
        strcpy(self, argv[0]);
        n = (ssize_t)strlen(self);
    }
    if (n <= 0) {
        printf("{\"cniVersion\": \"1.0.0\", \"code\": 5, \"msg\": \"felixpy bundle launcher: cannot read "
               "/proc/self/exe\", \"details\": \"%s\"}\n", strerror(errno));
        return 1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    const char *name = slash ? slash + 1 : self;
    if (slash) *slash = 0;
    const char *dir = slash ? self : ".";
    char loader[PATH_MAX], libs[PATH_MAX], plugin[PATH_MAX];
    snprintf(loader, sizeof loader, "%s/felixpy-bundle/lib/ld.so", dir);
    snprintf(libs, sizeof libs, "%s/felixpy-bundle/lib", dir);
    snprintf(plugin, sizeof plugin, "%s/felixpy-bundle/%s", dir, name);
    char **args = calloc((size_t)argc + 8, sizeof *args);
    if (!args) return 1;
    int i = 0;
    args[i++] = loader;
    args[i++] = "--library-path";
    args[i++] = libs;
    args[i++] = "--argv0";
    args[i++] = argc > 0 ? argv[0] : plugin;
    args[i++] = plugin;
    for (int j = 1; j < argc; j++) args[i++] = argv[j];
    args[i] = NULL;
    execv(loader, args);
    printf("{\"cniVersion\": \"1.0.0\", \"code\": 5, \"msg\": \"felixpy bundle launcher: cannot run %s "
           "(reinstall with felixpy install-cni)\", \"details\": \"%s\"}\n", plugin, strerror(errno));
    return 1;
}
