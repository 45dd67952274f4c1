package observability_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exportedSeries maps every sample name a connector binary exposes on /metrics (numaflow_source_*,
// histograms as _bucket, _sum and _count) to the label names its samples carry.
type exportedSeries map[string]map[string]bool

var (
	exportedOnce sync.Once
	exportedSet  exportedSeries
	exportedRaw  []sample // the last scrape of every run, with the target labels a PodMonitor adds
	exportedErr  error
	binDir       string // binaries built for the scrape; removed by TestMain
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "observability-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// exported is what running connector binaries really expose, scraped once per test binary: names are
// never taken from a list. Three runs together bring every series of common/metrics into existence:
//
//   - memsource (the in-memory demo connector) driven by udsource-run (which plays numa) with 30%
//     nacks and MaxDeliveries 2: reads, acks, nacks, redeliveries, leases and dead letters with their
//     reason label;
//   - the same without a dead-letter target and DEAD_LETTER_FALLBACK=drop: drops with their reason;
//   - redis-streams-source pointed at a closed port: broker errors with their op and kind labels, and
//     readiness 0.
func exported(t *testing.T) exportedSeries {
	t.Helper()
	exportedOnce.Do(func() { exportedSet, exportedRaw, exportedErr = scrapeConnectors() })
	if exportedErr != nil {
		t.Fatal(exportedErr)
	}
	return exportedSet
}

// sample is one scraped sample.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scraped returns the samples of the last scrape of every run of exported, each labelled as the
// PodMonitor would label it (connector, pipeline, vertex, namespace, pod).
func scraped(t *testing.T) []sample {
	t.Helper()
	exported(t)
	return exportedRaw
}

func scrapeConnectors() (exportedSeries, []sample, error) {
	root := filepath.Join("..", "..")
	for _, b := range []struct{ dir, pkg, out string }{
		{filepath.Join(root, "common"), "./cmd/memsource", "memsource"},
		{root, "./cmd/udsource-run", "udsource-run"},
		{filepath.Join(root, "redis-streams-source"), ".", "redis-streams-source"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
		cmd.Dir = b.dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	runner := []string{"--limit", "2000", "--nack-ratio", "0.3", "--max-deliveries", "2", "--batch", "100", "--idle", "3", "--duration", "60s"}
	runs := []struct {
		name, bin string
		env       []string
		drive     []string          // udsource-run flags; nil: not driven
		want      map[string]string // wait until these series names (with a label) appear
	}{
		{"dead-letter", "memsource", []string{"MEM_MESSAGES=3000", "MEM_LEASE=1s"}, runner,
			map[string]string{"numaflow_source_dead_lettered_total": "reason"}},
		{"drop", "memsource", []string{"MEM_MESSAGES=3000", "MEM_DEAD_LETTER=false", "DEAD_LETTER_FALLBACK=drop"}, runner,
			map[string]string{"numaflow_source_dropped_total": "reason"}},
		{"unreachable", "redis-streams-source", []string{"REDIS_URL=redis://" + closedAddr(), "REDIS_STREAM=s", "REDIS_GROUP=g"}, nil,
			map[string]string{"numaflow_source_broker_errors_total": "kind"}},
	}
	all := exportedSeries{}
	var raw []sample
	for _, r := range runs {
		got, samples, err := scrapeRun(r.name, r.bin, r.env, r.drive, r.want)
		if err != nil {
			return nil, nil, err
		}
		for _, smp := range samples {
			// As the PodMonitor labels them; a scraped label of the same name (build_info's connector)
			// is renamed exported_<name>, as Prometheus does.
			target := map[string]string{"connector": r.bin, "pipeline": "p-" + r.name, "vertex": "in",
				"namespace": "default", "pod": r.name + "-0", "container": "udsource", "job": "default/numaflow-connectors", "instance": "10.0.0.7:9090"}
			ls := map[string]string{}
			for k, v := range smp.labels {
				if _, clash := target[k]; clash {
					k = "exported_" + k
				}
				ls[k] = v
			}
			for k, v := range target {
				ls[k] = v
			}
			raw = append(raw, sample{smp.name, ls, smp.value})
		}
		for name, ls := range got {
			if all[name] == nil {
				all[name] = map[string]bool{}
			}
			for l := range ls {
				all[name][l] = true
			}
		}
	}
	return all, raw, nil
}

// closedAddr is a loopback address nothing listens on.
func closedAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:1"
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrapeRun starts a connector, drives it with udsource-run (when drive is set), waits until the
// wanted series exist and returns what its /metrics exposes.
func scrapeRun(name, bin string, env, drive []string, want map[string]string) (exportedSeries, []sample, error) {
	dir, err := os.MkdirTemp(binDir, name+"-")
	if err != nil {
		return nil, nil, err
	}
	metricsAddr := closedAddr()
	sock, info := filepath.Join(dir, "source.sock"), filepath.Join(dir, "server-info")
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(binDir, bin))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SOURCE_SOCKET=" + sock, "SOURCE_SERVER_INFO_FILE=" + info,
		"METRICS_ADDR=" + metricsAddr, "LOG_LEVEL=warn", "NUMAFLOW_REPLICA=0"}, env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	if drive != nil {
		args := append([]string{"--socket", sock, "--server-info", info}, drive...)
		run := exec.Command(filepath.Join(binDir, "udsource-run"), args...)
		if out, err := run.CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("%s: udsource-run %v: %v\n%s\nconnector log:\n%s", name, args, err, out, logs.String())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, samples, err := scrape("http://" + metricsAddr + "/metrics")
		missing := ""
		if err == nil {
			for n, l := range want {
				if !got[n][l] {
					missing = n + " with label " + l
				}
			}
			if missing == "" {
				return got, samples, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%s: %s never exposed %s (last scrape error: %v)\nconnector log:\n%s", name, bin, missing, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrape reads one /metrics page: its numaflow_source_* sample names with their label names, and the
// samples.
func scrape(url string) (exportedSeries, []sample, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", url, err)
	}
	out := exportedSeries{}
	var samples []sample
	add := func(name string, ls map[string]string, v float64) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range ls {
			out[name][l] = true
		}
		samples = append(samples, sample{name, ls, v})
	}
	with := func(ls map[string]string, k, v string) map[string]string {
		c := maps.Clone(ls)
		c[k] = v
		return c
	}
	for name, f := range families {
		if !strings.HasPrefix(name, "numaflow_source_") {
			continue
		}
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					add(name+"_bucket", with(ls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)), float64(b.GetCumulativeCount()))
				}
				if !inf {
					add(name+"_bucket", with(ls, "le", "+Inf"), float64(h.GetSampleCount()))
				}
				add(name+"_sum", ls, h.GetSampleSum())
				add(name+"_count", ls, float64(h.GetSampleCount()))
			case m.GetCounter() != nil:
				add(name, ls, m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				add(name, ls, m.GetGauge().GetValue())
			default:
				add(name, ls, m.GetUntyped().GetValue())
			}
		}
	}
	return out, samples, nil
}

// TestExportedSeries shows what the scrape found (run with -v), and that it found the families the
// dashboard and the alerts are built on.
func TestExportedSeries(t *testing.T) {
	got := exported(t)
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var ls []string
		for l := range got[n] {
			ls = append(ls, l)
		}
		sort.Strings(ls)
		t.Logf("%s %v", n, ls)
	}
	if len(names) < 20 {
		t.Errorf("the connectors exposed only %d numaflow_source_* series", len(names))
	}
}
