#!/bin/sh
# workload: the rp lab guest's real programs (Debian packages, see build.sh rp),
# chosen by the kernel command line, as a long-running cloud guest would run them.
#
#   lab.workload=K  redis | sqlite | compress | sort | stress | cache
#   lab.wmb=N       MiB of the workload's own data (keyspace, database, input, buffer)
#   lab.cache=N     MiB of non-zero files put in tmpfs (page cache) before it starts
#   lab.wopt=S      workload variant: redis value bytes, compressor (xz|zstd|gzip),
#                   sort buffer MiB, stress-ng --vm-method, cache rewrite MiB/s
#   lab.report=S    seconds between status lines (default 2)
#
# K does:
#   redis     redis-server (unix socket, no persistence) filled with ~wmb MiB of
#             wopt-byte values by redis-benchmark, then redis-benchmark SET/GET over
#             the same keyspace in a loop
#   sqlite    sqlite3 on a ~wmb MiB database in tmpfs (WAL): each round inserts 4000
#             rows of 800-byte blobs, updates ~1 % of the rows, deletes the oldest
#   compress  wopt (xz -6 / zstd -3 / gzip -6), one thread, over a wmb MiB text file
#             (base64 of random data) in tmpfs, output to tmpfs, in a loop
#   sort      coreutils sort -S wopt MiB over a wmb MiB file of random base64 lines,
#             temporary files and output in tmpfs, in a loop
#   stress    stress-ng --vm 1 --vm-bytes wmb M --vm-method wopt --vm-keep (flat out)
#   cache     only the page cache, and wopt MiB/s of it rewritten (0: idle)
#
# Lines on the console (lab/guest.py parses them):
#   workload: ready redis cache=512 MiB wmb=256 MiB in 23.4s
#   workload: t=40.0s kind=redis rounds=3 verify=ok
# verify checks one page-cache file (rotating) against its checksum at boot.
export PATH=/usr/bin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
U=/usr/bin

arg() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "lab.$1="*) echo "${w#*=}"; return ;; esac
  done
  echo "$2"
}

now() { cut -d' ' -f1 /proc/uptime; }

K=$(arg workload cache)
WMB=$(arg wmb 64)
CACHE=$(arg cache 0)
WOPT=$(arg wopt "")
REPORT=$(arg report 2)
T0=$(now)

mount -t tmpfs -o size=95% tmpfs /data
mkdir -p /data/cache /data/tmp /run
echo 0 >/data/rounds

# An 8 MiB random blob: the unit of the page cache files (QEMU cannot send any of
# its pages as zero pages).
$U/head -c 8388608 /dev/urandom >/data/blob
BLOBSUM=$($U/md5sum /data/blob | cut -d' ' -f1)
NCACHE=$((CACHE / 8))
i=0
while [ $i -lt $NCACHE ]; do
  cat /data/blob >/data/cache/f$i
  i=$((i + 1))
done

# wmb MiB of text: copies of a 16 MiB base64 chunk of random bytes (no compressor
# here has a window that reaches from one copy to the next: xz -6 8 MiB, zstd -3 2 MiB).
make_text() {
  $U/head -c 12582912 /dev/urandom | $U/base64 -w 76 >/data/chunk
  n=$(( ($1 + 15) / 16 ))
  : >"$2"
  j=0
  while [ $j -lt $n ]; do
    cat /data/chunk >>"$2"
    j=$((j + 1))
  done
  rm -f /data/chunk
}

round_done() { echo $(($(cat /data/rounds) + 1)) >/data/rounds; }

case "$K" in
  redis)
    VS=${WOPT:-1024}
    KEYS=$((WMB * 1048576 / (VS + 100)))
    $U/redis-server --port 0 --unixsocket /run/redis.sock --save "" --appendonly no \
      --protected-mode no --daemonize no --logfile /data/redis.log &
    i=0
    while [ ! -S /run/redis.sock ]; do
      sleep 0.2
      i=$((i + 1))
      if [ $i -gt 300 ]; then
        echo "workload: FAIL redis-server did not start: $(tail -n 3 /data/redis.log)"
        break
      fi
    done
    echo "workload: loading $KEYS keys of $VS bytes"
    $U/redis-benchmark -s /run/redis.sock -t set -n $KEYS -r $KEYS -d "$VS" -P 32 -q \
      >/dev/null 2>&1
    (while :; do
      $U/redis-benchmark -s /run/redis.sock -t set,get -n 100000 -r $KEYS -d "$VS" -P 4 -q \
        >/dev/null 2>&1
      round_done
    done) &
    ;;
  sqlite)
    ROWS=$((WMB * 1024 / 900))
    DB=/data/db.sqlite
    $U/sqlite3 $DB "PRAGMA journal_mode=WAL;
      CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
      CREATE INDEX tk ON t(k);
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT $ROWS)
        INSERT INTO t(k, v) SELECT abs(random()) % 1000000, randomblob(800) FROM c;" >/dev/null
    (while :; do
      $U/sqlite3 $DB "PRAGMA synchronous=OFF; PRAGMA cache_size=-65536; BEGIN;
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 4000)
          INSERT INTO t(k, v) SELECT abs(random()) % 1000000, randomblob(800) FROM c;
        UPDATE t SET v = randomblob(800) WHERE k % 100 = abs(random()) % 100;
        DELETE FROM t WHERE id <= (SELECT max(id) FROM t) - $ROWS;
        COMMIT;" >/dev/null 2>&1
      round_done
    done) &
    ;;
  compress)
    make_text "$WMB" /data/in
    case "${WOPT:-zstd}" in
      xz) CMD="$U/xz -T1 -6 -c" ;;
      gzip) CMD="$U/gzip -6 -c" ;;
      *) CMD="$U/zstd -T1 -3 -q -c" ;;
    esac
    (while :; do
      $CMD /data/in >/data/out
      round_done
    done) &
    ;;
  sort)
    make_text "$WMB" /data/in
    (while :; do
      $U/sort -S "${WOPT:-64}M" -T /data/tmp /data/in -o /data/sorted
      round_done
    done) &
    ;;
  stress)
    $U/stress-ng --vm 1 --vm-bytes "${WMB}M" --vm-method "${WOPT:-write64}" --vm-keep \
      -t 0 --quiet >/dev/null 2>&1 &
    ;;
  cache)
    RATE=${WOPT:-0}
    if [ "$RATE" -gt 0 ] && [ $NCACHE -gt 0 ]; then
      (j=0; while :; do
        dd if=/data/blob of=/data/cache/f$((j % NCACHE)) bs=1M count="$RATE" conv=notrunc \
          2>/dev/null
        j=$((j + 1))
        round_done
        sleep 1
      done) &
    fi
    ;;
  *)
    echo "workload: FAIL unknown kind $K"
    ;;
esac

echo "workload: ready $K cache=$CACHE MiB wmb=$WMB MiB in $(awk "BEGIN{printf \"%.1f\", $(now) - $T0}")s"

k=0
while :; do
  sleep "$REPORT"
  v=ok
  if [ $NCACHE -gt 0 ]; then
    f=/data/cache/f$((k % NCACHE))
    [ "$($U/md5sum $f | cut -d' ' -f1)" = "$BLOBSUM" ] || v=FAIL
  fi
  k=$((k + 1))
  echo "workload: t=$(awk "BEGIN{printf \"%.1f\", $(now) - $T0}")s kind=$K rounds=$(cat /data/rounds) verify=$v"
done
