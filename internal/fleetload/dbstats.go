package fleetload

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// dbStats reads what the database costs: its size (SQL) and, when the
// server runs on this machine, its CPU time (/proc).
type dbStats struct {
	conn       *pgx.Conn
	postmaster int // 0: not on this machine, or /proc unreadable
}

func openDBStats(ctx context.Context, dsn string) (*dbStats, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect for database statistics: %w", err)
	}
	d := &dbStats{conn: c}
	var backend int
	if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		c.Close(ctx)
		return nil, fmt.Errorf("database statistics: %w", err)
	}
	if st, err := procStat(backend); err == nil {
		d.postmaster = st.ppid
	}
	return d, nil
}

func (d *dbStats) close() { d.conn.Close(context.Background()) }

// size is the database's size on disk (tables, indexes, TOAST).
func (d *dbStats) size(ctx context.Context) (int64, error) {
	var n int64
	err := d.conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
	return n, err
}

// rows counts the rows of the store's tables.
func (d *dbStats) rows(ctx context.Context) (Rows, error) {
	var r Rows
	err := d.conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM challenges), (SELECT count(*) FROM environments),
		(SELECT count(*) FROM builds)`).Scan(&r.Challenges, &r.Environments, &r.Builds)
	return r, err
}

// Rows are the row counts of the store's tables.
type Rows struct{ Challenges, Environments, Builds int64 }

// cpu is the CPU time of the server so far: the postmaster, its children
// (the backends, the background workers) and the children it has reaped.
// It is 0 when the server is not on this machine.
func (d *dbStats) cpu() time.Duration {
	if d.postmaster == 0 {
		return 0
	}
	pm, err := procStat(d.postmaster)
	if err != nil {
		return 0
	}
	total := pm.cpu + pm.children
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if st, err := procStat(pid); err == nil && st.ppid == d.postmaster {
			total += st.cpu
		}
	}
	return total
}

// stat is what /proc/PID/stat says of a process.
type stat struct {
	ppid          int
	cpu, children time.Duration // user+system of the process, of its reaped children
}

// clockTick is the unit of /proc/PID/stat times (USER_HZ: 100 on Linux).
const clockTick = 10 * time.Millisecond

func procStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 15 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	n := func(k int) time.Duration { v, _ := strconv.ParseInt(f[k], 10, 64); return time.Duration(v) * clockTick }
	ppid, _ := strconv.Atoi(f[1])
	return stat{ppid: ppid, cpu: n(11) + n(12), children: n(13) + n(14)}, nil
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
