package version

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestLinkedValuesWin(t *testing.T) {
	v, c := Version, Commit
	t.Cleanup(func() { Version, Commit = v, c })
	Version, Commit = "v9.9.9", "abc1234"
	got := String("demo-source")
	want := "demo-source v9.9.9 (commit abc1234, numaflow-go " + NumaflowGo() + ", " + runtime.Version() + ")"
	if got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestFallbacks(t *testing.T) {
	v, c := Version, Commit
	t.Cleanup(func() { Version, Commit = v, c })
	Version, Commit = "", ""
	gv, gc := Get()
	if gv == "" || gc == "" {
		t.Errorf("Get() = %q, %q; want non-empty fallbacks", gv, gc)
	}
}

func TestDepVersion(t *testing.T) {
	bi := &debug.BuildInfo{Deps: []*debug.Module{
		{Path: "example.com/a", Version: "v1.0.0"},
		{Path: numaflowGoPath, Version: "v0.12.0", Replace: &debug.Module{Path: "../numaflow-go"}},
	}}
	if got := depVersion(bi, "example.com/a"); got != "v1.0.0" {
		t.Errorf("got %q", got)
	}
	if got := depVersion(bi, numaflowGoPath); !strings.Contains(got, "replaced") {
		t.Errorf("a local replace is not flagged: %q", got)
	}
	if got := depVersion(bi, "example.com/none"); got != "unknown" {
		t.Errorf("got %q", got)
	}
}

// A built binary: the -ldflags -X values documented for the Makefile are printed, and numaflow-go's
// version comes from the binary's build info (a test binary's build info lists no dependencies).
func TestBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	const pkg = "github.com/numaflow-connectors/sources/common/version"
	tests := []struct {
		name, ldflags, want string
	}{
		{"linked", "-X " + pkg + ".Version=v1.2.3 -X " + pkg + ".Commit=deadbee", "x v1.2.3 (commit deadbee, numaflow-go v0.12.0, " + runtime.Version() + ")"},
		{"build info", "", "x devel (commit "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "x")
			cmd := exec.Command("go", "build", "-o", bin, "-ldflags", tc.ldflags, "./testdata/cmd")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			out, err := exec.Command(bin).Output()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(out), tc.want) || !strings.Contains(string(out), "numaflow-go v0.12.0") {
				t.Errorf("binary printed %q, want prefix %q", out, tc.want)
			}
		})
	}
}
