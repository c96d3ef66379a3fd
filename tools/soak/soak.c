/* soak.c: weft-soak's driver.
 *
 *   weft-soak [--seconds N]    (default 20)
 *
 * Runs rounds of hostile and dying peers against this process as a weft
 * parent (parent.c) and against a weft child (child.c) until N seconds have
 * passed (at least one round), then prints what it measured: VmRSS / VmHWM
 * before and after, the worst RSS growth of a scenario, open fds before and
 * after, channels opened and closed. Exits 1 if a check failed: a channel
 * that did not end within SOAK_CLOSE_BOUND_MS of its peer being gone, RSS
 * past the window granted plus SOAK_RSS_SLACK_KIB, an fd left open, a close
 * event missing. Every wait is bounded, so weft-soak itself never hangs. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "soak.h"

soak_stats_t soak_stats;
const char *soak_self;
static char self_path[4096];
static unsigned rng = 12345;

void soak_fail(const char *scenario, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL %-28s ", scenario);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  soak_stats.failures++;
}

void soak_note(const char *scenario, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "     %-28s ", scenario);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

long soak_status_kib(int pid, const char *field) {
  char path[64], line[256];
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%d/status", pid);
  else
    snprintf(path, sizeof path, "/proc/self/status");
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  long v = -1;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, n) == 0) {
      v = strtol(line + n, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

int soak_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own fd */
}

uint64_t soak_now_ms(void) { return uv_hrtime() / 1000000u; }

unsigned soak_rand(unsigned lo, unsigned hi) {
  rng = rng * 1103515245u + 12345u;
  return hi > lo ? lo + (rng >> 8) % (hi - lo + 1) : lo;
}

static int usage(void) {
  fprintf(stderr, "usage: weft-soak [--seconds N]\n");
  return 2;
}

/* Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
 * default) before it is reused, so RSS follows throughput, not what is held:
 * a small quarantine keeps the RSS checks meaningful in that build too
 * (ASAN_OPTIONS still overrides it). */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=2"; }
#endif

int main(int argc, char **argv) {
  const char *role = getenv("SOAK_ROLE");
  if (role != NULL && strcmp(role, "victim") == 0)
    soak_victim_main();
  if (role != NULL)
    soak_peer_main(role);

  unsigned seconds = 20;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = (unsigned)strtoul(argv[++i], NULL, 10);
    else
      return usage();
  }
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0)
    return usage();
  self_path[n] = '\0';
  soak_self = self_path;
  signal(SIGPIPE, SIG_IGN);
  rng = (unsigned)getpid() ^ (unsigned)uv_hrtime();

  weft_runtime_t *rt;
  int err = weft_runtime_new(&rt, NULL);
  if (err) {
    fprintf(stderr, "weft-soak: weft_runtime_new: %s\n", weft_strerror(err));
    return 1;
  }
  long rss0 = soak_status_kib(0, "VmRSS:"), hwm0 = soak_status_kib(0, "VmHWM:");
  int fds0 = soak_count_fds();
  uint64_t t0 = soak_now_ms(), end = t0 + (uint64_t)seconds * 1000u;
  unsigned rounds = 0;
  do {
    soak_parent_round(rt);
    soak_child_round();
    rounds++;
  } while (soak_now_ms() < end);
  long rss1 = soak_status_kib(0, "VmRSS:"), hwm1 = soak_status_kib(0, "VmHWM:");
  int fds1 = soak_count_fds();
  err = weft_runtime_free(rt);
  if (err)
    soak_fail("soak", "weft_runtime_free: %s", weft_err_name(err));

  printf("weft-soak: %u round(s) in %.1f s\n", rounds, (double)(soak_now_ms() - t0) / 1000.0);
  printf("  VmRSS  %ld -> %ld KiB   VmHWM %ld -> %ld KiB   worst scenario peak +%ld KiB\n",
         rss0, rss1, hwm0, hwm1, soak_stats.rss_peak_growth_kib);
  printf("  fds    %d -> %d\n", fds0, fds1);
  printf("  channels opened %u, ended %u\n", soak_stats.opened, soak_stats.closed);
  printf("  bounds: close within %u ms, RSS within the window + %u KiB slack%s\n",
         SOAK_CLOSE_BOUND_MS, SOAK_RSS_SLACK_KIB,
         SOAK_JUDGE_RSS ? "" : " (RSS not judged under ThreadSanitizer)");
  if (fds1 != fds0)
    soak_fail("soak", "%d fds open at the end, %d at the start", fds1, fds0);
  if (soak_stats.closed != soak_stats.opened)
    soak_fail("soak", "%u channels opened, %u ended", soak_stats.opened, soak_stats.closed);
  if (SOAK_JUDGE_RSS && rss1 - rss0 > (long)SOAK_RSS_SLACK_KIB)
    soak_fail("soak", "RSS grew %ld KiB over the run (slack %u KiB)", rss1 - rss0,
              SOAK_RSS_SLACK_KIB);
  printf("weft-soak: %s (%u failed check(s))\n", soak_stats.failures ? "FAIL" : "ok",
         soak_stats.failures);
  return soak_stats.failures ? 1 : 0;
}
