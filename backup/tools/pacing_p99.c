// Commit latency beside a paced background writer: the experiment behind the
// section "small windows, paced, cut the tail and cost p99" of backup/README.md (how
// the backup's write pattern shapes the commits' p99 and p99.9 on one disk).
//
//   gcc -O2 -pthread -o /tmp/pacing_p99 backup/tools/pacing_p99.c
//   BURST_KIB=32 /tmp/pacing_p99 1 32 32 8 4     # 32 KiB windows, one every 0.65 ms
//   BURST_KIB=1024 /tmp/pacing_p99 1 1024 8192 8 4  # 1 MiB steps, 8 MiB windows
//
// Arguments: STRATEGY CHUNK_KIB WINDOW_KIB REPS SECS [IDLE]. STRATEGY 1 writes through
// the page cache and hands each complete WINDOW to the device with
// sync_file_range(WRITE), waiting for the one before (the backup job's write-behind);
// 2 writes with O_DIRECT. The writer writes CHUNK_KIB per pwrite, BURST_KIB
// (environment, default 1024) per paced step, at 50 MB/s, in 64 MiB files, each
// fdatasync'ed and read back at the same rate (unless NOREADBACK is set), as the job
// does. IDLE=1 puts the writer's I/O in the idle class. The load: 4 threads
// appending 256 bytes to one WAL with group commit (one fdatasync per group). Each
// repetition runs a window of the load alone and one beside the writer (alternating
// which goes first) and prints their p99, p99.9, longest commit and commits/s.
// Files go under $DIR (default ./pacing-p99-data), which must be on the disk to test.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

#define MAXLAT 4000000
static double lat[MAXLAT];
static atomic_int nlat;
static atomic_int stop_load;
static atomic_int stop_bg;
static const char *dir;  // $DIR, default ./pacing-p99-data (on the disk to test)

// One WAL, group commit: threads append under a mutex; a leader syncs.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t written_seq, synced_seq, syncing;
static int walfd;
static off_t waloff;

static void *committer(void *arg) {
  (void)arg;
  char buf[256];
  memset(buf, 'x', sizeof buf);
  while (!stop_load) {
    double t0 = now();
    pthread_mutex_lock(&mu);
    if (pwrite(walfd, buf, sizeof buf, waloff) != sizeof buf) abort();
    waloff += sizeof buf;
    uint64_t my = ++written_seq;
    while (synced_seq < my) {
      if (!syncing) {
        syncing = 1;
        uint64_t upto = written_seq;
        pthread_mutex_unlock(&mu);
        fdatasync(walfd);
        pthread_mutex_lock(&mu);
        syncing = 0;
        synced_seq = upto;
        pthread_cond_broadcast(&cv);
      } else {
        pthread_cond_wait(&cv, &mu);
      }
    }
    pthread_mutex_unlock(&mu);
    int i = atomic_fetch_add(&nlat, 1);
    if (i < MAXLAT) lat[i] = now() - t0;
  }
  return NULL;
}

static int strategy;  // 0 none, 1 buffered+sfr window, 2 O_DIRECT chunk
static size_t chunk = 1 << 20, window = 8 << 20;
static double rate = 50e6;
static int idle_io;
static int readback = 1;


