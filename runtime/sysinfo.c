/* sysinfo.c: what the machine lets this process use, the version, the clock.
 *
 * weft_available_parallelism is the size of the CPU affinity mask, lowered to
 * the CPU quota of the process's cgroup: cgroup v2 cpu.max ("quota period" or
 * "max period"), else v1 cpu.cfs_quota_us / cpu.cfs_period_us. The cgroup
 * directory is found from /proc/self/mountinfo (where the hierarchy is
 * mounted, and which of its paths is the mount's root) and /proc/self/cgroup
 * (the process's path in it); every level from there up to the mount point is
 * read, since an ancestor's quota bounds its descendants. A quota rounds up
 * (1.5 CPUs -> 2); the result is at least 1. Nothing is allocated: files are
 * read through a fixed buffer on the stack. Any thread. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft_impl.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char *weft_version_string(void) {
  return STR(WEFT_VERSION_MAJOR) "." STR(WEFT_VERSION_MINOR) "." STR(WEFT_VERSION_PATCH);
}

uint64_t weft__now_ns(void) {
  return uv_hrtime();
}

/* ---- a line reader over a file descriptor, without allocation ----------- */

typedef struct {
  int fd;
  size_t pos, len;
  bool eof;
  char buf[4096];
} line_reader_t;

/* Lines longer than the buffer are skipped whole. */
static bool line_next(line_reader_t *r, char **line) {
  bool skipping = false;
  for (;;) {
    char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
    if (nl != NULL || (r->eof && r->pos < r->len)) {
      char *start = r->buf + r->pos;
      char *stop = nl != NULL ? nl : r->buf + r->len;
      *stop = '\0';
      r->pos = (size_t)(stop - r->buf) + 1;
      if (r->pos > r->len)
        r->pos = r->len;
      if (!skipping) {
        *line = start;
        return true;
      }
      skipping = false;
      continue;
    }
    if (r->eof)
      return false;
    if (r->pos == 0 && r->len == sizeof(r->buf) - 1) {
      skipping = true; /* a line longer than the buffer */
      r->len = 0;
    }
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
    ssize_t n;
    do
      n = read(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
      r->eof = true;
    else
      r->len += (size_t)n;
  }
}

static bool line_open(line_reader_t *r, const char *path) {
  r->fd = open(path, O_RDONLY | O_CLOEXEC);
  r->pos = r->len = 0;
  r->eof = false;
  return r->fd >= 0;
}

/* Reads a small file whole into buf (NUL-terminated). */
static bool read_small(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n;
  do
    n = read(fd, buf, size - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  return true;
}

/* ---- locating the cgroup directory --------------------------------------- */

typedef struct {
  char mount[PATH_MAX]; /* where the hierarchy is mounted */
  char root[PATH_MAX];  /* which cgroup path the mount shows at its top */
} cg_mount_t;

/* True if the comma-separated list has the token tok. */
static bool has_token(const char *list, const char *tok) {
  size_t n = strlen(tok);
  for (const char *p = list; p != NULL; p = strchr(p, ',')) {
    if (*p == ',')
      p++;
    if (strncmp(p, tok, n) == 0 && (p[n] == ',' || p[n] == '\0'))
      return true;
  }
  return false;
}

/* Splits a mountinfo line into its fields; returns how many (max max). */
static int split_fields(char *line, char **fields, int max) {
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok != NULL && n < max;
       tok = strtok_r(NULL, " ", &save))
    fields[n++] = tok;
  return n;
}

/* Finds the cgroup2 mount (v2) or the v1 mount carrying the cpu controller. */
static bool find_mount(bool v2, cg_mount_t *out) {
  line_reader_t r;
  char *line, *f[32];
  bool found = false;
  if (!line_open(&r, "/proc/self/mountinfo"))
    return false;
  while (!found && line_next(&r, &line)) {
    int n = split_fields(line, f, 32);
    int dash = 6;
    while (dash < n && strcmp(f[dash], "-") != 0)
      dash++;
    if (dash + 1 >= n)
      continue;
    const char *fstype = f[dash + 1];
    const char *super = dash + 3 < n ? f[dash + 3] : "";
    if (v2 ? strcmp(fstype, "cgroup2") == 0
           : strcmp(fstype, "cgroup") == 0 && has_token(super, "cpu")) {
      found = strlen(f[4]) < PATH_MAX && strlen(f[3]) < PATH_MAX;
      if (found) {
        strcpy(out->mount, f[4]);
        strcpy(out->root, f[3]);
      }
    }
  }
  close(r.fd);
  return found;
}

/* The process's path in the v2 hierarchy ("0::/path") or in the v1 hierarchy
 * that has the cpu controller ("4:cpu,cpuacct:/path"). */
static bool find_cgroup_path(bool v2, char *out, size_t size) {
  line_reader_t r;
  char *line;
  bool found = false;
  if (!line_open(&r, "/proc/self/cgroup"))
    return false;
  while (!found && line_next(&r, &line)) {
    char *c1 = strchr(line, ':');
    char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL)
      continue;
    *c2 = '\0';
    bool match = v2 ? strcmp(line, "0") == 0 && c2 == c1 + 1 : has_token(c1 + 1, "cpu");
    if (match && strlen(c2 + 1) < size) {
      strcpy(out, c2 + 1);
      found = true;
    }
  }
  close(r.fd);
  return found;
}