static size_t burst = 1 << 20;  // bytes per rate-limited step
static size_t file_bytes = 64 << 20;
static void pace(double t0, double done) {
  double due = t0 + done / rate, n = now();
  if (due > n) usleep((useconds_t)((due - n) * 1e6));
}
static void *bg(void *arg) {
  (void)arg;
  if (idle_io) syscall(SYS_ioprio_set, 1, 0, (3 << 13) | 0);
  char path[256];
  snprintf(path, sizeof path, "%s/bg", dir);
  char *buf;
  if (posix_memalign((void **)&buf, 4096, burst)) abort();
  memset(buf, 'b', burst);
  double t0 = now(), done = 0;
  while (!stop_bg) {
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | (strategy == 2 ? O_DIRECT : 0), 0644);
    if (fd < 0) { perror("open"); exit(1); }
    off_t win_start = 0, prev_win = -1;
    for (off_t off = 0; off < (off_t)file_bytes && !stop_bg; off += burst) {
      pace(t0, done);
      for (size_t c = 0; c < burst; c += chunk)
        if (pwrite(fd, buf + c, chunk, off + c) != (ssize_t)chunk) { perror("pwrite"); exit(1); }
      done += burst;
      off_t end = off + burst;
      if (strategy == 1 && end - win_start >= (off_t)window) {
        sync_file_range(fd, win_start, end - win_start, SYNC_FILE_RANGE_WRITE);
        if (prev_win >= 0)
          sync_file_range(fd, prev_win, win_start - prev_win,
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
        prev_win = win_start;
        win_start = end;
      }
    }
    fdatasync(fd);
    if (readback) {
      int rfd = open(path, O_RDONLY);
      for (off_t off = 0; off < (off_t)file_bytes && !stop_bg; off += burst) {
        pace(t0, done);
        if (pread(rfd, buf, burst, off) < 0) { perror("pread"); exit(1); }
        done += burst;
      }
      posix_fadvise(rfd, 0, 0, POSIX_FADV_DONTNEED);
      close(rfd);
    }
    close(fd);
    unlink(path);
  }
  free(buf);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void window_run(int with_bg, double secs, double *p99, double *p999, double *mx, double *tput) {
  nlat = 0; stop_load = 0; stop_bg = 0;
  pthread_t th[4], b;
  if (with_bg) pthread_create(&b, NULL, bg, NULL);
  double t0 = now();
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, committer, NULL);
  usleep((useconds_t)(secs * 1e6));
  stop_load = 1;
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  double el = now() - t0;
  if (with_bg) { stop_bg = 1; pthread_join(b, NULL); }
  int n = nlat < MAXLAT ? nlat : MAXLAT;
  if (n == 0) {
    fprintf(stderr, "no commit completed in a window\n");
    exit(1);
  }
  qsort(lat, n, sizeof(double), cmp);
  *p99 = lat[(int)(n * 0.99)] * 1e6;
  *p999 = lat[(int)(n * 0.999)] * 1e6;
  *mx = lat[n - 1] * 1e6;
  *tput = n / el;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: pacing_p99 STRATEGY CHUNK_KIB WINDOW_KIB REPS SECS [IDLE]\n");
    return 2;
  }
  dir = getenv("DIR") ? getenv("DIR") : "pacing-p99-data";
  strategy = atoi(argv[1]);
  chunk = (size_t)atoi(argv[2]) << 10;
  window = (size_t)atoi(argv[3]) << 10;
  int reps = atoi(argv[4]);
  double secs = atof(argv[5]);
  idle_io = argc > 6 && atoi(argv[6]);
  if (getenv("NOREADBACK")) readback = 0;
  if (getenv("BURST_KIB")) burst = (size_t)atoi(getenv("BURST_KIB")) << 10;
  if (chunk == 0 || burst % chunk != 0) {
    fprintf(stderr, "CHUNK_KIB must divide BURST_KIB (default 1024)\n");
    return 2;
  }
  mkdir(dir, 0755);
  char path[256];
  snprintf(path, sizeof path, "%s/wal", dir);
  walfd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  for (int r = 0; r < reps; r++) {
    double a[4], b[4];
    int first = r % 2;
    if (first) { window_run(1, secs, &b[0], &b[1], &b[2], &b[3]); window_run(0, secs, &a[0], &a[1], &a[2], &a[3]); }
    else { window_run(0, secs, &a[0], &a[1], &a[2], &a[3]); window_run(1, secs, &b[0], &b[1], &b[2], &b[3]); }
    printf("rep %d alone p99 %6.0f p999 %6.0f max %7.0f tput %6.0f | bg p99 %6.0f p999 %6.0f max %7.0f tput %6.0f | p99 %+5.1f%% p999 %+6.1f%%\n",
           r, a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], (b[0] / a[0] - 1) * 100, (b[1] / a[1] - 1) * 100);
    fflush(stdout);
    ftruncate(walfd, 0); waloff = 0;
  }
  return 0;
}