/* dir = mount + (path relative to the mount's root); the mount itself when
 * the path lies outside what the mount shows. */
static bool cgroup_dir(bool v2, char *dir, size_t size) {
  cg_mount_t m;
  char path[PATH_MAX];
  if (!find_mount(v2, &m))
    return false;
  if (!find_cgroup_path(v2, path, sizeof(path)))
    strcpy(path, "/");
  size_t rl = strlen(m.root);
  const char *rel = path;
  if (strcmp(m.root, "/") != 0) {
    bool inside = strncmp(path, m.root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0');
    rel = inside ? path + rl : "";
  }
  int n = snprintf(dir, size, "%s%s", m.mount, rel);
  if (n < 0 || (size_t)n >= size)
    return false;
  n = (int)strlen(dir);
  while (n > 1 && dir[n - 1] == '/')
    dir[--n] = '\0';
  return true;
}

/* ---- quotas ----------------------------------------------------------- */

static unsigned quota_cpus(long long quota, long long period) {
  if (quota <= 0 || period <= 0)
    return UINT_MAX;
  long long cpus = (quota + period - 1) / period;
  return cpus > (long long)UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

/* CPUs allowed by one directory's files; UINT_MAX if unlimited or unknown. */
static unsigned dir_limit(bool v2, const char *dir) {
  char file[PATH_MAX + 32], a[64], b[64];
  long long quota, period;
  if (v2) {
    snprintf(file, sizeof(file), "%s/cpu.max", dir);
    if (!read_small(file, a, sizeof(a)) || strncmp(a, "max", 3) == 0)
      return UINT_MAX;
    if (sscanf(a, "%lld %lld", &quota, &period) != 2)
      return UINT_MAX;
    return quota_cpus(quota, period);
  }
  snprintf(file, sizeof(file), "%s/cpu.cfs_quota_us", dir);
  if (!read_small(file, a, sizeof(a)))
    return UINT_MAX;
  snprintf(file, sizeof(file), "%s/cpu.cfs_period_us", dir);
  if (!read_small(file, b, sizeof(b)))
    return UINT_MAX;
  if (sscanf(a, "%lld", &quota) != 1 || sscanf(b, "%lld", &period) != 1)
    return UINT_MAX;
  return quota_cpus(quota, period);
}

/* The smallest limit from the process's cgroup directory up to the mount. */
static unsigned hierarchy_limit(bool v2, bool *present) {
  char dir[PATH_MAX], mount_dir[PATH_MAX];
  cg_mount_t m;
  *present = cgroup_dir(v2, dir, sizeof(dir)) && find_mount(v2, &m);
  if (!*present)
    return UINT_MAX;
  strcpy(mount_dir, m.mount);
  unsigned best = UINT_MAX;
  for (;;) {
    unsigned lim = dir_limit(v2, dir);
    if (lim < best)
      best = lim;
    char *slash = strrchr(dir, '/');
    if (strcmp(dir, mount_dir) == 0 || slash == NULL || slash == dir)
      break;
    *slash = '\0';
    if (strlen(dir) < strlen(mount_dir))
      break;
  }
  return best;
}

static unsigned cgroup_limit(void) {
  bool present;
  unsigned v2 = hierarchy_limit(true, &present);
  if (v2 != UINT_MAX)
    return v2;
  return hierarchy_limit(false, &present);
}

static unsigned affinity_count(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0)
      return (unsigned)n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

unsigned weft_available_parallelism(void) {
  unsigned n = affinity_count();
  unsigned q = cgroup_limit();
  if (q < n)
    n = q;
  return n > 0 ? n : 1;
}
